"""``MultiAgentRolloutWorker``: PettingZoo parallel envs plus several policies.

The same actor protocol as :class:`~rldataflow.workers.RolloutWorker` (``sample``, weights,
``learn_on_batch``, state, ``evaluate``, ...), so ``WorkerSet``, ``ParallelRollouts`` and the
train operators work unchanged; it returns :class:`~rldataflow.data.MultiAgentBatch` es.

How a step goes: every live agent of every env that has an observation is mapped to a policy
(``policy_mapping_fn``, asked once per agent and episode); each policy computes the actions of
all its (env, agent) pairs in **one** batched call; every env is stepped with its action dict.
Policies are built by ``policy_factories[pid](obs_space, action_space)``, so each may have its
own class and loss (a PPO ``TorchPolicy`` next to a DQN policy, say).

Per-agent episode ends, with PettingZoo's per-agent flags:

* ``terminated``: the agent's value after its last step is 0;
* ``truncated``: bootstrapped with ``V(final obs of the agent)`` (``bootstrap_value`` column);
* an agent that leaves ``env.agents`` without either flag is treated as terminated;
* an agent cut at the end of a fragment is bootstrapped with ``V(its current obs)``;
* an agent that appears mid-episode starts a new trajectory (``t`` = 0).

The env episode ends when no agent is left; the env is then reset in the same step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
import numpy as np

from rldataflow.data.sample_batch import MultiAgentBatch, SampleBatch
from rldataflow.envs.multi_agent import make_multi_agent_env
from rldataflow.envs.registry import EnvSpec
from rldataflow.envs.spaces import action_to_env_fn, obs_preprocessor
from rldataflow.policies.policy import TorchPolicy
from rldataflow.policies.policy_spec import (
    POLICY_SEED_STRIDE,
    PolicyMappingSpec,
    UnknownPolicyError,
    resolve_policy_mapping_fn,
)
from rldataflow.workers.base import DEFAULT_POLICY_ID, WorkerBase
from rldataflow.workers.rollout_worker import PolicyFactory

__all__ = [
    "AGENT_SLOTS",
    "POLICY_RETURNS_PREFIX",
    "MultiAgentRolloutWorker",
    "split_env_id",
]

#: ``batch.stats[POLICY_RETURNS_PREFIX + pid]``: returns of the agents' sub-episodes that
#: policy ``pid`` drove (one entry per agent and episode).
POLICY_RETURNS_PREFIX = "policy_episode_returns/"

#: ``env_id = env_index * AGENT_SLOTS + agent_slot``: one id per (env, agent) pair, so
#: postprocessing sees each pair's steps as their own trajectory.
AGENT_SLOTS = 1 << 16


def split_env_id(env_id: np.ndarray | int) -> tuple[Any, Any]:
    """``(env_index, agent_slot)`` of an ``env_id`` column value (see :data:`AGENT_SLOTS`);
    ``worker.agent_ids[agent_slot]`` is the agent's name."""
    return np.divmod(env_id, AGENT_SLOTS)


class _Trajectory:
    """One agent's steps in one episode of one env (its sub-episode)."""

    __slots__ = ("pid", "serial", "t", "ret", "last_row", "env_id")

    def __init__(self, pid: str, serial: int, env_id: int) -> None:
        self.pid = pid
        self.serial = serial
        self.env_id = env_id
        self.t = 0
        self.ret = 0.0
        self.last_row = -1  # row (within this sample call's rows of `pid`) of its latest step


class _EnvState:
    __slots__ = ("env", "obs", "eps_id", "steps", "ret", "mapping", "trajs", "done_once")

    def __init__(self, env: Any) -> None:
        self.env = env
        self.obs: dict[str, Any] = {}
        self.eps_id = -1
        self.steps = 0
        self.ret = 0.0
        self.mapping: dict[str, str] = {}
        self.trajs: dict[str, _Trajectory] = {}
        self.done_once = False


