"""``RolloutWorker``: a vector env plus a policy, producing columnar ``SampleBatch`` es.

It is a plain class; runtimes turn it into an actor (inline object, local process or Ray actor).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import torch

from rldataflow.data.dataset import DatasetOutput
from rldataflow.data.sample_batch import SampleBatch
from rldataflow.envs.registry import EnvSpec, make_env
from rldataflow.envs.spaces import action_to_env_fn, obs_preprocessor
from rldataflow.envs.vector_env import TRUE_EPISODE_KEY, make_vector_env
from rldataflow.policies.normalization import RewardScaler
from rldataflow.policies.policy import TorchPolicy
from rldataflow.policies.recurrent import STATE_OUT_C, STATE_OUT_H
from rldataflow.workers.base import BATCH_MODES, DEFAULT_POLICY_ID, WorkerBase, worker_seed
from rldataflow.workers.grad_group import GroupSpec, free_port, node_ip

__all__ = ["BATCH_MODES", "PolicyFactory", "RolloutWorker", "worker_seed"]

_NO_TRUE = object()

PolicyFactory = Callable[[gymnasium.spaces.Box, gymnasium.Space], TorchPolicy]

class RolloutWorker(WorkerBase):
    """Steps ``num_envs`` envs with one policy and returns batches of experience.

    Args:
        env: registered name, Gymnasium id or creator callable (see ``rldataflow.envs.make_env``).
        env_config: passed to the env creator (or as ``gymnasium.make`` kwargs).
        num_envs: envs stepped together; the policy is called once per vector step for all.
        policy_factory: ``policy_factory(obs_space, action_space) -> TorchPolicy``; it gets the
            *preprocessed* observation space (a ``Box``). Default: ``TorchPolicy`` with default
            config seeded with the worker seed.
        rollout_fragment_length: steps per env per :meth:`sample` call.
        batch_mode: ``"truncate_episodes"``: exactly ``num_envs * rollout_fragment_length`` rows,
            episodes cut at the fragment end (bootstrapped with ``V(next obs)``).
            ``"complete_episodes"``: steps until every env has finished at least one episode and
            at least ``rollout_fragment_length`` steps were taken per env, and returns only
            complete episodes; unfinished episodes are carried over to the next call, so no
            step is wasted (envs must end episodes, e.g. through a time limit).
        seed: the worker seeds Python, numpy and torch, its policy and its envs from
            ``seed + worker_index * 10_000`` (:func:`worker_seed`); env ``i`` is reset with that
            plus ``i``. Two workers with equal seed and index produce identical batches.
        worker_index: 0 for the driver-side (local) worker; remote workers (``> 0``) set torch to
            one thread, as several of them share the machine's cores.
        include_next_obs: also store ``next_obs`` (for Q-learning). On a step that ended an
            episode it is the final observation, not the reset one.
        postprocess: apply ``policy.postprocess_trajectory`` (GAE by default) before returning.

    Batches are env-major: the steps of env 0 come first, in time order, then env 1, etc.
    Columns: ``obs, actions, rewards, terminateds, truncateds, eps_id, env_id, t``, the policy's
    extras (``action_logp, vf_preds, action_dist_inputs``), ``bootstrap_value`` (policies with
    a value function), ``next_obs`` if asked, and the postprocessing outputs. ``actions`` holds
    the policy's raw sample; Box actions are clipped to the env's bounds only when stepping.
    ``batch.stats`` has ``episode_returns`` / ``episode_lengths`` of the episodes finished
    during the call; ``batch.info["weights_version"]`` the policy's version.

    Example::

        >>> worker = RolloutWorker("CartPole-v1", num_envs=4, rollout_fragment_length=50, seed=0)
        >>> batch = worker.sample()
        >>> batch.count, batch["obs"].shape
        (200, (200, 4))
        >>> sorted(batch.stats)
        ['episode_lengths', 'episode_returns']
    """

    def __init__(
        self,
        env: EnvSpec,
        env_config: dict | None = None,
        num_envs: int = 1,
        policy_factory: PolicyFactory | None = None,
        rollout_fragment_length: int = 200,
        batch_mode: str = "truncate_episodes",
        seed: int = 0,
        worker_index: int = 0,
        include_next_obs: bool = False,
        postprocess: bool = True,
    ) -> None:
        super().__init__(env, env_config, num_envs, rollout_fragment_length, batch_mode, seed,
                         worker_index, include_next_obs, postprocess)
        self.vector_env = make_vector_env(
            env,
            self.env_config,
            num_envs=self.num_envs,
            seed=self.seed,
            # Distinct, deterministic episode ids across workers.
            episode_id_offset=self.worker_index << 40,
        )
        self.observation_space: gymnasium.spaces.Box = self.vector_env.single_observation_space
        self.action_space: gymnasium.Space = self.vector_env.single_action_space
        if policy_factory is None:
            policy = TorchPolicy(self.observation_space, self.action_space, seed=self.seed)
        else:
            policy = policy_factory(self.observation_space, self.action_space)
        self.policies = {DEFAULT_POLICY_ID: policy}
        self._to_env_actions = action_to_env_fn(self.action_space)
        self._obs: np.ndarray | None = None
        self._carry: list[dict[str, np.ndarray]] | None = None
        self._scaler: RewardScaler | None = None  # made on first use when reward_scaling is on
        # LSTM state (h, c) per env of a recurrent policy, zeroed at episode starts
        self._state: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def policy(self) -> TorchPolicy:
        """The worker's one policy."""
        return self.policies[DEFAULT_POLICY_ID]

    @policy.setter
    def policy(self, policy: TorchPolicy) -> None:
        self.policies[DEFAULT_POLICY_ID] = policy

    # -- sampling ---------------------------------------------------------------------------
    def _run(
        self, num_steps: int, seen_done: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], list[tuple[int, int, np.ndarray, Any]], int]:
        """Step the vector env up to ``num_steps`` times, storing time-major ``(T, N)`` columns.

        With ``seen_done`` (updated in place), stop as soon as every env has ended an episode.
        Returns the columns (trimmed to the steps taken), the final observations of truncated
        steps as ``(t, env, obs, state)`` (``state``: the LSTM state after that step, ``None``
        without one) and the number of steps taken.

        A recurrent policy gets each env's LSTM state and its next state is kept; the state of
        an env whose episode ended (terminated or truncated) is zeroed, since the vector env
        has already reset it.
        """
        venv, policy, n = self.vector_env, self.policy, self.num_envs
        recurrent = getattr(policy, "is_recurrent", False)
        if self._obs is None:
            self._obs = venv.reset()
            self._state = None
        if recurrent and self._state is None:
            self._state = policy.initial_state(n)
        obs = self._obs
        cols: dict[str, np.ndarray] = {}
        truncated_final: list[tuple[int, int, np.ndarray, Any]] = []
        steps = 0
        for t in range(num_steps):
            if recurrent:
                actions, extras = policy.compute_actions(obs, state=self._state)
                state_out = (extras.pop(STATE_OUT_H), extras.pop(STATE_OUT_C))
            else:
                actions, extras = policy.compute_actions(obs)
            eps_ids = venv.episode_ids.copy()
            ts = venv.episode_steps.copy()
            next_obs, rewards, terms, truncs, final_obs, _ = venv.step(
                self._to_env_actions(actions)
            )
            if policy.config.get("reward_scaling"):
                # Episode returns for reporting were taken inside venv.step, unscaled.
                rewards = self._reward_scaler(policy)(rewards, terms | truncs)
            step_cols = {
                SampleBatch.OBS: obs,
                SampleBatch.ACTIONS: actions,
                SampleBatch.REWARDS: rewards,
                SampleBatch.TERMINATEDS: terms,
                SampleBatch.TRUNCATEDS: truncs,
                SampleBatch.EPS_ID: eps_ids,
                SampleBatch.T: ts,
                **extras,
            }
            if self.include_next_obs:
                step_cols[SampleBatch.NEXT_OBS] = final_obs
            if t == 0:
                cols = {
                    k: np.empty((num_steps, *np.shape(v)), dtype=np.asarray(v).dtype)
                    for k, v in step_cols.items()
                }
            for k, v in step_cols.items():
                cols[k][t] = v
            ended = terms | truncs
            if ended.any():
                for i in np.flatnonzero(truncs & ~terms).tolist():
                    truncated_final.append((t, i, np.array(final_obs[i]),
                                            (state_out[0][i], state_out[1][i])
                                            if recurrent else None))
            if recurrent:
                if ended.any():  # a new episode starts from the zero state
                    state_out = (np.where(ended[:, None], 0.0, state_out[0]).astype(np.float32),
                                 np.where(ended[:, None], 0.0, state_out[1]).astype(np.float32))
                self._state = state_out
            obs = self._obs = next_obs  # kept current even if a later step raises
            steps = t + 1
            if seen_done is not None:
                seen_done |= ended
                if seen_done.all():
                    break
        self._obs = obs
        self.num_steps_sampled += steps * n
        if steps < num_steps:
            cols = {k: v[:steps] for k, v in cols.items()}
        return cols, truncated_final, steps

    def _reward_scaler(self, policy: TorchPolicy) -> RewardScaler:
        if self._scaler is None:
            self._scaler = RewardScaler(self.num_envs, float(policy.config["gamma"]))
        return self._scaler

    def _bootstrap(
        self,
        steps: int,
        truncated_final: list[tuple[int, int, np.ndarray, Any]],
        fragment_end: bool,
    ) -> np.ndarray:
        """``(T, N)`` bootstrap values: ``V(final_obs)`` at truncated steps and, if
        ``fragment_end``, ``V(next obs)`` at the last step; one batched value() call (a
        recurrent policy's from the LSTM state after the step)."""
        boot = np.zeros((steps, self.num_envs), dtype=np.float32)
        parts = [o[None] for _, _, o, _ in truncated_final]
        hs = [st[0][None] for _, _, _, st in truncated_final if st is not None]
        cs = [st[1][None] for _, _, _, st in truncated_final if st is not None]
        if fragment_end:
            parts.append(np.asarray(self._obs))
            if self._state is not None:
                hs.append(self._state[0])
                cs.append(self._state[1])
        if not parts:
            return boot
        obs = np.concatenate(parts, axis=0)
        if getattr(self.policy, "is_recurrent", False):
            values = self.policy.value(obs, state=(np.concatenate(hs), np.concatenate(cs)))
        else:
            values = self.policy.value(obs)
        if fragment_end:
            boot[steps - 1] = values[len(truncated_final) :]
        for j, (t, i, _, _) in enumerate(truncated_final):
            boot[t, i] = values[j]
        return boot

    @staticmethod
    def _env_major(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # (T, N, ...) -> (N * T, ...): each env's steps contiguous, in time order.
        return {
            k: np.ascontiguousarray(v.swapaxes(0, 1)).reshape(-1, *v.shape[2:])
            for k, v in cols.items()
        }

    def _sample_truncated(self) -> dict[str, np.ndarray]:
        cols, truncated_final, steps = self._run(self.rollout_fragment_length, None)
        if SampleBatch.VF_PREDS in cols:
            cols[SampleBatch.BOOTSTRAP_VALUE] = self._bootstrap(steps, truncated_final, True)
        out = self._env_major(cols)
        out[SampleBatch.ENV_ID] = np.repeat(np.arange(self.num_envs, dtype=np.int64), steps)
        return out

    def _sample_complete(self) -> dict[str, np.ndarray]:
        n = self.num_envs
        seen = np.zeros(n, dtype=bool)
        chunks = []
        boots = []
        while True:
            # The first chunk always runs the full fragment length; later ones stop as soon as
            # every env has finished an episode.
            cols, truncated_final, steps = self._run(
                self.rollout_fragment_length, seen if chunks else None
            )
            if not chunks:
                seen |= (cols[SampleBatch.TERMINATEDS] | cols[SampleBatch.TRUNCATEDS]).any(0)
            chunks.append(cols)
            if SampleBatch.VF_PREDS in cols:
                boots.append(self._bootstrap(steps, truncated_final, False))
            if seen.all():
                break
        cols = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}
        if boots:
            cols[SampleBatch.BOOTSTRAP_VALUE] = np.concatenate(boots, axis=0)
        done = cols[SampleBatch.TERMINATEDS] | cols[SampleBatch.TRUNCATEDS]
        carry = self._carry or [{k: v[:0, 0] for k, v in cols.items()} for _ in range(n)]
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in cols}
        env_ids = []
        new_carry = []
        for i in range(n):
            last = int(np.flatnonzero(done[:, i])[-1])
            for k, v in cols.items():
                pieces[k].append(np.concatenate([carry[i][k], v[: last + 1, i]], axis=0))
            new_carry.append({k: v[last + 1 :, i].copy() for k, v in cols.items()})
            env_ids.append(np.full(len(pieces[SampleBatch.OBS][-1]), i, dtype=np.int64))
        self._carry = new_carry
        out = {k: np.concatenate(v, axis=0) for k, v in pieces.items()}
        out[SampleBatch.ENV_ID] = np.concatenate(env_ids)
        return out

    def sample(self) -> SampleBatch:
        """Collect one batch (see the class docs for modes, columns, stats and info)."""
        if self.batch_mode == "truncate_episodes":
            cols = self._sample_truncated()
        else:
            cols = self._sample_complete()
        returns, lengths = self.vector_env.pop_completed_episodes()
        batch = SampleBatch(
            cols,
            stats={"episode_returns": returns, "episode_lengths": lengths},
            info={"weights_version": self.policy.weights_version},
        )
        if self.postprocess:
            batch = self.policy.postprocess_trajectory(batch)
        return batch

    _grad_writer: Any = None
    _grad_writer_output: Any = None

    def sample_and_compute_gradients(self, output: DatasetOutput | None = None
                                     ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Sample a batch and compute the policy's gradients on it (A3C-style); with
        ``output``, also write the batch to that dataset.

        Returns ``(grads, info)`` with ``info`` = ``{"count": rows, "stats": batch.stats,
        "learner_stats": loss stats, "weights_version": version}``.
        """
        batch = self.sample()
        if output is not None:  # the batch never leaves this worker: write it here
            if self._grad_writer is None or self._grad_writer_output != output:
                self._grad_writer = output.writer(
                    tag=f"w{self.worker_index}-{os.getpid()}-{os.urandom(3).hex()}")
                self._grad_writer_output = output
            self._grad_writer.write(batch)
            self._grad_writer.flush()
        grads, learner_stats = self.policy.compute_gradients(batch)
        return grads, {
            "count": batch.count,
            "stats": batch.stats,
            "learner_stats": learner_stats,
            "weights_version": self.policy.weights_version,
        }

    # -- decentralized training in a gradient group (DD-PPO) -------------------------------------
    def group_address(self) -> tuple[str, int]:
        """``(this node's IP, a free port on it)``: where a group this worker hosts (as rank 0)
        can rendezvous, seen from other nodes."""
        ip = node_ip()
        return ip, free_port(ip)

    def join_group(self, spec: GroupSpec, rank: int) -> int:
        """Leave any group, join the one ``spec`` names as ``rank`` (blocks until every member
        joined), then take rank 0's weights, so members start equal. Returns the world size."""
        self.leave_group()
        torch.set_num_threads(1)  # a group member shares the cores with its peers
        self._group = spec.join(rank)
        self._group.broadcast([p.data for p in self.policy.model.parameters()], src=0)
        return self._group.world_size

    def leave_group(self) -> None:
        group = getattr(self, "_group", None)
        if group is not None:
            group.close()
        self._group = None

    def sample_and_learn(self, num_epochs: int = 1, minibatch_size: int | None = None,
                         prepare: Callable[[SampleBatch], SampleBatch] | None = None
                         ) -> dict[str, Any]:
        """Sample a batch, ``prepare`` it (e.g. standardize advantages) and run minibatch SGD
        on it with every minibatch's gradients averaged over the worker's group
        (:meth:`join_group`), so every member takes the same step. All members must be
        called alike (same epochs, minibatches and batch size).

        Returns ``{"count", "stats", "learner_stats", "weights_version", "timers"}``; the
        timers are seconds spent sampling, learning and, within learning, in all-reduces
        (waiting for the peers included).
        """
        group = getattr(self, "_group", None)
        if group is None:
            raise RuntimeError(f"worker {self.worker_index} is in no gradient group; call "
                               "join_group first")
        start = time.perf_counter()
        batch = self.sample()
        if prepare is not None:
            batch = prepare(batch)
        sampled = time.perf_counter()
        waited = group.allreduce_s
        learner_stats = self.policy.learn_on_batch(batch, num_epochs=num_epochs,
                                                   minibatch_size=minibatch_size,
                                                   grad_reducer=group.allreduce_mean)
        return {"count": batch.count, "stats": batch.stats, "learner_stats": learner_stats,
                "weights_version": self.policy.weights_version,
                "timers": {"sample": sampled - start, "learn": time.perf_counter() - sampled,
                           "allreduce": group.allreduce_s - waited}}

    # -- policy passthrough -------------------------------------------------------------------
    #: The id of the single policy (multi-agent workers hold several, see ``policy_ids``).
    DEFAULT_POLICY_ID = DEFAULT_POLICY_ID

    def get_policy(self, policy_id: str | None = None) -> TorchPolicy:
        """The worker's policy (``policy_id`` is accepted for multi-agent symmetry)."""
        if policy_id not in (None, self.DEFAULT_POLICY_ID):
            raise KeyError(f"unknown policy id {policy_id!r}; this worker has one policy "
                           f"({self.DEFAULT_POLICY_ID!r})")
        return self.policy

    @property
    def weights_version(self) -> int:
        """Version of the weights :meth:`get_weights` returns (what ``sync_weights`` sends)."""
        return self.policy.weights_version

    def learn_on_batch(self, batch: SampleBatch, policy_id: str | None = None,
                       **kwargs: Any) -> dict[str, float]:
        """``policy.learn_on_batch(batch, **kwargs)``."""
        return self.get_policy(policy_id).learn_on_batch(batch, **kwargs)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, float]]:
        return self.policy.compute_gradients(batch)

    def apply_gradients(self, grads: list[np.ndarray]) -> None:
        self.policy.apply_gradients(grads)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.policy.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray], version: int | None = None) -> None:
        self.policy.set_weights(weights, version=version)

    def get_state(self) -> dict[str, Any]:
        """Policy state (weights, optimizer, counters) and the worker's step counter."""
        return {"policy": self.policy.get_state(), "num_steps_sampled": self.num_steps_sampled}

    def set_state(self, state: dict[str, Any]) -> None:
        self.policy.set_state(state["policy"])
        self.num_steps_sampled = int(state.get("num_steps_sampled", 0))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, num_episodes: int, max_episode_steps: int | None = None) -> list[float]:
        """Returns of ``num_episodes`` episodes with deterministic actions on a fresh env.

        The env is seeded from the worker seed and the number of previous evaluate() calls, so
        results are reproducible and successive calls see different episodes.
        ``max_episode_steps`` caps episodes of envs without a time limit. Envs following the
        true-episode convention (:mod:`rldataflow.envs.vector_env`; Atari) are played to the real
        episode end and their real return is reported.
        """
        return [ret for ret, _, _ in self.evaluate_episodes(num_episodes, False,
                                                             max_episode_steps)]

    def evaluate_episodes(self, num_episodes: int, explore: bool = False,
                          max_episode_steps: int | None = None, render: bool = False
                          ) -> list[tuple[float, int, list[np.ndarray] | None]]:
        """``(return, length, frames)`` of ``num_episodes`` episodes on a fresh env, seeded like
        :meth:`evaluate`; ``explore`` samples actions instead of taking the mode. ``render``:
        make the env with ``render_mode="rgb_array"`` and keep its frames (else None)."""
        return [(ret, n, frames) for ret, n, _, frames
                in self._episodes(num_episodes, explore, max_episode_steps, False, render)]

    def record(self, num_episodes: int, output: DatasetOutput, explore: bool = True,
               max_episode_steps: int | None = None) -> dict[str, Any]:
        """Run ``num_episodes`` whole episodes with the current policy and write their steps
        to the dataset ``output`` (see :mod:`rldataflow.data.dataset`).

        ``explore``: sample actions (the default, so ``action_logp`` is the behaviour policy's
        probability, as off-policy estimates need) or take the distribution's mode. Episodes
        are seeded like :meth:`evaluate`'s. An episode goes into one shard unless it is longer
        than ``output.max_rows_per_file``. Returns ``{"episodes", "rows", "files",
        "episode_return_mean"}``.
        """
        writer = output.writer(tag=f"w{self.worker_index}-{os.getpid()}-{os.urandom(3).hex()}")
        returns = []
        for ret, _, cols, _ in self._episodes(num_episodes, explore, max_episode_steps, True):
            returns.append(ret)
            n = len(cols[SampleBatch.REWARDS])
            if writer._held_rows and writer._held_rows + n > output.max_rows_per_file:
                writer.flush()  # keep each episode in one shard where it fits
            writer.write(cols)
        writer.close()
        return {"episodes": len(returns), "rows": writer.rows_written,
                "files": [str(f) for f in writer.files],
                "episode_return_mean": float(np.mean(returns)) if returns else float("nan")}

    def _episodes(self, num_episodes: int, explore: bool, max_episode_steps: int | None,
                  collect: bool, render: bool = False
                  ) -> Iterator[tuple[float, int, dict[str, np.ndarray] | None,
                                      list[np.ndarray] | None]]:
        """``(return, length, columns or None, frames or None)`` of each of ``num_episodes``
        episodes on a fresh env seeded by :meth:`next_eval_seed`; ``collect`` keeps the steps
        as dataset columns, ``render`` the env's rgb frames."""
        env_config = {**self.env_config, "render_mode": "rgb_array"} if render else self.env_config
        env = make_env(self.env_spec, env_config)
        pre = obs_preprocessor(env.observation_space)
        seed = self.next_eval_seed()
        eps_base = (self.worker_index << 40) | ((seed % (1 << 24)) << 12)
        policy = self.policy
        try:
            raw, _ = env.reset(seed=seed)
            for episode in range(num_episodes):
                total, steps, done = 0.0, 0, False
                steps_cols: list[dict[str, Any]] = []
                frames = [env.render()] if render else None
                state = (policy.initial_state(1) if getattr(policy, "is_recurrent", False)
                         else None)
                while not done:
                    obs = pre([raw])
                    if state is None:
                        action, extras = policy.compute_actions(obs, explore=explore)
                    else:  # the LSTM state goes on from step to step within the episode
                        action, extras = policy.compute_actions(obs, explore=explore,
                                                                state=state)
                        state = (extras.pop(STATE_OUT_H), extras.pop(STATE_OUT_C))
                    raw, reward, term, trunc, info = env.step(self._to_env_actions(action)[0])
                    total += float(reward)
                    steps += 1
                    if frames is not None:
                        frames.append(env.render())
                    capped = max_episode_steps is not None and steps >= max_episode_steps
                    done = term or trunc or capped
                    if collect:
                        boot = (self.policy.value(pre([raw]), **({} if state is None else
                                                                 {"state": state}))[0]
                                if trunc and not term and SampleBatch.VF_PREDS in extras
                                else np.float32(0.0))
                        steps_cols.append({
                            # next_obs: the final obs on termination/truncation, for Q-learning
                            # from the dataset (CQL)
                            SampleBatch.OBS: obs[0], SampleBatch.NEXT_OBS: pre([raw])[0],
                            SampleBatch.ACTIONS: action[0],
                            SampleBatch.REWARDS: np.float32(reward),
                            SampleBatch.TERMINATEDS: bool(term),
                            SampleBatch.TRUNCATEDS: bool(trunc or (capped and not term)),
                            **{k: v[0] for k, v in extras.items()}})
                        if SampleBatch.VF_PREDS in extras:  # V(final obs) on truncation
                            steps_cols[-1][SampleBatch.BOOTSTRAP_VALUE] = np.float32(boot)
                    if (term or trunc) and not capped:
                        # the true-episode convention (rldataflow.envs.vector_env): None ends
                        # only a training episode (an Atari life), a dict carries the real return
                        true = info.get(TRUE_EPISODE_KEY, _NO_TRUE) if info else _NO_TRUE
                        if true is None:
                            raw, _ = env.reset()
                            done = False
                        elif isinstance(true, dict):
                            total = float(true["r"])
                cols = None
                if collect:
                    cols = {k: np.stack([c[k] for c in steps_cols]) for k in steps_cols[0]}
                    cols[SampleBatch.EPS_ID] = np.full(steps, eps_base + episode, np.int64)
                    cols[SampleBatch.T] = np.arange(steps, dtype=np.int64)
                yield total, steps, cols, frames
                raw, _ = env.reset()
        finally:
            env.close()

    def stop(self) -> None:
        """Leave the gradient group, close the envs."""
        self.leave_group()
        self.vector_env.close()

    def __repr__(self) -> str:
        return (
            f"RolloutWorker(index={self.worker_index}, env={self.env_spec!r}, "
            f"num_envs={self.num_envs}, fragment={self.rollout_fragment_length})"
        )
