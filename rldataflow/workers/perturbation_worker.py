"""``PerturbationWorker``: evaluates antithetic perturbations of a flat policy (ES, ARS).

Each :meth:`~PerturbationWorker.sample` call draws ``pairs_per_sample`` noise indices from the
worker's own RNG, runs one episode with ``theta + sigma * eps`` and one with
``theta - sigma * eps`` for each (antithetic / mirrored sampling: Salimans et al. 2017,
arXiv:1703.03864, section 2.1; Mania et al. 2018, arXiv:1803.07055, Algorithm 2, line 5), and
returns only the indices, the two returns and the two lengths of each pair, plus the
statistics of the observations it saw (for ARS V2's normalizer). ``eps`` comes from the shared
:class:`~rldataflow.data.noise_table.NoiseTable`, so nothing of size ``dim`` travels.

It follows the :class:`~rldataflow.workers.base.Worker` calls a plan and the trainer make
(weights, state, ``evaluate`` with deterministic actions), so a
:class:`~rldataflow.workers.WorkerSet` holds it like a rollout worker, restarts included.

Example::

    noise = NoiseTable.create(1_000_000, seed=0)
    worker = PerturbationWorker("CartPole-v1", noise=noise, noise_stdev=0.05, seed=0)
    result = worker.sample()          # PerturbationResult(noise_indices=[...], returns=[[r+, r-]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rldataflow.data.noise_table import NoiseTable
from rldataflow.data.running_stats import RunningMeanStd
from rldataflow.envs.registry import EnvSpec, make_env
from rldataflow.envs.spaces import action_to_env_fn, obs_preprocessor
from rldataflow.policies.flat_policy import FlatPolicy
from rldataflow.workers.base import DEFAULT_POLICY_ID, WorkerBase

__all__ = ["PerturbationResult", "PerturbationWorker"]


@dataclass
class PerturbationResult:
    """What a worker returns for ``k`` antithetic pairs evaluated with ``weights_version``."""

    noise_indices: np.ndarray  # (k,) int64
    returns: np.ndarray  # (k, 2): return of theta + sigma eps, of theta - sigma eps
    lengths: np.ndarray  # (k, 2) int64
    weights_version: int
    obs_stats: dict[str, Any] = field(default_factory=dict)  # RunningMeanStd state, or {}
    rollouts: int = 1  # episodes per perturbation: returns are their mean, lengths their sum

    @property
    def count(self) -> int:
        """Env steps taken."""
        return int(self.lengths.sum())

    @property
    def num_episodes(self) -> int:
        return int(self.lengths.size) * self.rollouts

    @staticmethod
    def concat(results: list[PerturbationResult]) -> PerturbationResult:
        """One result holding the pairs of all of ``results`` (their versions must agree)."""
        versions = {r.weights_version for r in results}
        if len(versions) != 1:
            raise ValueError(f"cannot concatenate results of weights versions {sorted(versions)}")
        rollouts = {r.rollouts for r in results}
        if len(rollouts) != 1:
            raise ValueError(f"cannot concatenate results of {sorted(rollouts)} rollouts each")
        stats = [RunningMeanStd.from_state(r.obs_stats) for r in results if r.obs_stats]
        merged = stats[0] if stats else None
        for s in stats[1:]:
            merged.merge(s)
        return PerturbationResult(
            np.concatenate([r.noise_indices for r in results]),
            np.concatenate([r.returns for r in results]),
            np.concatenate([r.lengths for r in results]),
            versions.pop(), merged.state_dict() if merged is not None else {}, rollouts.pop())


class PerturbationWorker(WorkerBase):
    """One env and a :class:`FlatPolicy`; :meth:`sample` evaluates perturbation pairs.

    Args:
        env, env_config: the env (see ``rldataflow.envs.make_env``).
        noise: the shared noise table (the same object, or a pickled handle of it).
        policy_options: :class:`FlatPolicy` arguments (``hiddens``, ``activation``,
            ``obs_normalization``, ``obs_clip``); its seed is the run's ``seed``, so every
            worker starts from the same ``theta``.
        noise_stdev: ``sigma``, the scale of the perturbations.
        pairs_per_sample: antithetic pairs per :meth:`sample` call.
        rollouts_per_perturbation: episodes per perturbation (its return is their mean).
        common_env_seeds: every perturbation of one weights version, on every worker, starts
            its episodes from the same env seeds (common random numbers: returns then differ
            by the perturbation, not by the start state, which dominates e.g. Pendulum's).
            Otherwise only the two members of a pair share their seeds.
        max_episode_steps: cap on episode length (None: the env's own time limit).
        seed, worker_index: as for rollout workers (the noise indices a worker draws come
            from its own seed).
    """

    def __init__(self, env: EnvSpec, env_config: dict | None = None, *,
                 noise: NoiseTable, policy_options: dict[str, Any] | None = None,
                 noise_stdev: float = 0.02, pairs_per_sample: int = 1,
                 rollouts_per_perturbation: int = 1, common_env_seeds: bool = False,
                 max_episode_steps: int | None = None, seed: int = 0,
                 worker_index: int = 0, **_rollout_options: Any) -> None:
        super().__init__(env, env_config, seed=seed, worker_index=worker_index)
        if pairs_per_sample < 1:
            raise ValueError(f"pairs_per_sample must be >= 1, got {pairs_per_sample}")
        self.noise = noise
        self.noise_stdev = float(noise_stdev)
        self.pairs_per_sample = int(pairs_per_sample)
        if rollouts_per_perturbation < 1:
            raise ValueError(f"rollouts_per_perturbation must be >= 1, got "
                             f"{rollouts_per_perturbation}")
        self.rollouts = int(rollouts_per_perturbation)
        self.common_env_seeds = bool(common_env_seeds)
        self.run_seed = int(seed)
        self.max_episode_steps = max_episode_steps
        self.env = make_env(env, self.env_config)
        self.preprocess = obs_preprocessor(self.env.observation_space)
        self.observation_space = self.preprocess.space
        self.action_space = self.env.action_space
        self._to_env = action_to_env_fn(self.action_space)
        self.policy = FlatPolicy(self.observation_space, self.action_space, seed=int(seed),
                                 **dict(policy_options or {}))
        self.policies = {DEFAULT_POLICY_ID: self.policy}
        self.rng = np.random.default_rng(self.seed)
        self._episodes = 0
        self._new_obs = RunningMeanStd(self.policy.obs_dim)

    # -- episodes -----------------------------------------------------------------------------
    def rollout(self, theta: np.ndarray, env: Any = None, seed: int | None = None,
                record_obs: bool = True) -> tuple[float, int]:
        """One episode with ``theta`` (deterministic actions): ``(return, length)``."""
        env = self.env if env is None else env
        if seed is None:
            seed = self.seed + self._episodes
            self._episodes += 1
        policy, pre, to_env = self.policy, self.preprocess, self._to_env
        layers = policy.layers(theta)
        raw, _ = env.reset(seed=seed)
        seen: list[np.ndarray] = []
        total, steps = 0.0, 0
        while True:
            obs = pre([raw])
            if record_obs:
                seen.append(obs[0])
            raw, reward, term, trunc, _ = env.step(to_env(policy.act(obs, layers=layers))[0])
            total += float(reward)
            steps += 1
            if term or trunc or (self.max_episode_steps is not None
                                 and steps >= self.max_episode_steps):
                break
        if record_obs and policy.obs_normalization:
            self._new_obs.push(np.asarray(seen))
        self.num_steps_sampled += steps
        return total, steps

    def sample(self) -> PerturbationResult:
        """Evaluate ``pairs_per_sample`` antithetic pairs around the current ``theta``."""
        theta, dim, sigma = self.policy.theta, self.policy.num_params, self.noise_stdev
        k = self.pairs_per_sample
        indices = np.empty(k, dtype=np.int64)
        returns = np.empty((k, 2), dtype=np.float64)
        lengths = np.empty((k, 2), dtype=np.int64)
        for j in range(k):
            indices[j] = self.noise.sample_index(self.rng, dim)
            eps = self.noise.get(int(indices[j]), dim)
            # both members of a pair start from the same env seeds (common random numbers)
            if self.common_env_seeds:
                first = self.run_seed * 7_919 + self.policy.weights_version * self.rollouts
            else:
                first = self.seed + self._episodes
                self._episodes += self.rollouts
            for col, sign in ((0, 1.0), (1, -1.0)):
                runs = [self.rollout(theta + sign * sigma * eps, seed=first + m)
                        for m in range(self.rollouts)]
                returns[j, col] = np.mean([r for r, _ in runs])
                lengths[j, col] = sum(n for _, n in runs)
        stats = self._new_obs.state_dict() if self._new_obs.count else {}
        self._new_obs = RunningMeanStd(self.policy.obs_dim)
        return PerturbationResult(indices, returns, lengths, self.policy.weights_version, stats,
                                  self.rollouts)

    def evaluate(self, num_episodes: int, max_episode_steps: int | None = None) -> list[float]:
        """Returns of ``num_episodes`` episodes of the unperturbed ``theta`` on a fresh env
        (seeded from the worker seed and the number of earlier calls, like rollout workers)."""
        return [r for r, _, _ in self.evaluate_episodes(num_episodes,
                                                         max_episode_steps=max_episode_steps)]

    def evaluate_episodes(self, num_episodes: int, explore: bool = False,
                          max_episode_steps: int | None = None, render: bool = False
                          ) -> list[tuple[float, int, None]]:
        """``(return, length, None)`` of ``num_episodes`` episodes of ``theta``, seeded like
        :meth:`evaluate`. The policy is deterministic, so ``explore`` changes nothing; frames
        are not rendered (``render`` must be False)."""
        if render:
            raise ValueError("rendering video is supported for rollout workers only, not "
                             "PerturbationWorker (ES/ARS)")
        env = make_env(self.env_spec, self.env_config)
        seed = self.next_eval_seed()
        cap, self.max_episode_steps = self.max_episode_steps, (
            max_episode_steps or self.max_episode_steps)
        try:
            return [(*self.rollout(self.policy.theta, env=env, seed=seed + i, record_obs=False),
                     None) for i in range(num_episodes)]
        finally:
            self.max_episode_steps = cap
            env.close()

    # -- the Worker calls ---------------------------------------------------------------------
    def get_policy(self, policy_id: str | None = None) -> FlatPolicy:
        if policy_id not in (None, DEFAULT_POLICY_ID):
            raise KeyError(f"unknown policy id {policy_id!r}; this worker has one policy "
                           f"({DEFAULT_POLICY_ID!r})")
        return self.policy

    @property
    def weights_version(self) -> int:
        return self.policy.weights_version

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.policy.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray], version: int | None = None) -> None:
        self.policy.set_weights(weights, version)

    def get_state(self) -> dict[str, Any]:
        return {"policy": self.policy.get_state(), "num_steps_sampled": self.num_steps_sampled}

    def set_state(self, state: dict[str, Any]) -> None:
        self.policy.set_state(state["policy"])
        self.num_steps_sampled = int(state.get("num_steps_sampled", 0))

    def learn_on_batch(self, batch: Any, policy_id: str | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        raise TypeError("a PerturbationWorker does not learn from batches: ES and ARS update "
                        "theta on the driver from PerturbationResults")

    def stop(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return (f"PerturbationWorker(index={self.worker_index}, env={self.env_spec!r}, "
                f"{self.policy!r})")
