"""TD3: twin delayed deep deterministic policy gradient.

Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods" (ICML,
arXiv:1802.09477), algorithm 1: DDPG (:mod:`rldataflow.algorithms.ddpg`) with three changes:

* clipped double Q (section 4.2, eq. 10): twin critics, the target is the smaller of the two
  target critics' values;
* target policy smoothing (section 5.3, eq. 14): the target action is the target actor's plus
  clipped Gaussian noise, ``a' = clip(mu'(s') + clip(N(0, sigma~), -c, c), -1, 1)``,
  ``sigma~ = 0.2``, ``c = 0.5`` (in ``[-1, 1]`` action units);
* delayed policy updates (section 5.2): the actor and the targets are updated once every
  ``policy_delay = 2`` critic updates.

::

    y    = r + discounts * (1 - terminated) * min_j Q'_j(s', a')
    J_Q  = mean_i w_i sum_j (Q_j(s_i, a_i) - y_i)^2
    J_mu = -mean_i Q_1(s_i, mu(s_i))                  (every policy_delay-th update)

Exploration: ``N(0, 0.1^2)`` added to ``mu(s)`` (the paper's), or DDPG's OU process.
The paper's other settings: Adam 1e-3, batch 100, tau 0.005, 400-300 units, 10k uniform
random start-up steps on HalfCheetah; here its authors' later code's (batch 256, Adam 3e-4,
256x256) with 10k uniform steps; Pendulum-v1 learns faster with 64x64 and lr 1e-3 (see
``docs/algorithms.md``). The plan is SAC's and DDPG's
(``rldataflow plan td3``). Checkpoints hold the actor, the twin critics, their targets, both
optimizers and the update count that sets the delay's phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from rldataflow.algorithms import ddpg
from rldataflow.algorithms.ddpg import DDPGPolicy, bootstrap_target, weighted_mean
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.ops.replay import TD_ERROR
from rldataflow.policies.continuous import DeterministicActor, TwinQ
from rldataflow.policies.learner import frozen
from rldataflow.utils.config import ConfigError


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Config(ddpg.Config):
    """TD3 settings (DDPG's plus the three changes; MuJoCo defaults, with DDPG's Pendulum
    settings a Pendulum-v1 return of -250, last-10-episode mean, within 20k env steps)."""

    policy_delay: int = field(
        default=2, metadata=_h("critic updates per actor and target update (Fujimoto 2018: 2)"))
    target_noise: float = field(
        default=0.2, metadata=_h("std of the target policy smoothing noise (sigma~)"))
    target_noise_clip: float = field(
        default=0.5, metadata=_h("the smoothing noise is clipped to +-this (c)"))

    algorithm_name = "td3"

    def validate(self) -> None:
        super().validate()
        for key, ok in (("policy_delay", self.policy_delay >= 1),
                        ("target_noise", self.target_noise >= 0),
                        ("target_noise_clip", self.target_noise_clip >= 0)):
            if not ok:
                raise ConfigError(f"config key {key!r} must be >= "
                                  f"{1 if key == 'policy_delay' else 0} "
                                  f"(got {getattr(self, key)!r})")


class TD3Model(nn.Module):
    """A deterministic tanh actor and twin critics."""

    def __init__(self, obs_space: spaces.Box, action_dim: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        shape, dtype = obs_space.shape, obs_space.dtype
        hiddens, act = tuple(config["hiddens"]), str(config["activation"])
        self.actor = DeterministicActor(shape, dtype, action_dim, hiddens, act)
        self.critic = TwinQ(shape, dtype, action_dim, hiddens, act)


def smoothed_target_actions(target_actions: torch.Tensor, noise: torch.Tensor, sigma: float,
                            clip: float) -> torch.Tensor:
    """Target policy smoothing: ``clip(mu'(s') + clip(sigma * noise, -c, c), -1, 1)`` for
    standard normal ``noise`` (Fujimoto et al. 2018, eq. 14)."""
    return (target_actions + (sigma * noise).clamp(-clip, clip)).clamp(-1.0, 1.0)


def td3_loss(policy: TD3Policy, batch: dict[str, torch.Tensor], step: int = 0
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The critic loss every update, the actor's on every ``policy_delay``-th (``step`` is
    the 0-based update index: updates ``d-1, 2d-1, ...`` train the actor, and the learner
    moves the targets after them)."""
    model, cfg = policy.model, policy.config
    obs, next_obs = batch[SB.OBS], batch[SB.NEXT_OBS]
    actions = policy.normalize(batch[SB.ACTIONS])
    targets = policy.learner.targets
    with torch.no_grad():
        mu_next = targets["actor"].module(next_obs)
        next_a = smoothed_target_actions(mu_next, policy.target_policy_noise(mu_next.shape),
                                         float(cfg["target_noise"]),
                                         float(cfg["target_noise_clip"]))
        q1_t, q2_t = targets["critic"].module(next_obs, next_a)
        y = bootstrap_target(policy, batch, torch.minimum(q1_t, q2_t))
    q1, q2 = model.critic(obs, actions)
    critic_loss = weighted_mean((q1 - y) ** 2 + (q2 - y) ** 2, batch)
    td_error = 0.5 * ((q1 - y).abs() + (q2 - y).abs()).detach()
    losses = {"critic": critic_loss}
    stats: dict[str, Any] = {"mean_q": q1.detach().mean(), "mean_target": y.mean(),
                             "mean_abs_td_error": td_error.mean(), TD_ERROR: td_error}
    if (step + 1) % int(cfg["policy_delay"]) == 0:
        with frozen(model.critic):
            losses["actor"] = -model.critic.q1(obs, model.actor(obs)).mean()
    return losses, stats


class TD3Policy(DDPGPolicy):
    """DDPG's policy with twin critics, :func:`td3_loss` and targets updated every
    ``policy_delay`` updates (with the actor)."""

    DEFAULTS: dict[str, Any] = {**DDPGPolicy.DEFAULTS, "policy_delay": 2, "target_noise": 0.2,
                                "target_noise_clip": 0.5}
    model_cls = TD3Model
    algorithm = "td3"

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any] | None = None, seed: int | None = None) -> None:
        super().__init__(observation_space, action_space, config, seed, loss_fn=td3_loss)

    def learner_kwargs(self) -> dict[str, Any]:
        return {"target_update_every": int(self.config["policy_delay"])}

    def target_policy_noise(self, shape: torch.Size) -> torch.Tensor:
        """Standard normal noise for :func:`smoothed_target_actions` (the policy's generator)."""
        return torch.randn(shape, generator=self.generator)


@register_algorithm("td3")
class TD3(ddpg.DDPG):
    """Twin delayed DDPG (clipped double Q, delayed actor, target policy smoothing)."""

    Config = Config
    policy_cls = TD3Policy

    def policy_config(self, config: Config) -> dict[str, Any]:
        return dict(ddpg.policy_config(config), policy_delay=config.policy_delay,
                    target_noise=config.target_noise,
                    target_noise_clip=config.target_noise_clip)
