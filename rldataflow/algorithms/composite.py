"""Composite: several algorithms in one run, each training its own policy from one rollout stream.

This is the composition of the RLlib Flow paper (Liang et al. 2021, section 5.3): a multi-agent
rollout stream is duplicated, each branch keeps one policy's experiences and feeds that policy's
algorithm's *own* training sub-flow (``training_flow(stream, workers, config, policy_id)``), and
the branches run concurrently. No algorithm's logic is copied here: a PPO branch is
:func:`rldataflow.algorithms.ppo.training_flow`, a DQN branch
:func:`rldataflow.algorithms.dqn.training_flow`.

Dataflow (``rldataflow plan composite --config examples/ppo_and_dqn.yaml``)::

    bulk-sync rollouts (MultiAgentBatch) -> duplicate(k)
      [i] SelectExperiences([policy_i]) -> <algorithm of policy_i>.training_flow(policy_i)
    Concurrently(async) -> report

Config: each entry of ``policies`` names its algorithm and overrides that algorithm's own
defaults; the rollout settings (env, workers, envs per worker, fragment length) are shared::

    algorithm: composite
    env: rldataflow/MultiAgentCartPole-v0
    env_config: {num_agents: 2}
    policy_mapping_fn: by_agent
    policies:
      ppo_policy: {algorithm: ppo}
      dqn_policy: {algorithm: dqn, lr: 0.001}

The async ``Concurrently`` lets each branch pull as fast as it trains; the bounded
``duplicate`` keeps the branches within :data:`MAX_LEAD_ROUNDS` rollout rounds of each other,
so a branch that trains more per round (DQN's replay) sets the pace of sampling for all, and
the experience it learns from is at most that many rounds older than its newest weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Union

from rldataflow.algorithms.base import AlgorithmBuilder, default_workers
from rldataflow.algorithms.registry import get_algorithm, module_of, register_algorithm
from rldataflow.flow import Concurrently, Plan
from rldataflow.ops import ParallelRollouts, SelectExperiences, StandardMetricsReporting
from rldataflow.policies.policy_spec import POLICY_SEED_STRIDE
from rldataflow.utils.config import AlgorithmConfig, ConfigError, build_config, describe_field
from rldataflow.workers import WorkerSet

#: Rollout rounds a branch may run ahead of the slowest one (``duplicate``'s ``max_buffered``).
#: The slow branch trains on experience this many rounds old: with duplicate's default of 16 a
#: PPO branch ran 16 rounds (8k env steps, 2k DQN SGD steps) ahead of a DQN branch, whose data
#: was then that stale and whose Q values diverged in some interleavings (return ~10 at 400k).
MAX_LEAD_ROUNDS = 2

#: Config keys shared by all branches (they shape the one rollout stream); a policy entry may
#: not override them.
SHARED_KEYS = ("env", "env_config", "runtime", "runtime_options", "num_workers",
               "num_envs_per_worker", "rollout_fragment_length", "restart_failed_workers",
               "log_level", "policies", "policy_mapping_fn")


_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(AlgorithmConfig):
    """Settings of the shared rollouts; ``policies`` maps each policy id to
    ``{algorithm: NAME, **that algorithm's config overrides}``."""

    env: Union[str, Callable[..., Any]] = field(
        default="rldataflow/MultiAgentCartPole-v0",
                     metadata=_h("multi-agent env (PettingZoo parallel API) id, name or creator"))
    env_config: dict[str, Any] = field(
        default_factory=dict, metadata=_h("passed to the env creator (the default env has 2 "
                                          "agents; {num_agents: N} for more)"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(default=32, metadata=_h("steps per env per sample"))
    min_steps_per_iteration: int = field(
        default=2048, metadata=_h("report a result only after at least this many env steps"))
    policies: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"ppo_policy": {"algorithm": "ppo"},
                                 "dqn_policy": {"algorithm": "dqn"}},
        metadata=_h("policy id -> {algorithm: NAME, ...overrides of that algorithm's config}"))
    policy_mapping_fn: Union[str, Callable[..., Any], None] = field(
        default="by_agent", metadata=_h("agent id -> policy id: 'by_agent', 'shared' or a "
                                        "callable"))

    def _validate_policies(self) -> None:
        if not self.policies:
            raise ConfigError("config key 'policies' is empty: a composite run needs at least "
                              "one policy, e.g. {ppo_policy: {algorithm: ppo}}")
        self._validate_policy_mapping()
        branches(self)  # each entry checked against its own algorithm's Config


def branch_configs(config: Config) -> dict[str, tuple[ModuleType, AlgorithmConfig]]:
    """``{policy_id: (algorithm module, its validated config)}`` for every policy (see
    :func:`branches`)."""
    return {pid: (module_of(builder), sub) for pid, (builder, sub) in branches(config).items()}


def branches(config: Config) -> dict[str, tuple[AlgorithmBuilder, AlgorithmConfig]]:
    """``{policy_id: (algorithm builder, its validated config)}`` for every policy.

    Each policy's config is its algorithm's defaults, then the shared rollout settings, then the
    policy entry's overrides; policy ``i`` is seeded ``seed + i * POLICY_SEED_STRIDE``.
    """
    out: dict[str, tuple[AlgorithmBuilder, AlgorithmConfig]] = {}
    shared = {key: getattr(config, key) for key in SHARED_KEYS
              if key not in ("policies", "policy_mapping_fn")}
    for index, (pid, entry) in enumerate(config.policies.items()):
        entry = dict(entry or {})
        where = f"config key 'policies.{pid}'"
        name = entry.pop("algorithm", None)
        if not name:
            raise ConfigError(f"{where} needs an 'algorithm' (e.g. ppo or dqn)")
        bad = sorted(set(entry) & set(SHARED_KEYS))
        if bad:
            raise ConfigError(f"{where} cannot set {bad[0]!r}: the rollouts are shared, set it "
                              "at the top level")
        try:
            builder = get_algorithm(str(name))
        except ConfigError as e:
            raise ConfigError(f"in {where}: {e}") from None
        if not builder.composable or isinstance(builder, Composite):
            raise ConfigError(f"{where}: algorithm {name!r} has no training sub-flow to compose "
                              "(composable: those that implement training_flow, e.g. "
                              "ppo, dqn, pg, a2c)")
        entry.setdefault("seed", int(config.seed) + index * POLICY_SEED_STRIDE)
        try:
            sub = build_config(builder.Config, {**shared, **entry})
        except ConfigError as e:
            raise ConfigError(f"in {where} ({name}): {e}") from None
        out[pid] = (builder, sub)
    return out


def make_workers(config: Config, runtime: Any) -> WorkerSet:
    """Multi-agent workers holding each policy as its own algorithm builds it."""
    parts = branches(config)
    factories = {pid: builder.policy_factory(sub) for pid, (builder, sub) in parts.items()}
    options: dict[str, Any] = {}
    for builder, _ in parts.values():  # e.g. DQN needs next_obs in the batches
        options.update(builder.worker_options)
    return default_workers(config, runtime, factories, **options)


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    parts = branches(config)
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    streams = (rollouts.duplicate(len(parts), max_buffered=MAX_LEAD_ROUNDS)
               if len(parts) > 1 else [rollouts])
    flows = [builder.training_flow(stream.for_each(SelectExperiences([pid])), workers, sub,
                                   policy_id=pid)
             for stream, (pid, (builder, sub)) in zip(streams, parts.items(), strict=True)]
    train_op = Concurrently(flows, mode="async") if len(flows) > 1 else flows[0]
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("composite")
class Composite(AlgorithmBuilder):
    """Several algorithms in one run, each training its own policy from one rollout stream."""

    Config = Config

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return make_workers(config, runtime)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    # each branch's algorithm keeps its own extra state
    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        local = workers.local_worker()
        state: dict[str, Any] = {}
        for pid in local.policy_ids():
            policy = local.get_policy(pid)
            entry = {}
            if hasattr(policy, "kl_coeff"):
                entry["kl_coeff"] = float(policy.kl_coeff)
            if hasattr(policy, "env_steps") and workers.remote_workers():
                # the exploration clock lives on the sampling workers, not the local copy
                entry["sampler_env_steps"] = int(sum(workers.foreach_worker(
                    lambda w, pid=pid: w.get_policy(pid).env_steps, local=False)))
            state[pid] = entry
        return state

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        local = workers.local_worker()
        n_remote = workers.num_remote_workers
        for pid, entry in state.items():
            if pid not in local.policy_ids():
                continue
            if "kl_coeff" in entry:
                local.get_policy(pid).kl_coeff = float(entry["kl_coeff"])
            if "sampler_env_steps" in entry and n_remote:
                share = int(entry["sampler_env_steps"]) // n_remote

                def set_clock(w: Any, pid: str = pid, share: int = share) -> None:
                    w.get_policy(pid).env_steps = share

                workers.foreach_worker(set_clock, local=False)
