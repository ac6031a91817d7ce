"""MADDPG: multi-agent DDPG with centralised critics and decentralised actors.

Lowe et al. 2017, "Multi-Agent Actor-Critic for Mixed Cooperative-Competitive Environments"
(NeurIPS, arXiv:1706.02275), section 4.1. The agents of one group
(:class:`~rldataflow.envs.group_agents.GroupAgents`: one row of the group's batch is one joint
transition) each have a deterministic actor ``mu_i(o_i)`` (sees only its own observation) and
a critic ``Q_i(x, a_1..a_N)`` that sees every member's observation ``x = (o_1..o_N)`` and
every action (eq. 6, 7)::

    y_i     = r + discounts (1 - terminated) Q'_i(x', mu'_1(o'_1), ..., mu'_N(o'_N))
    J_Q     = sum_i mean_b w_b (Q_i(x_b, a_b) - y_i,b)^2
    J_mu    = -sum_i mean_b Q_i(x_b, a_1,b .. mu_i(o_i,b) .. a_N,b)   (others' actions: replay)

Targets of all actors and critics follow by ``tau`` (Polyak averaging). Both losses are taken
from the same weights, each optimizer steps on its own (the actors' pass through the critics is
:func:`~rldataflow.policies.learner.frozen`). The reward is the group's (the sum of its
members'): the cooperative setting of the paper's cooperative navigation task, where every
critic learns the team return; per-agent rewards (the competitive tasks) would need the
worker to record each member's reward and are not supported. Actions are continuous (the MPE
envs' ``continuous_actions=True``); the paper's Gumbel-softmax relaxation for discrete actions
is not implemented (QMIX covers discrete cooperative groups). Exploration adds Gaussian noise
(:mod:`rldataflow.policies.exploration_noise`) to each actor's ``[-1, 1]`` action.

Defaults follow the paper's section 5 (two-layer 64-unit MLPs, gamma 0.95, tau 0.01,
1M-row replay, Adam) except batch 256 instead of 1024 and lr 1e-3 instead of 1e-2, with
``training_intensity`` 10 (one batch of 1024 per 100 samples in the paper = 10 rows per row).

Dataflow (``rldataflow plan maddpg``) -- SAC's replay plan on the group's share::

    Concurrently(round_robin, output [1], weights from training_intensity):
      [0] rollouts -> SelectExperiences([group]) -> StoreToReplayBuffer -> BroadcastWeights
      [1] Replay(learning_starts) -> TrainOneStep
    -> report
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.algorithms import sac
from rldataflow.algorithms.qmix import GroupedConfig, grouped_workers
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.envs.group_agents import GroupLayout
from rldataflow.flow import Plan
from rldataflow.ops import ParallelRollouts, SelectExperiences, StandardMetricsReporting
from rldataflow.ops.replay import TD_ERROR
from rldataflow.policies import MultiLossLearner
from rldataflow.policies.continuous import BoxActorPolicy, DeterministicActor, QNetwork
from rldataflow.policies.exploration_noise import make_noise
from rldataflow.policies.learner import frozen
from rldataflow.utils.config import ConfigError
from rldataflow.workers import WorkerSet


def _h(text: str) -> dict[str, str]:
    return {"help": text}


def _spread_config() -> dict[str, Any]:
    return {"N": 2, "max_cycles": 25, "continuous_actions": True}


@dataclass
class Config(GroupedConfig, sac.OffPolicyConfig):
    """MADDPG settings; the defaults train two agents of MPE simple_spread (continuous)."""

    env_config: dict[str, Any] = field(
        default_factory=_spread_config, metadata=_h("keyword arguments of the env creator"))
    # MPE-sized, not SAC's MuJoCo-sized defaults (Lowe 2017: two 64-unit layers, Adam 1e-2;
    # 1e-3 and a short warm-up are what the simple_spread figures were measured with)
    hiddens: tuple[int, ...] = field(
        default=(64, 64), metadata=_h("hidden sizes of each actor and each critic"))
    actor_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the actors"))
    critic_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the critics"))
    learning_starts: int = field(
        default=1000, metadata=_h("rows in replay before the first gradient step"))
    initial_random_steps: int | None = field(
        default=0, metadata=_h("env steps of uniformly random actions at the start"))
    gamma: float = field(default=0.95, metadata=_h("discount factor (Lowe 2017: 0.95)"))
    tau: float = field(default=0.01, metadata=_h("Polyak coefficient (Lowe 2017: 0.01)"))
    train_batch_size: int = field(default=256, metadata=_h("replayed rows per gradient step"))
    training_intensity: float | None = field(
        default=10.0, metadata=_h("replayed rows per sampled row (Lowe 2017: 1024 per 100)"))
    exploration_scale: float = field(
        default=0.1, metadata=_h("Gaussian noise std in [-1, 1] action units"))

    algorithm_name = "maddpg"

    def check_env(self) -> None:
        layout = self.layout()
        if any(n is not None for n in layout.num_actions):
            raise ConfigError(f"maddpg needs continuous (Box) actions, but env {self.env!r} "
                              "gives its agents Discrete ones; for MPE set env_config "
                              "continuous_actions: true, or use qmix")

    def validate(self) -> None:
        super().validate()
        if self.exploration_scale < 0:
            raise ConfigError(f"config key 'exploration_scale' must be >= 0 "
                              f"(got {self.exploration_scale!r})")


class Actors(nn.Module):
    """One deterministic actor per member, each on its own slice of the group observation;
    ``forward`` gives the joint ``[-1, 1]`` action ``[B, sum of action sizes]``."""

    def __init__(self, layout: GroupLayout, hiddens: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.obs_bounds = np.cumsum([0, *layout.obs_sizes]).tolist()
        self.nets = nn.ModuleList(DeterministicActor((o,), np.float32, a, hiddens, activation)
                                  for o, a in zip(layout.obs_sizes, layout.action_sizes,
                                                  strict=True))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b = self.obs_bounds
        return torch.cat([net(obs[:, b[i]: b[i + 1]]) for i, net in enumerate(self.nets)], -1)


class Critics(nn.Module):
    """``Q_i(x, a)`` for every member ``i``: ``x`` the members' observations, ``a`` the joint
    action; ``forward`` gives ``[B, N]``."""

    def __init__(self, layout: GroupLayout, hiddens: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.x_size, joint = layout.obs_size, sum(layout.action_sizes)
        self.nets = nn.ModuleList(QNetwork((self.x_size,), np.float32, joint, hiddens, activation)
                                  for _ in layout.members)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = obs[:, : self.x_size]
        return torch.stack([net(x, actions) for net in self.nets], dim=-1)

    def one(self, i: int, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.nets[i](obs[:, : self.x_size], actions)


class MADDPGModel(nn.Module):
    def __init__(self, layout: GroupLayout, config: Mapping[str, Any]) -> None:
        super().__init__()
        hiddens, act = tuple(config["hiddens"]), str(config["activation"])
        self.action_bounds = np.cumsum([0, *layout.action_sizes]).tolist()
        self.actor = Actors(layout, hiddens, act)
        self.critic = Critics(layout, hiddens, act)


def maddpg_loss(policy: MADDPGPolicy, batch: dict[str, torch.Tensor], step: int = 0
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The critic and actor losses of the module docstring; ``td_error`` (mean over critics)
    per row."""
    model, targets = policy.model, policy.learner.targets
    obs, next_obs = batch[SB.OBS].float(), batch[SB.NEXT_OBS].float()
    actions = policy.normalize(batch[SB.ACTIONS])
    with torch.no_grad():
        next_q = targets["critic"].module(next_obs, targets["actor"].module(next_obs))
        discounts = batch.get(SB.DISCOUNTS)
        if discounts is None:
            discounts = torch.full_like(next_q[:, 0], float(policy.config["gamma"]))
        not_done = 1.0 - batch[SB.TERMINATEDS].float()
        y = (batch[SB.REWARDS].float().unsqueeze(-1)
             + (discounts * not_done).unsqueeze(-1) * next_q)
    q = model.critic(obs, actions)
    td = q - y
    weights = batch.get("weights")
    per_row = (td ** 2).sum(-1)
    critic_loss = (per_row * weights).mean() if weights is not None else per_row.mean()
    mu = model.actor(obs)
    bounds = model.action_bounds
    actor_loss = torch.zeros(())
    with frozen(model.critic):
        for i in range(len(bounds) - 1):
            joint = torch.cat([actions[:, : bounds[i]], mu[:, bounds[i]: bounds[i + 1]],
                               actions[:, bounds[i + 1]:]], dim=-1)
            actor_loss = actor_loss - model.critic.one(i, obs, joint).mean()
    return ({"critic": critic_loss, "actor": actor_loss},
            {"mean_q": q.detach().mean(), "mean_target": y.mean(),
             "mean_abs_td_error": td.detach().abs().mean(),
             TD_ERROR: td.detach().mean(-1)})


