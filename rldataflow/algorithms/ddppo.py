"""DD-PPO: decentralized distributed PPO (Wijmans et al. 2020, "DD-PPO: Learning Near-Perfect
PointGoal Navigators from 2.5 Billion Frames", ICLR, arXiv:1911.00357).

Every rollout worker samples with its own copy of the policy, computes PPO's loss (the
clipped surrogate of Schulman et al. 2017, Eq. 7, plus value loss and entropy bonus:
:func:`rldataflow.policies.losses.actor_critic_loss`) on its own batch, and the workers
all-reduce each minibatch's gradient among themselves (``torch.distributed`` gloo, Wijmans et
al. Sec. 3: "synchronous ... gradients are averaged with AllReduce"); each then applies the
same averaged step with its own optimizer. The weights stay equal by construction; the driver
sends none and only collects metrics. On the inline runtime the same math runs with the
workers on driver threads averaging in rank order (see :mod:`rldataflow.ops.allreduce`).

Dataflow::

    AllReduceTraining(workers: sample -> standardize advantages -> SGD with all-reduced grads)
      -> report

Not included: the paper's preemption of stragglers (the last 40% of workers stop sampling
when 60% have finished; worthwhile with envs of very uneven step cost, as Habitat's), and the
KL penalty (a worker-local adaptive coefficient would drift apart between workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.ppo import Config as PPOConfig
from rldataflow.algorithms.ppo import policy_factory
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.flow import Plan
from rldataflow.ops import StandardizeFields, StandardMetricsReporting
from rldataflow.ops.allreduce import AllReduceTraining, GradientGroupOwner
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(PPOConfig):
    """DD-PPO settings: PPO's, per worker. Each worker trains on its own
    ``num_envs_per_worker * rollout_fragment_length`` steps per round (``train_batch_size``
    is not used); a round is ``num_workers`` times that many env steps."""

    num_workers: int = field(default=2, metadata=_h("workers in the group (>= 1)", ge=1))
    # Smaller, more frequent rounds than PPO's defaults: every round is a lock-step all-reduce
    # per minibatch, and these are the settings DD-PPO's CartPole figures were measured with.
    lr: float = field(default=1e-3, metadata=_h("Adam learning rate"))
    gamma: float = field(default=0.98, metadata=_h("discount factor"))
    lambda_: float = field(default=0.8, metadata=_h("GAE lambda"))
    rollout_fragment_length: int = field(default=64, metadata=_h("steps per env per sample"))
    entropy_coeff: float = field(default=0.0, metadata=_h("weight of the entropy bonus"))
    train_batch_size: int = field(
        default=1024, metadata=_h("not used: a round is num_workers x num_envs_per_worker x "
                                  "rollout_fragment_length env steps"))
    kl_target: float = field(default=0.01, metadata=_h("not used (no KL penalty)"))
    minibatch_size: int = field(
        default=128, metadata=_h("rows per SGD minibatch of each worker (the group's step "
                                 "averages num_workers of them)"))
    num_epochs: int = field(default=6, metadata=_h("SGD passes over each worker's batch"))
    # explicit, not PPO's by-action-space defaults: the settings DD-PPO was measured with
    obs_normalization: bool = field(default=False, metadata=_h(
        "not supported: each worker would keep its own normalizer statistics"))
    reward_scaling: bool = field(default=False, metadata=_h(
        "divide rewards by the running std of the discounted return, per worker"))
    group_timeout_s: float = field(
        default=60.0, metadata=_h("seconds a worker waits for its peers in a rendezvous or an "
                                  "all-reduce before failing", gt=0))

    def validate(self) -> None:
        AlgorithmConfig.validate(self)  # not PPO's: its minibatch check is against train_batch_size
        rows = self.num_envs_per_worker * self.rollout_fragment_length
        if self.minibatch_size > rows:
            raise ConfigError(f"config key 'minibatch_size' ({self.minibatch_size}) must be <= "
                              f"a worker's batch, num_envs_per_worker * rollout_fragment_length "
                              f"({rows})")
        if self.num_epochs < 1:
            raise ConfigError("config key 'num_epochs' must be >= 1")
        if self.obs_normalization:
            raise ConfigError("config key 'obs_normalization': DD-PPO's workers each train their "
                              "own copy, so their normalizer statistics would drift apart")
        self.validate_aids()
        if not 0 <= self.lambda_ <= 1:
            raise ConfigError("config key 'lambda_' must be in [0, 1]")
        if self.num_workers < 1:
            raise ConfigError("config key 'num_workers' must be >= 1: DD-PPO trains on the "
                              "remote workers")
        if self.kl_coeff != 0:
            raise ConfigError("config key 'kl_coeff' must be 0: DD-PPO has no KL penalty")
        if self.policies:
            raise ConfigError("config key 'policies': DD-PPO is single-agent")
        if self.output is not None:
            raise ConfigError("config key 'output' is not supported by DD-PPO: its batches "
                              "never leave the workers")


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    group = GradientGroupOwner(workers, timeout_s=config.group_timeout_s)
    train_op = AllReduceTraining(workers, num_epochs=config.num_epochs,
                                 minibatch_size=config.minibatch_size,
                                 prepare=StandardizeFields([SB.ADVANTAGES]), owner=group)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration),
                resources=[group])


@register_algorithm("ddppo")
class DDPPO(AlgorithmBuilder):
    """Decentralized distributed PPO: the workers all-reduce gradients among themselves."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    # The driver's policy is a mirror of the weights only; the optimizer state lives on the
    # workers, so a checkpoint takes rank 0's and a restore gives it to every worker.
    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        return {"worker_policy": _group(plan).member_state()}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        _group(plan).set_member_state(dict(state["worker_policy"]))


def _group(plan: Plan) -> GradientGroupOwner:
    return next(r for r in plan.resources if isinstance(r, GradientGroupOwner))
