"""DDPG: deep deterministic policy gradient.

Lillicrap et al. 2015, "Continuous control with deep reinforcement learning" (ICLR 2016,
arXiv:1509.02971), algorithm 1: a deterministic actor ``mu(s)``, a critic ``Q(s, a)``, target
copies of both that follow by Polyak averaging, and exploration noise added to the actor's
action::

    y       = r + discounts * (1 - terminated) * Q'(s', mu'(s'))
    J_Q     = mean_i w_i (Q(s_i, a_i) - y_i)^2
    J_mu    = -mean_i Q(s_i, mu(s_i))          (the deterministic policy gradient, eq. 6)

Both losses are taken from the same weights and each optimizer steps on its own
(:class:`~rldataflow.policies.MultiLossLearner`; the actor's pass through the critic is
:func:`~rldataflow.policies.learner.frozen`), then the targets move by ``tau``. ``rewards`` and
``discounts`` come from n-step postprocessing (n = 1: ``gamma``), ``w_i`` are prioritized
replay's importance weights (1 for uniform replay), ``td_error = Q - y``.

Exploration (:mod:`rldataflow.policies.exploration_noise`): ``"ou"``, the Ornstein-Uhlenbeck
process of the paper (theta 0.15, sigma 0.2), or ``"gaussian"`` (``N(0, 0.1^2)``, what
Fujimoto et al. 2018 found as good in their re-tuned DDPG), added in ``[-1, 1]`` action units
and clipped; evaluation acts with ``mu(s)``.

Defaults: not the paper's (lr 1e-4 actor / 1e-3 critic, L2 1e-2 on the critic, tau 0.001,
batch 64, 400-300 units, OU noise) but close to Fujimoto et al.'s re-tuned "OurDDPG" baseline
(tau 0.005, batch 256, Gaussian noise 0.1, no weight decay, one gradient step per env step)
with the MuJoCo sizes shared with SAC and TD3 (256x256 units, Adam 3e-4) and 10k uniform
random steps before learning (the SB3 Zoo's MuJoCo ``learning_starts``). Pendulum-v1 learns
faster with 64x64, lr 1e-3, ``learning_starts=1000``, ``initial_random_steps=0`` (see
``docs/algorithms.md``). The plan is SAC's (:func:`rldataflow.algorithms.sac.plan`)::

    Concurrently(round_robin, output [1], weights from training_intensity):
      [0] rollouts -> StoreToReplayBuffer -> BroadcastWeights
      [1] Replay(learning_starts) -> TrainOneStep -> [UpdatePriorities]
    -> report

Checkpoints hold the actor, the critic, both targets and both optimizers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.algorithms.registry import register_algorithm
from rldataflow.algorithms.sac import OffPolicyBuilder, OffPolicyConfig, random_steps
from rldataflow.data import SampleBatch as SB
from rldataflow.ops.replay import TD_ERROR
from rldataflow.policies import MultiLossLearner
from rldataflow.policies.continuous import BoxActorPolicy, DeterministicActor, QNetwork
from rldataflow.policies.exploration_noise import make_noise
from rldataflow.policies.learner import frozen
from rldataflow.utils.config import ConfigError


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Config(OffPolicyConfig):
    """DDPG settings (MuJoCo defaults; with the Pendulum settings of the module docstring DDPG
    reaches a Pendulum-v1 return of -250, mean of the last 10 episodes, within 20k env
    steps)."""

    actor_lr: float = field(
        default=3e-4, metadata=_h("Adam learning rate of the actor (Lillicrap 2015: 1e-4)"))
    critic_lr: float = field(
        default=3e-4, metadata=_h("Adam learning rate of the critic (Lillicrap 2015: 1e-3)"))
    exploration_noise: Literal["gaussian", "ou"] = field(
        default="gaussian", metadata=_h("exploration noise: gaussian, or ou (Ornstein-Uhlenbeck, "
                                        "Lillicrap 2015)"))
    exploration_scale: float = field(
        default=0.1, metadata=_h("noise std (gaussian) or sigma (ou), in [-1, 1] action units"))
    ou_theta: float = field(default=0.15, metadata=_h("mean reversion of the OU process"))

    algorithm_name = "ddpg"

    def validate(self) -> None:
        super().validate()
        if self.exploration_scale < 0:
            raise ConfigError(f"config key 'exploration_scale' must be >= 0 "
                              f"(got {self.exploration_scale!r})")
        if not 0 < self.ou_theta <= 1:
            raise ConfigError(f"config key 'ou_theta' must be in (0, 1] (got {self.ou_theta!r})")


class DDPGModel(nn.Module):
    """A deterministic tanh actor and one critic."""

    def __init__(self, obs_space: spaces.Box, action_dim: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        shape, dtype = obs_space.shape, obs_space.dtype
        hiddens, act = tuple(config["hiddens"]), str(config["activation"])
        self.actor = DeterministicActor(shape, dtype, action_dim, hiddens, act)
        self.critic = QNetwork(shape, dtype, action_dim, hiddens, act)


def bootstrap_target(policy: DDPGPolicy, batch: dict[str, torch.Tensor],
                     next_q: torch.Tensor) -> torch.Tensor:
    """``r + discounts * (1 - terminated) * next_q`` (``discounts`` default ``gamma``)."""
    discounts = batch.get(SB.DISCOUNTS)
    if discounts is None:
        discounts = torch.full_like(next_q, float(policy.config["gamma"]))
    return batch[SB.REWARDS].float() + discounts * (1.0 - batch[SB.TERMINATEDS].float()) * next_q


def weighted_mean(per_row: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = batch.get("weights")
    return (per_row * weights).mean() if weights is not None else per_row.mean()


def ddpg_loss(policy: DDPGPolicy, batch: dict[str, torch.Tensor], step: int = 0
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The critic and actor losses of the module docstring; ``td_error`` per row."""
    model = policy.model
    obs, next_obs = batch[SB.OBS], batch[SB.NEXT_OBS]
    actions = policy.normalize(batch[SB.ACTIONS])
    targets = policy.learner.targets
    with torch.no_grad():
        next_q = targets["critic"].module(next_obs, targets["actor"].module(next_obs))
        y = bootstrap_target(policy, batch, next_q)
    q = model.critic(obs, actions)
    td_error = q - y
    critic_loss = weighted_mean(td_error ** 2, batch)
    with frozen(model.critic):
        actor_loss = -model.critic(obs, model.actor(obs)).mean()
    return ({"critic": critic_loss, "actor": actor_loss},
            {"mean_q": q.detach().mean(), "mean_target": y.mean(),
             "mean_abs_td_error": td_error.detach().abs().mean(), TD_ERROR: td_error.detach()})


