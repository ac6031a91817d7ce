"""PG: vanilla policy gradient, REINFORCE with a learned state-value baseline.

REINFORCE (Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8) ascends ``E[grad log pi(a|s) * (G_t - b(s_t))]``.
The baseline ``b(s) = V(s)`` is learned by regression on the returns (Sutton & Barto 2018,
"Reinforcement Learning: An Introduction", 2nd ed., section 13.4, "REINFORCE with Baseline")::

    G_t       = r_t + gamma * G_{t+1}          (bootstrapped with V on truncation / fragment cut)
    A_t       = G_t - V(s_t)
    loss      = -mean(log pi(a_t|s_t) * A_t) + vf_loss_coeff * 0.5 * mean((V(s_t) - G_t)^2)
                - entropy_coeff * mean(H[pi(.|s_t)])

Dataflow::

    bulk-sync rollouts -> ConcatBatches(train_batch_size) -> TrainOneStep -> report
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.options import TrainingAids, aid_policy_config
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.flow import LocalIterator, Plan
from rldataflow.ops import ConcatBatches, ParallelRollouts, StandardMetricsReporting, TrainOneStep
from rldataflow.policies import TorchPolicy
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(TrainingAids, AlgorithmConfig):
    """PG settings; the defaults reach a CartPole-v1 mean return of 150 in about 75k steps.

    One SGD step per train batch (on-policy: the batch is thrown away after it), as in
    REINFORCE; the value baseline only reduces the variance of the estimate.
    """

    lr: float = field(default=2e-3, metadata=_h("Adam learning rate"))
    gamma: float = field(default=0.99, metadata=_h("discount factor of the returns"))
    train_batch_size: int = field(
        default=2048, metadata=_h("env steps per gradient step (one step per batch)"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=128, metadata=_h("steps per env per sample (a cut fragment bootstraps with V)"))
    use_critic: bool = field(
        default=True, metadata=_h("subtract a learned value baseline from the returns "
                                  "(False: plain REINFORCE, advantages = returns)"))
    vf_loss_coeff: float = field(default=0.5, metadata=_h("weight of the baseline's loss"))
    entropy_coeff: float = field(default=0.0, metadata=_h("weight of the entropy bonus"))
    grad_clip: float | None = field(
        default=None, metadata=_h("max global gradient norm (None: no clipping)"))

    def validate(self) -> None:
        super().validate()
        self.validate_aids()
        if self.vf_loss_coeff < 0:
            raise ConfigError("config key 'vf_loss_coeff' must be >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError("config key 'grad_clip' must be > 0 or None")


def pg_loss(policy: TorchPolicy, batch: dict[str, torch.Tensor]
            ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Score-function (REINFORCE) loss with a value baseline; see the module docstring."""
    return actor_critic_loss(policy, batch, use_critic=bool(policy.config["use_critic"]))


def policy_factory(config: Config):
    policy_config = dict(
        hiddens=config.hiddens, activation=config.activation, lr=config.lr,
        gamma=config.gamma, use_gae=False, use_critic=config.use_critic,
        grad_clip=config.grad_clip, vf_loss_coeff=config.vf_loss_coeff,
        entropy_coeff=config.entropy_coeff,
        **aid_policy_config(config))

    def make(obs_space, action_space) -> TorchPolicy:
        return TorchPolicy(obs_space, action_space, policy_config, loss_fn=pg_loss,
                           seed=config.seed)

    return make


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                  policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """PG's training sub-flow: experience in, ``(batch, learner stats)`` out (``policy_id``:
    one policy of a multi-agent worker, so PG can be a branch of a larger plan)."""
    return (batches
            .for_each(ConcatBatches(min_batch_size=config.train_batch_size))
            .for_each(TrainOneStep(workers, policy_id=policy_id)))


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    train_op = training_flow(rollouts, workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("pg")
class PG(AlgorithmBuilder):
    """Vanilla policy gradient (REINFORCE with reward-to-go)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                      policy_id: str | None = None) -> LocalIterator[Any]:
        return training_flow(batches, workers, config, policy_id)
