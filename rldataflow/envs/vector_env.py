"""A small synchronous vector env with SAME-STEP autoreset.

Autoreset mode (know it, it decides how bootstrapping works): when env ``i`` ends at a step
(``terminated or truncated``), :meth:`VectorEnv.step` resets it within the same call. The
returned ``obs[i]`` is already the first observation of the next episode and the last observation
of the finished episode is in ``final_obs[i]``. For envs that did not end, ``final_obs[i]`` equals
``obs[i]``, so ``final_obs`` is always "the next observation of the transition just taken" and
can be stored as ``next_obs`` or used to bootstrap a truncated episode with ``V(final_obs[i])``.

Gymnasium 1.x's own vector envs default to NEXT_STEP autoreset: the step after an episode ends
ignores the action and returns the reset observation, which wastes a step per episode and needs
masking downstream. That is why rollouts use this class instead.

True episode returns (the ``info["episode_true"]`` convention): an env whose training episodes
are not the real ones (Atari's episodic life ends an episode per lost life; clipped rewards are
not the game's score) puts ``info[TRUE_EPISODE_KEY] = {"r": real_return, "l": real_length}`` in
the info of the step that ends a real episode and ``info[TRUE_EPISODE_KEY] = None`` in the info of
a step that ends only a training episode. :class:`VectorEnv` then reports the real figures, and
nothing for the ``None`` ends; envs that never set the key are reported from the rewards seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np

from rldataflow.envs.registry import EnvSpec, make_env
from rldataflow.envs.spaces import ObsPreprocessor, obs_preprocessor

__all__ = ["TRUE_EPISODE_KEY", "VectorEnv", "make_vector_env"]

#: Info key of the true-episode convention (see the module docs).
TRUE_EPISODE_KEY = "episode_true"
_ABSENT = object()


class VectorEnv:
    """N Gymnasium envs stepped in one process, returning batched, preprocessed arrays.

    Args:
        envs: the envs (all with the same spaces).
        seed: env ``i`` is reset with ``seed + i`` on the first :meth:`reset` and its action and
            observation spaces are seeded with ``seed + i``; later resets continue each env's RNG.
        preprocess: return observations through :func:`obs_preprocessor` (one array per batch,
            ``observation_space`` is then the preprocessed ``Box``). Without it, observations are
            stacked raw (a list for Dict/Tuple spaces).
        episode_id_offset: first episode id; ids then count up across all envs, so giving each
            worker a distinct offset keeps ids unique and deterministic.

    Per-env episode returns and lengths are tracked; :meth:`pop_completed_episodes` hands out the
    ones finished since the last call (the true ones where an env reports them through
    ``info["episode_true"]``, see the module docs).

    Example::

        >>> venv = make_vector_env("CartPole-v1", num_envs=4, seed=0)
        >>> obs = venv.reset()
        >>> obs.shape
        (4, 4)
        >>> obs, rew, term, trunc, final_obs, infos = venv.step(np.zeros(4, dtype=np.int64))
        >>> rew.tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        envs: Sequence[gymnasium.Env],
        seed: int | None = None,
        preprocess: bool = True,
        episode_id_offset: int = 0,
    ) -> None:
        if not envs:
            raise ValueError("VectorEnv needs at least one env")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.seed = seed
        self.single_action_space = self.envs[0].action_space
        self.raw_observation_space = self.envs[0].observation_space
        self.preprocess = preprocess
        self._pre: ObsPreprocessor | None = (
            obs_preprocessor(self.raw_observation_space) if preprocess else None
        )
        self.single_observation_space = (
            self._pre.space if self._pre is not None else self.raw_observation_space
        )
        self._seeded = False
        self._next_episode_id = int(episode_id_offset)
        n = self.num_envs
        self.episode_ids = np.full(n, -1, dtype=np.int64)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.episode_returns = np.zeros(n, dtype=np.float64)
        self._completed_returns: list[float] = []
        self._completed_lengths: list[int] = []
        self._needs_reset = True

    # -- helpers ----------------------------------------------------------------------------
    def _batch(self, raw: list) -> Any:
        if self._pre is not None:
            return self._pre(raw)
        try:
            return np.stack([np.asarray(o) for o in raw])
        except (ValueError, TypeError):
            return list(raw)

    def _new_episode(self, i: int) -> None:
        self.episode_ids[i] = self._next_episode_id
        self._next_episode_id += 1
        self.episode_steps[i] = 0
        self.episode_returns[i] = 0.0

    # -- API -----------------------------------------------------------------------------------
    def reset(self) -> Any:
        """Reset all envs and return the batched first observations.

        The very first reset seeds env ``i`` with ``seed + i``; later resets don't reseed.
        """
        raw = []
        for i, env in enumerate(self.envs):
            if not self._seeded and self.seed is not None:
                env.action_space.seed(self.seed + i)
                env.observation_space.seed(self.seed + i)
                obs, _ = env.reset(seed=self.seed + i)
            else:
                obs, _ = env.reset()
            raw.append(obs)
            self._new_episode(i)
        self._seeded = True
        self._needs_reset = False
        return self._batch(raw)

    def step(
        self, actions: Sequence[Any]
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Any, list[dict]]:
        """Step every env with ``actions[i]``; returns
        ``(obs, rewards, terminateds, truncateds, final_obs, infos)``.

        Same-step autoreset: an env that ended is reset inside this call; ``obs[i]`` is then the
        new episode's first observation and ``final_obs[i]`` the finished episode's last one.
        Where no env ended, ``final_obs`` may be the very same array as ``obs``.
        ``rewards`` is ``float32``; ``infos[i]`` is env ``i``'s step info (reset infos dropped).
        """
        if self._needs_reset:
            raise RuntimeError("VectorEnv.step() called before reset()")
        n = self.num_envs
        if len(actions) != n:
            raise ValueError(f"expected {n} actions (one per env), got {len(actions)}")
        raw_next: list = [None] * n
        rewards = [0.0] * n
        terms = [False] * n
        truncs = [False] * n
        infos: list[dict] = [None] * n  # type: ignore[list-item]
        ended: list[tuple[int, Any]] = []
        for i, env in enumerate(self.envs):
            obs, rew, term, trunc, info = env.step(actions[i])
            rewards[i] = rew
            terms[i] = term
            truncs[i] = trunc
            infos[i] = info
            if term or trunc:
                ended.append((i, obs))
                obs, _ = env.reset()
            raw_next[i] = obs
        rew_arr = np.asarray(rewards, dtype=np.float32)
        term_arr = np.asarray(terms, dtype=bool)
        trunc_arr = np.asarray(truncs, dtype=bool)
        obs_batch = self._batch(raw_next)
        # Episode bookkeeping, vectorized; only finished envs take a Python branch.
        self.episode_returns += rew_arr
        self.episode_steps += 1
        if not ended:
            return obs_batch, rew_arr, term_arr, trunc_arr, obs_batch, infos
        idx = [i for i, _ in ended]
        final_rows = self._batch([o for _, o in ended])
        if isinstance(obs_batch, np.ndarray):
            final_obs = obs_batch.copy()
            final_obs[idx] = final_rows
        else:
            final_obs = list(obs_batch)
            for j, i in enumerate(idx):
                final_obs[i] = final_rows[j]
        for i in idx:
            true = infos[i].get(TRUE_EPISODE_KEY, _ABSENT) if infos[i] else _ABSENT
            if true is _ABSENT:
                self._completed_returns.append(float(self.episode_returns[i]))
                self._completed_lengths.append(int(self.episode_steps[i]))
            elif true is not None:  # None: a training episode ended, not a real one
                self._completed_returns.append(float(true["r"]))
                self._completed_lengths.append(int(true["l"]))
            self._new_episode(i)
        return obs_batch, rew_arr, term_arr, trunc_arr, final_obs, infos

    def pop_completed_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of episodes finished since the last call (then forgotten)."""
        out = (self._completed_returns, self._completed_lengths)
        self._completed_returns, self._completed_lengths = [], []
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __repr__(self) -> str:
        return (
            f"VectorEnv(num_envs={self.num_envs}, obs={self.single_observation_space}, "
            f"act={self.single_action_space})"
        )


def make_vector_env(
    spec: EnvSpec,
    env_config: dict | None = None,
    num_envs: int = 1,
    seed: int | None = None,
    preprocess: bool = True,
    episode_id_offset: int = 0,
) -> VectorEnv:
    """Create ``num_envs`` copies of ``spec`` (see :func:`make_env`) as a :class:`VectorEnv`.

    Example::

        >>> venv = make_vector_env("CartPole-v1", num_envs=2, seed=1)
        >>> venv.reset().shape
        (2, 4)
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    envs = [make_env(spec, env_config) for _ in range(num_envs)]
    return VectorEnv(envs, seed=seed, preprocess=preprocess, episode_id_offset=episode_id_offset)