class MADDPGPolicy(BoxActorPolicy):
    """The group's actors (what workers run) and critics; ``config["layout"]`` is the group's
    :class:`GroupLayout` as a dict. Example::

        policy = MADDPGPolicy(obs_space, group_action_box, {"layout": layout.to_dict()})
        actions, _ = policy.compute_actions(obs)      # each actor's action + noise, joint
        policy.learn_on_batch(replayed)
    """

    DEFAULTS: dict[str, Any] = {
        "hiddens": (64, 64), "activation": "relu", "lr": 1e-3, "actor_lr": 1e-3,
        "critic_lr": 1e-3, "gamma": 0.95, "tau": 0.01, "n_step": 1, "grad_clip": None,
        "exploration_scale": 0.1,
    }

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any], seed: int | None = None) -> None:
        cfg = {**self.DEFAULTS, **dict(config)}
        layout = GroupLayout.from_dict(cfg["layout"])
        super().__init__(observation_space, action_space, cfg, loss_fn=maddpg_loss,
                         model_factory=lambda o, a, d, c: MADDPGModel(layout, c), seed=seed,
                         algorithm="maddpg")
        self.noise = make_noise("gaussian", cfg["exploration_scale"], 0.15)

    def make_learner(self) -> MultiLossLearner:
        cfg = self.config
        return MultiLossLearner(self, self.loss_fn,
                                groups={"actor": ("actor",), "critic": ("critic",)},
                                lrs={"actor": cfg["actor_lr"], "critic": cfg["critic_lr"]},
                                targets=("actor", "critic"), tau=float(cfg["tau"]))

    def actor_actions(self, obs: torch.Tensor, explore: bool) -> np.ndarray:
        a = self.model.actor(obs).numpy()
        return self.noise(a, self.np_rng) if explore else a


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    group = config.group_id()
    rollouts = ParallelRollouts(workers, mode="bulk_sync").for_each(SelectExperiences([group]))
    train_op = sac.training_flow(rollouts, workers, config, policy_id=group)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


def policy_config(config: Config, layout: GroupLayout) -> dict[str, Any]:
    return dict(layout=layout.to_dict(), hiddens=config.hiddens, activation=config.activation,
                lr=config.critic_lr, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                gamma=config.gamma, tau=config.tau, n_step=config.n_step,
                grad_clip=config.grad_clip, exploration_scale=config.exploration_scale)


@register_algorithm("maddpg")
class MADDPG(sac.OffPolicyBuilder):
    """MADDPG (centralised critics, decentralised deterministic actors; one group)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        cfg = policy_config(config, config.layout())

        def make(obs_space: spaces.Box, action_space: spaces.Box) -> MADDPGPolicy:
            return MADDPGPolicy(obs_space, action_space, cfg)

        return make

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return grouped_workers(config, runtime, self.policy_factory(config))

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)
