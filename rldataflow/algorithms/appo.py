"""APPO: asynchronous PPO, i.e. IMPALA's dataflow with PPO's clipped surrogate on V-trace
advantages (as in RLlib's APPO; PPO: Schulman et al. 2017, arXiv:1707.06347; V-trace: Espeholt
et al. 2018, arXiv:1802.01561).

A *target network*, a copy of the policy refreshed every ``target_update_frequency`` learner
updates, plays PPO's "old policy": V-trace evaluates it (``pi_old``) against the behaviour policy
``mu`` that sampled the batch, and the surrogate clips the current policy's ratio to it::

    ratio   = clip(mu(a|x) / pi_old(a|x), 0, 2) * pi(a|x) / mu(a|x)          (~ pi / pi_old)
    L_pi    = -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))       A: V-trace advantages
    L_V     = 0.5 * mean((V(x) - v_s)^2)                                      v_s: V-trace targets
    loss    = L_pi + vf_loss_coeff * L_V - entropy_coeff * H + [kl_coeff * KL(pi_old || pi)]

The optional KL penalty adapts its coefficient like PPO's (x1.5 above 2 x ``kl_target``, x0.5
below half of it), on the learner after each update.

Dataflow: IMPALA's training flow plus one step, the target network update::

    impala.build_flow(experience, workers, config, learner)
      .for_each(UpdateTargetNetwork(policy.request_target_update, every N learner updates))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rldataflow.algorithms import impala
from rldataflow.algorithms.impala import ImpalaPlan, VTraceLearner
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.ops import UpdateTargetNetwork
from rldataflow.policies import TorchPolicy
from rldataflow.policies.kl_controller import AdaptiveKLCoeff
from rldataflow.policies.learner import Learner
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.utils.config import ConfigError, describe_field
from rldataflow.workers import WorkerSet

TARGET_LOGP = "target_logp"
TARGET_DIST_INPUTS = "target_dist_inputs"


_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(impala.Config):
    """APPO settings: IMPALA's plus the surrogate clip, the target network and the KL penalty."""

    clip_param: float = field(default=0.4, metadata=_h("surrogate clip range epsilon"))
    target_update_frequency: int = field(
        default=1, metadata=_h("learner updates (train batches) between target network "
                               "updates"))
    use_kl_loss: bool = field(default=False, metadata=_h("add the adaptive KL penalty"))
    kl_coeff: float = field(default=1.0, metadata=_h("initial KL penalty weight", ge=0))
    kl_target: float = field(default=0.01, metadata=_h("KL the adaptive penalty aims for", gt=0))

    def validate(self) -> None:
        super().validate()
        if self.clip_param <= 0:
            raise ConfigError("config key 'clip_param' must be > 0")
        if self.target_update_frequency < 1:
            raise ConfigError("config key 'target_update_frequency' must be >= 1")


class AppoPolicy(TorchPolicy):
    """A policy whose learner keeps a target network and an adaptive KL coefficient.

    The driver asks for a target update with :meth:`request_target_update` (a flag); the
    learner performs it before its next update, so the target never changes mid-step.
    The target weights and the KL coefficient are part of :meth:`get_state` (checkpoints).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target_update_pending = False

    def make_learner(self) -> Learner:
        cfg = self.config
        kl = AdaptiveKLCoeff(float(cfg.get("kl_coeff", 0.0)),
                             cfg.get("kl_target") if cfg.get("use_kl_loss") else None)
        return Learner(self, self.loss_fn, targets=("target",), kl=kl)

    def update_target(self) -> None:
        super().update_target()
        self.target_update_pending = False

    def request_target_update(self) -> None:
        self.target_update_pending = True


def appo_loss(policy: AppoPolicy, batch: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Clipped surrogate on V-trace advantages + value loss (+ KL) - entropy bonus."""
    cfg = policy.config
    return actor_critic_loss(policy, batch, clip_param=cfg["clip_param"],
                             importance_key=TARGET_LOGP, kl_inputs_key=TARGET_DIST_INPUTS,
                             kl_coeff=policy.kl_coeff if cfg["use_kl_loss"] else 0.0)


class AppoLearner(VTraceLearner):
    """V-trace against the target network; target updates and KL adaptation between steps."""

    policy: AppoPolicy

    def _target_logp(self, obs: torch.Tensor, actions: torch.Tensor, dist_inputs: torch.Tensor,
                     batch: SB) -> torch.Tensor:
        target_inputs, _ = self.model_rows(self.policy.target_model, batch, obs)
        target_logp = self.policy.action_dist(target_inputs).logp(actions)
        batch[TARGET_DIST_INPUTS] = target_inputs.numpy()
        batch[TARGET_LOGP] = target_logp.numpy()
        return target_logp

    def train_columns(self) -> tuple[str, ...]:
        return (*super().train_columns(), TARGET_LOGP, TARGET_DIST_INPUTS)

    def before_update(self) -> None:
        if self.policy.target_update_pending:
            self.policy.update_target()

    def after_update(self, stats: dict[str, float]) -> None:
        stats["kl_coeff"] = self.policy.learner.kl.update(stats.get("kl", 0.0))


def policy_factory(config: Config):
    return impala.policy_factory(config, AppoPolicy, appo_loss, clip_param=config.clip_param,
                                 use_kl_loss=config.use_kl_loss, kl_coeff=config.kl_coeff,
                                 kl_target=config.kl_target)


def make_workers(config: Config, runtime: Any) -> WorkerSet:
    return impala.make_workers(config, runtime, factory=policy_factory(config))


def plan(workers: WorkerSet, config: Config) -> ImpalaPlan:
    learner = impala.make_learner(workers, config, AppoLearner)
    batches, aggregators = impala.experience(workers, config, learner)
    with ImpalaPlan.building(aggregators):
        train_op = impala.build_flow(batches, workers, config, learner).for_each(
            UpdateTargetNetwork(learner.policy.request_target_update,
                                config.target_update_frequency * config.train_batch_size,
                                by_steps_trained=True))
        return ImpalaPlan(impala.report(train_op, workers, config), learner, aggregators)


@register_algorithm("appo")
class APPO(impala.IMPALA):
    """Asynchronous PPO: IMPALA's dataflow with a clipped surrogate and a target network."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> ImpalaPlan:
        return plan(workers, config)
