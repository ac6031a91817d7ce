"""A3C: asynchronous advantage actor-critic.

Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning" (ICML,
arXiv:1602.01783), Algorithm S3. Each worker samples ``rollout_fragment_length`` steps with its
own copy of the weights, computes the actor-critic gradient on them (the loss of
:func:`rldataflow.algorithms.a2c.a2c_loss`: policy gradient with n-step / GAE advantages, value
regression, entropy bonus) and sends it to the learner. The learner applies each gradient as it
arrives and sends the new weights back to *that worker only*, which then samples again while the
others keep working with their slightly older weights. The paper's workers were threads
updating shared parameters lock-free (Hogwild!, Recht et al. 2011); here they are processes
and the learner owns the parameters and the optimizer, as in RLlib.

Dataflow::

    AsyncGradients(workers) -> ApplyGradients(update_all=False) -> report
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rldataflow.algorithms.a2c import a2c_loss, policy_factory, validate_actor_critic
from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.flow import Plan
from rldataflow.ops import ApplyGradients, AsyncGradients, StandardMetricsReporting
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

__all__ = ["Config", "a2c_loss", "plan", "policy_factory"]


_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(AlgorithmConfig):
    """A3C settings; the defaults reach a CartPole-v1 mean return of 150 in about 40k steps.

    One gradient step per worker sample of ``num_envs_per_worker * rollout_fragment_length``
    steps (``train_batch_size`` is not used). Mnih et al. used 5-step returns, RMSProp and an
    entropy weight of 0.01; a process round trip per step costs more than a thread's, hence the
    longer fragments here.
    """

    lr: float = field(default=1e-3, metadata=_h("Adam learning rate (the learner's optimizer)"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    lambda_: float = field(
        default=1.0, metadata=_h("GAE lambda; 1.0 gives Mnih et al.'s n-step returns minus V"))
    use_gae: bool = field(
        default=True, metadata=_h("GAE(lambda) advantages; False: discounted returns minus V"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=32, metadata=_h("steps per env in one gradient (the n of n-step bootstrapping)"))
    num_async: int = field(
        default=1, metadata=_h("gradient requests in flight per worker (more: less idle time, "
                               "more policy lag)"))
    vf_loss_coeff: float = field(default=0.5, metadata=_h("weight of the value loss"))
    entropy_coeff: float = field(default=0.01, metadata=_h("weight of the entropy bonus"))
    grad_clip: float | None = field(
        default=0.5, metadata=_h("max global gradient norm, applied on the worker (None: off)"))
    min_steps_per_iteration: int = field(
        default=2000, metadata=_h("report a result only after at least this many env steps"))

    def validate(self) -> None:
        super().validate()
        validate_actor_critic(self)
        if self.num_async < 1:
            raise ConfigError("config key 'num_async' must be >= 1")


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    train_op = (AsyncGradients(workers, num_async=config.num_async)
                .for_each(ApplyGradients(workers, update_all=False)))
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("a3c")
class A3C(AlgorithmBuilder):
    """Asynchronous advantage actor-critic: workers compute gradients, the driver applies."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)