class DDPGPolicy(BoxActorPolicy):
    """A deterministic actor with exploration noise; learns with :func:`ddpg_loss`.

    ``noise_scale`` (set from the config, or per worker by Ape-X DDPG) is the noise's std /
    sigma; a float or one per env row. Example::

        policy = DDPGPolicy(obs_space, gymnasium.spaces.Box(-2, 2, (1,)), {"hiddens": (64, 64)})
        actions, _ = policy.compute_actions(obs)             # mu(s) + noise, within [-2, 2]
        stats = policy.learn_on_batch(replayed)
    """

    DEFAULTS: dict[str, Any] = {
        "hiddens": (64, 64), "activation": "relu", "lr": 1e-3, "actor_lr": 1e-3,
        "critic_lr": 1e-3, "gamma": 0.99, "tau": 0.005, "n_step": 1, "grad_clip": None,
        "adam_eps": 1e-8, "exploration_noise": "gaussian", "exploration_scale": 0.1,
        "ou_theta": 0.15,
    }
    #: the model class (TD3: twin critics)
    model_cls: type[nn.Module] = DDPGModel
    algorithm = "ddpg"

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any] | None = None, seed: int | None = None,
                 loss_fn: Any = None) -> None:
        cfg = {**self.DEFAULTS, **dict(config or {})}
        model_cls = self.model_cls
        super().__init__(observation_space, action_space, cfg, loss_fn=loss_fn or ddpg_loss,
                         model_factory=lambda obs, act, _dim, c: model_cls(
                             obs, int(np.prod(act.shape)), c),
                         seed=seed, algorithm=self.algorithm)
        self.noise = make_noise(str(cfg["exploration_noise"]), cfg["exploration_scale"],
                                float(cfg["ou_theta"]))

    @property
    def noise_scale(self) -> float | np.ndarray:
        return self.noise.scale if hasattr(self.noise, "scale") else self.noise.sigma

    @noise_scale.setter
    def noise_scale(self, value: float | np.ndarray) -> None:
        if hasattr(self.noise, "scale"):
            self.noise.scale = value
        else:
            self.noise.sigma = value

    def learner_kwargs(self) -> dict[str, Any]:
        return {}

    def make_learner(self) -> MultiLossLearner:
        cfg = self.config
        return MultiLossLearner(self, self.loss_fn,
                                groups={"actor": ("actor",), "critic": ("critic",)},
                                lrs={"actor": cfg["actor_lr"], "critic": cfg["critic_lr"]},
                                targets=("actor", "critic"), tau=float(cfg["tau"]),
                                **self.learner_kwargs())

    def actor_actions(self, obs: torch.Tensor, explore: bool) -> np.ndarray:
        a = self.model.actor(obs).numpy()
        return self.noise(a, self.np_rng) if explore else a


def policy_config(config: Config) -> dict[str, Any]:
    return dict(hiddens=config.hiddens, activation=config.activation, lr=config.critic_lr,
                actor_lr=config.actor_lr, critic_lr=config.critic_lr, gamma=config.gamma,
                tau=config.tau, n_step=config.n_step, grad_clip=config.grad_clip,
                exploration_noise=config.exploration_noise,
                exploration_scale=config.exploration_scale, ou_theta=config.ou_theta,
                initial_random_steps=random_steps(config))


@register_algorithm("ddpg")
class DDPG(OffPolicyBuilder):
    """Deep deterministic policy gradient (Gaussian or Ornstein-Uhlenbeck exploration)."""

    Config = Config
    policy_cls: type[DDPGPolicy] = DDPGPolicy

    def policy_config(self, config: Config) -> dict[str, Any]:
        return policy_config(config)

    def policy_factory(self, config: Config) -> Any:
        cfg, cls = self.policy_config(config), self.policy_cls

        def make(obs_space: spaces.Box, action_space: spaces.Box) -> DDPGPolicy:
            return cls(obs_space, action_space, cfg)

        return make