class MultiAgentRolloutWorker(WorkerBase):
    """Steps ``num_envs`` PettingZoo parallel envs with several policies.

    Args:
        env: a multi-agent env spec (see :func:`rldataflow.envs.make_multi_agent_env`):
            registered name, PettingZoo module path or creator callable; AEC envs are converted.
        env_config: passed to the env creator.
        num_envs: envs stepped together (each policy acts once per step for all of them).
        policy_factories: ``{policy_id: factory(obs_space, action_space)}``; the factory gets the
            preprocessed observation space of the agents mapped to that policy. Default: one
            ``TorchPolicy`` named ``"default_policy"`` shared by all agents.
        policy_factory: shorthand for ``{"default_policy": policy_factory}``.
        policy_mapping_fn: ``"shared"``, ``"by_agent"`` or ``fn(agent_id) -> policy_id`` (see
            :mod:`rldataflow.policies.policy_spec`); ``None`` = ``"shared"``.
        policies_to_train: policies :meth:`learn_on_batch` trains when given a whole
            :class:`MultiAgentBatch` (default: all).
        rollout_fragment_length: env steps per env per :meth:`sample`.
        batch_mode: ``"truncate_episodes"`` (exactly ``num_envs * rollout_fragment_length`` env
            steps; agents cut at the fragment end are bootstrapped) or ``"complete_episodes"``
            (at least that many, until every env ended an episode; only finished agent
            sub-episodes are returned, the rest carried over to the next call).
        seed, worker_index: as for ``RolloutWorker``; env ``i`` is first reset with
            ``worker_seed + i``; the default policies are seeded from the worker seed.
        include_next_obs: also store ``next_obs`` (the agent's final obs on its last step).
        postprocess: apply each policy's ``postprocess_trajectory`` to its batch.

    ``sample()`` returns a :class:`MultiAgentBatch`: ``policy_batches[pid]`` holds the steps of
    the agents mapped to ``pid`` (policies that did not act are left out), one contiguous,
    time-ordered segment per (env, agent) pair, with the columns of ``RolloutWorker`` batches
    (``obs, actions, rewards, terminateds, truncateds, eps_id, env_id, t``, the policy's extras,
    ``bootstrap_value`` for policies with a value function, ``next_obs`` if asked, the
    postprocessing outputs). ``env_id`` is ``env_index * AGENT_SLOTS + agent_slot``
    (:func:`split_env_id`), ``eps_id`` the env episode and ``t`` the agent's step in it.
    ``env_steps()`` counts env steps (one per env per step, however many agents acted).
    ``stats``: ``episode_returns`` (sum over all agents of an env episode),
    ``episode_lengths`` (env steps) and ``POLICY_RETURNS_PREFIX + pid`` (each finished agent
    sub-episode's return, by policy). ``info["weights_version"]`` is ``{pid: version}``; each
    policy batch's ``info["weights_version"]`` that policy's version.

    Example::

        >>> worker = MultiAgentRolloutWorker(
        ...     "rldataflow/MultiAgentCartPole-v0", {"num_agents": 2}, num_envs=2,
        ...     policy_mapping_fn="by_agent", rollout_fragment_length=10,
        ...     policy_factories={"p0": None, "p1": None})
        >>> batch = worker.sample()
        >>> batch.env_steps(), {pid: b.count for pid, b in batch.policy_batches.items()}
        (20, {'p0': 20, 'p1': 20})
    """

    DEFAULT_POLICY_ID = DEFAULT_POLICY_ID

    def __init__(
        self,
        env: EnvSpec,
        env_config: dict | None = None,
        num_envs: int = 1,
        policy_factories: Mapping[str, PolicyFactory | None] | None = None,
        policy_mapping_fn: PolicyMappingSpec = None,
        rollout_fragment_length: int = 200,
        batch_mode: str = "truncate_episodes",
        seed: int = 0,
        worker_index: int = 0,
        include_next_obs: bool = False,
        postprocess: bool = True,
        policy_factory: PolicyFactory | None = None,
        policies_to_train: list[str] | None = None,
    ) -> None:
        if policy_factories is not None and policy_factory is not None:
            raise ValueError("give policy_factories or policy_factory, not both")
        if policy_factories is None:
            policy_factories = {DEFAULT_POLICY_ID: policy_factory}
        if not policy_factories:
            raise ValueError("policy_factories is empty: a worker needs at least one policy")
        super().__init__(env, env_config, num_envs, rollout_fragment_length, batch_mode, seed,
                         worker_index, include_next_obs, postprocess)

        self._envs = [_EnvState(make_multi_agent_env(env, self.env_config))
                      for _ in range(self.num_envs)]
        probe = self._envs[0].env
        possible = list(getattr(probe, "possible_agents", None) or [])
        if not possible:
            probe.reset(seed=self.seed)
            possible = list(probe.agents)
        self.possible_agents: list[str] = possible
        self.agent_ids: list[str] = list(possible)  # agent_slot -> agent id
        self._agent_slot = {a: i for i, a in enumerate(self.agent_ids)}
        pids = list(policy_factories)
        self.policy_mapping_fn = resolve_policy_mapping_fn(policy_mapping_fn, pids, possible)
        self.policies_to_train = list(pids if policies_to_train is None else policies_to_train)
        unknown = [p for p in self.policies_to_train if p not in policy_factories]
        if unknown:
            raise UnknownPolicyError(f"policies_to_train names unknown policy ids {unknown}; "
                                     f"the policies are {pids}")

        # Spaces per policy: those of the agents mapped to it (all must agree).
        raw_spaces = self._policy_spaces(probe, pids)
        self.observation_spaces: dict[str, gymnasium.spaces.Box] = {}
        self.action_spaces: dict[str, gymnasium.Space] = {}
        self._raw_obs_space: dict[str, gymnasium.Space] = {}
        self._pre: dict[str, Any] = {}
        self._to_env: dict[str, Callable[[np.ndarray], list]] = {}
        self.policies: dict[str, Any] = {}
        for index, pid in enumerate(pids):
            obs_space, act_space = raw_spaces[pid]
            pre = obs_preprocessor(obs_space)
            self._raw_obs_space[pid] = obs_space
            self._pre[pid] = pre
            self.observation_spaces[pid] = pre.space
            self.action_spaces[pid] = act_space
            self._to_env[pid] = action_to_env_fn(act_space)
            factory = policy_factories[pid]
            if factory is None:
                self.policies[pid] = TorchPolicy(pre.space, act_space,
                                                 seed=self.seed + POLICY_SEED_STRIDE * index)
            else:
                self.policies[pid] = factory(pre.space, act_space)
            if getattr(self.policies[pid], "is_recurrent", False):
                raise ValueError(f"policy {pid!r}: recurrent policies (use_lstm) are not "
                                 "supported by multi-agent workers yet")
        self._checked: set[tuple[str, str]] = set()
        self._has_vf: dict[str, bool] = {}
        self._next_eps_id = self.worker_index << 40
        self._next_serial = 0
        self._reset_done = False
        self._carry: dict[str, dict[str, np.ndarray]] = {}
        self._finished: set[int] = set()  # serials of ended trajectories not yet returned

    # -- set-up helpers ------------------------------------------------------------------------
    def _policy_spaces(self, env: Any, pids: list[str]) -> dict[str, tuple[Any, Any]]:
        by_pid: dict[str, list[str]] = defaultdict(list)
        for agent in self.possible_agents:
            by_pid[self.policy_mapping_fn(agent)].append(agent)
        spaces: dict[str, tuple[Any, Any]] = {}
        first = self.possible_agents[0] if self.possible_agents else None
        for pid in pids:
            agents = by_pid.get(pid, [])
            ref = agents[0] if agents else first
            if ref is None:
                raise ValueError(f"cannot tell the spaces of policy {pid!r}: the env has no "
                                 "possible_agents")
            if not agents and any(
                    env.observation_space(a) != env.observation_space(ref)
                    or env.action_space(a) != env.action_space(ref)
                    for a in self.possible_agents):
                raise ValueError(f"no agent is mapped to policy {pid!r} and the agents' spaces "
                                 "differ, so its spaces are unknown")
            obs_space, act_space = env.observation_space(ref), env.action_space(ref)
            for a in agents[1:]:
                self._check_spaces(env, a, pid, obs_space, act_space)
            spaces[pid] = (obs_space, act_space)
        return spaces

    @staticmethod
    def _check_spaces(env: Any, agent: str, pid: str, obs_space: Any, act_space: Any) -> None:
        if env.observation_space(agent) != obs_space or env.action_space(agent) != act_space:
            raise ValueError(
                f"agent {agent!r} (observation {env.observation_space(agent)}, action "
                f"{env.action_space(agent)}) cannot share policy {pid!r} (observation "
                f"{obs_space}, action {act_space}): map it to a policy with its spaces")

    def _slot(self, agent: str) -> int:
        slot = self._agent_slot.get(agent)
        if slot is None:
            slot = self._agent_slot[agent] = len(self.agent_ids)
            self.agent_ids.append(agent)
        return slot

    def _map(self, st: _EnvState, agent: str) -> str:
        pid = st.mapping.get(agent)
        if pid is None:
            pid = st.mapping[agent] = self.policy_mapping_fn(agent)
            if (agent, pid) not in self._checked:
                self._check_spaces(st.env, agent, pid, self._raw_obs_space[pid],
                                   self.action_spaces[pid])
                self._checked.add((agent, pid))
        return pid

    def _new_episode(self, st: _EnvState, obs: Mapping[str, Any]) -> None:
        st.obs = dict(obs)
        st.eps_id = self._next_eps_id
        self._next_eps_id += 1
        st.steps = 0
        st.ret = 0.0
        st.mapping = {}
        st.trajs = {}

    def _reset_all(self) -> None:
        for i, st in enumerate(self._envs):
            obs, _ = st.env.reset(seed=self.seed + i)
            self._new_episode(st, obs)
        self._reset_done = True

    # -- sampling --------------------------------------------------------------------------------
    def _step(self, rows: dict[str, list[dict[str, np.ndarray]]], counts: dict[str, int],
              truncated_final: list[tuple[str, int, Any]], stats: dict[str, list[float]]
              ) -> None:
        """One step of every env: act, step, store one row per acting agent."""
        groups: dict[str, list[tuple[int, str, _Trajectory]]] = defaultdict(list)
        raw: dict[str, list[Any]] = defaultdict(list)
        for e, st in enumerate(self._envs):
            live = st.env.agents
            acting = [a for a in live if a in st.obs]
            if not acting:
                raise RuntimeError(f"env {e} ({self.env_spec!r}) has live agents {list(live)} "
                                   "but no observation for any of them")
            for agent in acting:
                traj = st.trajs.get(agent)
                if traj is None:
                    pid = self._map(st, agent)
                    traj = st.trajs[agent] = _Trajectory(
                        pid, self._next_serial, e * AGENT_SLOTS + self._slot(agent))
                    self._next_serial += 1
                groups[traj.pid].append((e, agent, traj))
                raw[traj.pid].append(st.obs[agent])
        actions: list[dict[str, Any]] = [{} for _ in self._envs]
        acted: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
        for pid, members in groups.items():
            obs_arr = self._pre[pid](raw[pid])
            acts, extras = self.policies[pid].compute_actions(obs_arr)
            if pid not in self._has_vf:
                self._has_vf[pid] = SampleBatch.VF_PREDS in extras
            for (e, agent, _), a in zip(members, self._to_env[pid](acts), strict=True):
                actions[e][agent] = a
            acted[pid] = (obs_arr, acts, extras)
        results = [st.env.step(actions[e]) for e, st in enumerate(self._envs)]

        for pid, members in groups.items():
            obs_arr, acts, extras = acted[pid]
            n = len(members)
            base = counts[pid]
            rewards = np.zeros(n, dtype=np.float32)
            terms = np.zeros(n, dtype=bool)
            truncs = np.zeros(n, dtype=bool)
            eps = np.empty(n, dtype=np.int64)
            ts = np.empty(n, dtype=np.int64)
            env_ids = np.empty(n, dtype=np.int64)
            serials = np.empty(n, dtype=np.int64)
            next_raw: list[Any] = [] if self.include_next_obs else None  # type: ignore[assignment]
            ended = stats.setdefault(POLICY_RETURNS_PREFIX + pid, [])
            for j, (e, agent, traj) in enumerate(members):
                st = self._envs[e]
                nobs, rew, te, tr, _ = results[e]
                r = float(rew.get(agent, 0.0))
                term = bool(te.get(agent, False))
                trunc = bool(tr.get(agent, False)) and not term
                has_next = agent in nobs
                if not (term or trunc) and agent not in st.env.agents:
                    term = True  # left without a flag: nothing to bootstrap from
                if trunc and not has_next:
                    term, trunc = True, False  # truncated without a final obs: cannot bootstrap
                rewards[j], terms[j], truncs[j] = r, term, trunc
                eps[j], ts[j], env_ids[j], serials[j] = st.eps_id, traj.t, traj.env_id, traj.serial
                if next_raw is not None:
                    next_raw.append(nobs[agent] if has_next else st.obs[agent])
                traj.t += 1
                traj.ret += r
                traj.last_row = base + j
                if term or trunc:
                    ended.append(traj.ret)
                    self._finished.add(traj.serial)
                    del st.trajs[agent]
                    if trunc and self._has_vf[pid]:
                        truncated_final.append((pid, base + j, nobs[agent]))
            chunk = {
                SampleBatch.OBS: obs_arr,
                SampleBatch.ACTIONS: acts,
                SampleBatch.REWARDS: rewards,
                SampleBatch.TERMINATEDS: terms,
                SampleBatch.TRUNCATEDS: truncs,
                SampleBatch.EPS_ID: eps,
                SampleBatch.ENV_ID: env_ids,
                SampleBatch.T: ts,
                **extras,
                "_serial": serials,
            }
            if next_raw is not None:
                chunk[SampleBatch.NEXT_OBS] = self._pre[pid](next_raw)
            rows[pid].append(chunk)
            counts[pid] = base + n

        for e, st in enumerate(self._envs):
            nobs, rew, _, _, _ = results[e]
            st.ret += float(sum(rew.values()))
            st.steps += 1
            live = st.env.agents
            if live:
                st.obs = {a: o for a, o in nobs.items() if a in live}
                continue
            for traj in st.trajs.values():  # agents that left without acting in the last step
                ended = stats.setdefault(POLICY_RETURNS_PREFIX + traj.pid, [])
                ended.append(traj.ret)
                self._finished.add(traj.serial)
            stats["episode_returns"].append(st.ret)
            stats["episode_lengths"].append(st.steps)
            st.done_once = True
            obs, _ = st.env.reset()
            self._new_episode(st, obs)
        self.num_steps_sampled += self.num_envs

    def _fragment_end_bootstrap(self, boot: dict[str, list[tuple[int, Any]]]) -> None:
        """``(row, obs)`` per policy of the agents still alive, to bootstrap with V(obs)."""
        for st in self._envs:
            for agent, traj in st.trajs.items():
                if traj.last_row >= 0 and agent in st.obs and self._has_vf.get(traj.pid):
                    boot[traj.pid].append((traj.last_row, st.obs[agent]))

    def sample(self) -> MultiAgentBatch:
        """Collect one :class:`MultiAgentBatch` (see the class docs)."""
        if not self._reset_done:
            self._reset_all()
        complete = self.batch_mode == "complete_episodes"
        rows: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        for pid, carried in self._carry.items():
            rows[pid].append(carried)
            counts[pid] = len(carried[SampleBatch.OBS])
        self._carry = {}
        truncated_final: list[tuple[str, int, Any]] = []
        stats: dict[str, list[float]] = {"episode_returns": [], "episode_lengths": []}
        for st in self._envs:
            st.done_once = False
            for traj in st.trajs.values():
                traj.last_row = -1
        env_steps = 0
        while True:
            self._step(rows, counts, truncated_final, stats)
            env_steps += self.num_envs
            if env_steps < self.num_envs * self.rollout_fragment_length:
                continue
            if not complete or all(st.done_once for st in self._envs):
                break
        boot_rows: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for pid, row, obs in truncated_final:
            boot_rows[pid].append((row, obs))
        if not complete:
            self._fragment_end_bootstrap(boot_rows)

        batches: dict[str, SampleBatch] = {}
        for pid, chunks in rows.items():
            cols = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}
            if self._has_vf.get(pid):
                if SampleBatch.BOOTSTRAP_VALUE not in cols:
                    cols[SampleBatch.BOOTSTRAP_VALUE] = np.zeros(counts[pid], dtype=np.float32)
                pending = boot_rows.get(pid)
                if pending:
                    idx = np.fromiter((r for r, _ in pending), dtype=np.int64, count=len(pending))
                    values = self.policies[pid].value(self._pre[pid]([o for _, o in pending]))
                    cols[SampleBatch.BOOTSTRAP_VALUE][idx] = values
            serial = cols["_serial"]
            if complete:
                done = np.fromiter((s in self._finished for s in serial.tolist()), dtype=bool,
                                   count=len(serial))
                if not done.all():
                    # Open trajectories: no bootstrap yet (they end in a later call).
                    self._carry[pid] = {k: v[~done] for k, v in cols.items()
                                        if k != SampleBatch.BOOTSTRAP_VALUE}
                    cols = {k: v[done] for k, v in cols.items()}
                    serial = cols["_serial"]
                if len(serial) == 0:
                    continue
            order = np.lexsort((serial, cols[SampleBatch.ENV_ID]))
            del cols["_serial"]
            cols = {k: v[order] for k, v in cols.items()}
            batch = SampleBatch(cols, info={"weights_version":
                                            self.policies[pid].weights_version})
            if self.postprocess:
                batch = self.policies[pid].postprocess_trajectory(batch)
            batches[pid] = batch
        # Every ended trajectory was returned whole; the carry holds only open ones.
        self._finished.clear()
        return MultiAgentBatch(
            batches, env_steps, stats=stats,
            info={"weights_version": self.weights_version})

    def sample_and_compute_gradients(self) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
        """Sample, then compute the gradients of every policy to train on its share (A3C-style).

        Returns ``({pid: grads}, {"count": env steps, "stats": ..., "learner_stats": {pid:
        stats}, "weights_version": {pid: version}})``.
        """
        batch = self.sample()
        grads, learner_stats = self.compute_gradients(batch)
        return grads, {"count": batch.count, "stats": batch.stats,
                       "learner_stats": learner_stats, "weights_version": self.weights_version}

    # -- policies ----------------------------------------------------------------------------
    def get_policy(self, policy_id: str | None = None) -> Any:
        """The policy ``policy_id`` (``None``: the only one, if there is exactly one)."""
        if policy_id is None:
            if len(self.policies) != 1:
                raise ValueError(f"this worker has {len(self.policies)} policies "
                                 f"{list(self.policies)}: name one")
            return next(iter(self.policies.values()))
        try:
            return self.policies[policy_id]
        except KeyError:
            raise UnknownPolicyError(f"unknown policy id {policy_id!r}; the policies are "
                                     f"{list(self.policies)}") from None

    @property
    def policy(self) -> Any:
        """The policy, when there is only one (parameter sharing); else an AttributeError."""
        if len(self.policies) != 1:
            raise AttributeError(f"MultiAgentRolloutWorker has {len(self.policies)} policies "
                                 f"{list(self.policies)}; use get_policy(policy_id)")
        return next(iter(self.policies.values()))

    @property
    def weights_version(self) -> dict[str, int]:
        """``{pid: version}``: what ``WorkerSet.sync_weights`` sends along with the weights."""
        return {pid: int(p.weights_version) for pid, p in self.policies.items()}

    def _split(self, batch: SampleBatch | MultiAgentBatch, policy_id: str | None
               ) -> dict[str, SampleBatch]:
        """The per-policy batches a learning call works on."""
        if isinstance(batch, MultiAgentBatch):
            if policy_id is not None:
                self.get_policy(policy_id)
                pb = batch.policy_batches.get(policy_id)
                return {policy_id: pb} if pb is not None else {}
            return {pid: b for pid, b in batch.policy_batches.items()
                    if pid in self.policies_to_train}
        pid = policy_id
        if pid is None:
            if len(self.policies) != 1:
                raise ValueError(f"a SampleBatch carries no policy id and this worker has "
                                 f"{len(self.policies)} policies {list(self.policies)}: pass "
                                 "policy_id")
            pid = next(iter(self.policies))
        self.get_policy(pid)
        return {pid: batch}

    def learn_on_batch(self, batch: SampleBatch | MultiAgentBatch, policy_id: str | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        """Train with ``learn_on_batch(**kwargs)``.

        With ``policy_id``: that policy on ``batch`` (a SampleBatch, or its share of a
        MultiAgentBatch); returns its stats. Without: every policy in ``policies_to_train`` on
        its share of a MultiAgentBatch; returns ``{pid: stats, "num_grad_updates": total}``.
        """
        parts = self._split(batch, policy_id)
        if policy_id is not None or not isinstance(batch, MultiAgentBatch):
            if not parts:  # the policy had no steps in this MultiAgentBatch
                return {"num_grad_updates": 0,
                        "weights_version": self.get_policy(policy_id).weights_version}
            ((pid, b),) = parts.items()
            return self.policies[pid].learn_on_batch(b, **kwargs)
        out: dict[str, Any] = {}
        total = 0
        for pid, b in parts.items():
            stats = self.policies[pid].learn_on_batch(b, **kwargs)
            out[pid] = stats
            total += int(stats.get("num_grad_updates", 0))
        out["num_grad_updates"] = total
        return out

    def compute_gradients(self, batch: SampleBatch | MultiAgentBatch,
                          policy_id: str | None = None) -> tuple[Any, Any]:
        """Gradients of one policy (``(grads, stats)``), or of every policy to train in a
        MultiAgentBatch (``({pid: grads}, {pid: stats})``)."""
        parts = self._split(batch, policy_id)
        if policy_id is not None or not isinstance(batch, MultiAgentBatch):
            ((pid, b),) = parts.items()
            return self.policies[pid].compute_gradients(b)
        grads, stats = {}, {}
        for pid, b in parts.items():
            grads[pid], stats[pid] = self.policies[pid].compute_gradients(b)
        return grads, stats

    def apply_gradients(self, grads: Any, policy_id: str | None = None) -> None:
        """Apply ``{pid: grads}``, or one policy's list of gradients."""
        if isinstance(grads, Mapping):
            for pid, g in grads.items():
                self.get_policy(pid).apply_gradients(g)
        else:
            self.get_policy(policy_id).apply_gradients(grads)

    # -- weights and state --------------------------------------------------------------------
    def get_weights(self, policy_ids: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """``{pid: weights}`` of all policies (or of ``policy_ids``)."""
        ids = list(self.policies) if policy_ids is None else policy_ids
        return {pid: self.get_policy(pid).get_weights() for pid in ids}

    def set_weights(self, weights: Mapping[str, Mapping[str, np.ndarray]],
                    version: Mapping[str, int] | int | None = None) -> None:
        """Load ``{pid: weights}`` (policies not named keep theirs); ``version`` is
        ``{pid: version}`` (as :attr:`weights_version` gives), one int for all, or None."""
        for pid, w in weights.items():
            v = version.get(pid) if isinstance(version, Mapping) else version
            self.get_policy(pid).set_weights(w, version=v)

    def get_state(self) -> dict[str, Any]:
        """Every policy's state (weights, optimizer, counters) and the step counter."""
        return {"policies": {pid: p.get_state() for pid, p in self.policies.items()},
                "num_steps_sampled": self.num_steps_sampled}

    def set_state(self, state: Mapping[str, Any]) -> None:
        for pid, s in state["policies"].items():
            self.get_policy(pid).set_state(s)
        self.num_steps_sampled = int(state.get("num_steps_sampled", 0))

    # -- evaluation ---------------------------------------------------------------------------
    def _run_eval(self, num_episodes: int, max_episode_steps: int | None,
                  explore: bool = False, lengths: list[int] | None = None
                  ) -> tuple[list[float], dict[str, list[float]]]:
        env = make_multi_agent_env(self.env_spec, self.env_config)
        seed = self.next_eval_seed()
        totals: list[float] = []
        per_policy: dict[str, list[float]] = {pid: [] for pid in self.policies}
        st = _EnvState(env)
        try:
            obs, _ = env.reset(seed=seed)
            for _ in range(num_episodes):
                st.obs, st.mapping = dict(obs), {}
                agent_ret: dict[str, float] = {}
                total, steps = 0.0, 0
                while env.agents:
                    groups: dict[str, list[str]] = defaultdict(list)
                    for agent in env.agents:
                        if agent in st.obs:
                            groups[self._map(st, agent)].append(agent)
                    actions = {}
                    for pid, agents in groups.items():
                        pre = self._pre[pid]([st.obs[a] for a in agents])
                        acts, _ = self.policies[pid].compute_actions(pre, explore=explore)
                        actions.update(zip(agents, self._to_env[pid](acts), strict=True))
                    nobs, rew, te, tr, _ = env.step(actions)
                    for agent, r in rew.items():
                        total += float(r)
                        if agent in st.mapping:
                            agent_ret[agent] = agent_ret.get(agent, 0.0) + float(r)
                    st.obs = {a: o for a, o in nobs.items() if a in env.agents}
                    steps += 1
                    if max_episode_steps is not None and steps >= max_episode_steps:
                        break
                totals.append(total)
                if lengths is not None:
                    lengths.append(steps)
                for agent, ret in agent_ret.items():
                    per_policy[st.mapping[agent]].append(ret)
                obs, _ = env.reset()
        finally:
            env.close()
        return totals, per_policy

    def evaluate(self, num_episodes: int, max_episode_steps: int | None = None) -> list[float]:
        """Returns (summed over agents) of ``num_episodes`` env episodes with deterministic
        actions on a fresh env, seeded like ``RolloutWorker.evaluate``."""
        return self._run_eval(num_episodes, max_episode_steps)[0]

    def evaluate_episodes(self, num_episodes: int, explore: bool = False,
                          max_episode_steps: int | None = None, render: bool = False
                          ) -> list[tuple[float, int, None]]:
        """``(return summed over agents, env steps, None)`` of ``num_episodes`` episodes,
        seeded like :meth:`evaluate`; ``explore`` samples actions instead of taking the mode.
        Multi-agent episodes are not rendered (``render`` must be False)."""
        if render:
            raise ValueError("rendering video is supported for single-agent envs only")
        lengths: list[int] = []
        totals = self._run_eval(num_episodes, max_episode_steps, explore, lengths)[0]
        return [(r, n, None) for r, n in zip(totals, lengths, strict=True)]

    def evaluate_per_policy(self, num_episodes: int, max_episode_steps: int | None = None
                            ) -> dict[str, list[float]]:
        """Like :meth:`evaluate`, but the returns of each agent, grouped by its policy."""
        return self._run_eval(num_episodes, max_episode_steps)[1]

    def stop(self) -> None:
        """Close the envs."""
        for st in self._envs:
            st.env.close()

    def __repr__(self) -> str:
        return (f"MultiAgentRolloutWorker(index={self.worker_index}, env={self.env_spec!r}, "
                f"num_envs={self.num_envs}, policies={list(self.policies)})")
