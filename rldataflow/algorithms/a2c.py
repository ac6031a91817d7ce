"""A2C: advantage actor-critic, the synchronous variant of A3C.

Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning" (ICML,
arXiv:1602.01783), section 4 / Algorithm S3: the policy gradient with advantage ``A_t``, a value
regression and an entropy bonus (their eq. for ``grad log pi(a_t|s_t) (R_t - V(s_t))
+ beta * grad H(pi(s_t))``). The synchronous form waits for all workers, then takes one step on
the union of their batches (the A2C baseline of Wu et al. 2017, "Scalable trust-region method
for deep RL using Kronecker-factored approximation", arXiv:1708.05144, and OpenAI Baselines).
The advantages are GAE(lambda) (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", arXiv:1506.02438)::

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_k (gamma * lambda)^k delta_{t+k}           value target: A_t + V(s_t)
    loss    = -mean(log pi(a_t|s_t) * A_t) + vf_loss_coeff * 0.5 * mean((V(s_t) - target_t)^2)
              - entropy_coeff * mean(H[pi(.|s_t)])

Dataflow (one step per train batch)::

    bulk-sync rollouts -> ConcatBatches(train_batch_size) -> TrainOneStep -> report

With ``microbatch_size`` (gradient accumulation: a train batch too large for one pass)::

    bulk-sync rollouts -> ConcatBatches(microbatch_size) -> ComputeGradients
      -> batch(train_batch_size // microbatch_size) -> AverageGradients
      -> ApplyGradients(update_all=True) -> report
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
from rldataflow.ops import (
    ApplyGradients,
    AverageGradients,
    ComputeGradients,
    ConcatBatches,
    ParallelRollouts,
    StandardMetricsReporting,
    TrainOneStep,
)
from rldataflow.policies import TorchPolicy
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(TrainingAids, AlgorithmConfig):
    """A2C settings; the defaults reach a CartPole-v1 mean return of 400 in about 135k steps.

    Mnih et al. used RMSProp, 5-step returns and an entropy weight of 0.01. Here: Adam, 32-step
    fragments (GAE with lambda 1 is their n-step return minus V) and a 512-step synchronous
    batch, because each gradient step costs a round trip to the workers; lambda 0.95 or 0.99
    learned CartPole less reliably across seeds than lambda 1.
    """

    lr: float = field(default=2e-3, metadata=_h("Adam learning rate"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    lambda_: float = field(
        default=1.0, metadata=_h("GAE lambda; 1.0 gives Mnih et al.'s n-step returns minus V"))
    use_gae: bool = field(
        default=True, metadata=_h("GAE(lambda) advantages; False: discounted returns minus V"))
    train_batch_size: int = field(
        default=512, metadata=_h("env steps per gradient step (summed over workers)"))
    microbatch_size: int | None = field(
        default=None, metadata=_h("if set: gradients of microbatches of at least this many "
                                  "steps (whole rollout rounds) are averaged, one step per "
                                  "train_batch_size // microbatch_size of them"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=32, metadata=_h("steps per env per sample (the n of n-step bootstrapping)"))
    vf_loss_coeff: float = field(default=0.5, metadata=_h("weight of the value loss"))
    entropy_coeff: float = field(default=0.01, metadata=_h("weight of the entropy bonus"))
    grad_clip: float | None = field(
        default=0.5, metadata=_h("max global gradient norm (None: no clipping)"))
    min_steps_per_iteration: int = field(
        default=2000, metadata=_h("report a result only after at least this many env steps"))

    def validate(self) -> None:
        super().validate()
        self.validate_aids()
        validate_actor_critic(self)
        if self.microbatch_size is not None and not (
                1 <= self.microbatch_size <= self.train_batch_size):
            raise ConfigError(f"config key 'microbatch_size' ({self.microbatch_size}) must be "
                              f"in [1, train_batch_size ({self.train_batch_size})]")


def validate_actor_critic(config: Any) -> None:
    """The range checks A2C and A3C share (their loss has the same knobs)."""
    if not 0 <= config.lambda_ <= 1:
        raise ConfigError("config key 'lambda_' must be in [0, 1]")
    if config.vf_loss_coeff < 0:
        raise ConfigError("config key 'vf_loss_coeff' must be >= 0")
    if config.grad_clip is not None and config.grad_clip <= 0:
        raise ConfigError("config key 'grad_clip' must be > 0 or None")


def a2c_loss(policy: TorchPolicy, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Actor-critic loss with an entropy bonus (Mnih et al. 2016); see the module docstring."""
    return actor_critic_loss(policy, batch)


def policy_factory(config: Any):
    """Policies with :func:`a2c_loss` (also used by A3C, whose Config has the same fields)."""
    policy_config = dict(
        hiddens=config.hiddens, activation=config.activation, lr=config.lr,
        gamma=config.gamma, lambda_=config.lambda_, use_gae=config.use_gae, use_critic=True,
        grad_clip=config.grad_clip, vf_loss_coeff=config.vf_loss_coeff,
        entropy_coeff=config.entropy_coeff,
        **aid_policy_config(config))

    def make(obs_space, action_space) -> TorchPolicy:
        return TorchPolicy(obs_space, action_space, policy_config, loss_fn=a2c_loss,
                           seed=config.seed)

    return make


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                  policy_id: str | None = None) -> LocalIterator[Any]:
    """A2C's training sub-flow: experience in, one gradient step per train batch out
    (``policy_id``: one policy of a multi-agent worker; not with ``microbatch_size``)."""
    if config.microbatch_size is None:
        return (batches
                .for_each(ConcatBatches(min_batch_size=config.train_batch_size))
                .for_each(TrainOneStep(workers, policy_id=policy_id)))
    if policy_id is not None:
        raise ValueError("A2C's microbatch path trains the single-agent policy only")
    num_microbatches = max(1, config.train_batch_size // config.microbatch_size)
    return (batches
            .for_each(ConcatBatches(min_batch_size=config.microbatch_size))
            .for_each(ComputeGradients(workers))
            .batch(num_microbatches)
            .for_each(AverageGradients())
            .for_each(ApplyGradients(workers, update_all=True)))


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    train_op = training_flow(rollouts, workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("a2c")
class A2C(AlgorithmBuilder):
    """Synchronous advantage actor-critic."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                      policy_id: str | None = None) -> LocalIterator[Any]:
        return training_flow(batches, workers, config, policy_id)
