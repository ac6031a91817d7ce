"""QMIX: monotonic value-function factorisation for cooperative multi-agent RL.

Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent
Reinforcement Learning" (ICML, arXiv:1803.11485). The agents of one group (a
:class:`~rldataflow.envs.group_agents.GroupAgents` "super-agent": joint observation, joint
action, team reward) each have a utility ``Q_a(o_a, u_a)`` from one shared network (with a
one-hot agent id appended to its input, section 6); a mixing network combines the chosen
utilities into ``Q_tot``, with weights produced by hypernetworks from the global state ``s``
and made non-negative by ``abs`` (eq. 5, section 4.1), so ``dQ_tot / dQ_a >= 0``::

    h     = elu(|W_1(s)|^T q + b_1(s))          W_1(s): Linear(s -> N x E), b_1(s): Linear
    Q_tot = |W_2(s)|^T h + V(s)                 W_2(s): Linear(s -> E),  V(s): Linear-ReLU-Linear
    y     = r + gamma (1 - terminated) Q_tot'(argmax_u Q_a(o'_a, u) [double Q] , s')
    L     = sum_{b,t} mask_{b,t} (Q_tot(b, t) - y(b, t))^2 / sum mask            (eq. 6)

``Q_tot'`` is the target network (agent network and mixer, copied every
``target_network_update_freq`` env steps); with ``double_q`` the next actions are the online
agents' greedy ones (van Hasselt et al. 2016, as in the authors' PyMARL), else the target's.
Acting is epsilon-greedy per agent on its own ``Q_a`` (decentralised execution).

The agent network is an MLP, not the paper's GRU: rollout workers do not carry recurrent state
yet. Replay still holds whole episodes (:class:`~rldataflow.data.EpisodeReplayBuffer`, batches of
``train_batch_size`` episodes padded and masked), as in the paper; each padded step is a full
transition ``(o, s, u, r, o', s')``, so the loss is exact for the MLP agents. Units of
``train_batch_size``, ``buffer_size``, ``learning_starts`` and ``training_intensity`` are
episodes. The global state is the env's ``state()`` when it has one, else all agents'
observations (see GroupAgents). Defaults are the paper's (batch 32 episodes, 5000-episode
buffer, gamma 0.99, mixing embed 32, epsilon 1 -> 0.05, grad clip 10) except Adam at 1e-3
instead of RMSprop 5e-4, target copies every 1000 env steps instead of 200 episodes and a
10k-step epsilon anneal instead of 50k. These learn the paper's two-step game (with the
settings of its test); on MPE simple_spread QMIX does not clearly beat random actions within
40k env steps (measured figures in ``docs/algorithms.md``).

Dataflow (``rldataflow plan qmix``)::

    Concurrently(round_robin, output [1]):
      [0] rollouts(complete episodes) -> SelectExperiences([group]) -> StoreToReplayBuffer(episodes)
          -> BroadcastWeights
      [1] Replay(episodes) -> TrainOneStep -> UpdateTargetNetwork
    -> report
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import EpisodeReplayBuffer, LinearSchedule
from rldataflow.data import SampleBatch as SB
from rldataflow.data.episode_replay_buffer import MASK
from rldataflow.envs.group_agents import GroupedEnvCreator, GroupLayout
from rldataflow.flow import Concurrently, Plan
from rldataflow.ops import (
    BroadcastWeights,
    ParallelRollouts,
    Replay,
    SelectExperiences,
    StandardMetricsReporting,
    StoreToReplayBuffer,
    TrainOneStep,
    UpdateTargetNetwork,
)
from rldataflow.ops.replay import ROWS_ADDED
from rldataflow.policies import TorchPolicy
from rldataflow.policies.models import MLP
from rldataflow.utils.config import AlgorithmConfig, ConfigError
from rldataflow.workers import MultiAgentRolloutWorker, WorkerSet


def _h(text: str) -> dict[str, str]:
    return {"help": text}


def _spread_config() -> dict[str, Any]:
    return {"N": 2, "max_cycles": 25, "continuous_actions": False}


@dataclass
class GroupedConfig(AlgorithmConfig):
    """Fields of the algorithms that train one group of agents as a super-agent."""

    env: Union[str, Any] = field(  # noqa: UP007 - the base class's annotation
        default="mpe2.simple_spread_v3",
        metadata=_h("PettingZoo env: registered name, PettingZoo id, module path or creator"))
    env_config: dict[str, Any] = field(
        default_factory=_spread_config, metadata=_h("keyword arguments of the env creator"))
    groups: dict[str, list[str]] | None = field(
        default=None, metadata=_h("one group id -> its member agents (None: all agents, "
                                  "group 'team')"))
    num_workers: int = field(default=0, metadata=_h("remote rollout workers; 0 samples on "
                                                    "the driver"))
    num_envs_per_worker: int = field(default=1, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=25, metadata=_h("env steps per env per sample (whole episodes are returned)"))
    min_steps_per_iteration: int = field(
        default=1000, metadata=_h("report a result only after at least this many env steps"))

    def validate(self) -> None:
        super().validate()
        if self.groups is not None and len(self.groups) != 1:
            raise ConfigError(f"config key 'groups' must hold exactly one group (got "
                              f"{sorted(self.groups)})")
        if self.policies:
            raise ConfigError("config key 'policies' must stay empty: the group is the one "
                              "policy (set 'groups' instead)")

    def group_id(self) -> str:
        return next(iter(self.groups)) if self.groups else "team"

    def env_creator(self) -> GroupedEnvCreator:
        return GroupedEnvCreator(self.env, self.groups)

    def layout(self) -> GroupLayout:
        """The group's observation / action layout, from one probe env."""
        env = self.env_creator()(self.env_config)
        try:
            return env.layout(self.group_id())
        finally:
            env.close()


def grouped_workers(config: GroupedConfig, runtime: Any, factory: Any,
                    batch_mode: str = "truncate_episodes") -> WorkerSet:
    """Multi-agent rollout workers on the grouped env, the group driven by ``factory``."""
    kwargs = dict(env=config.env_creator(), env_config=config.env_config,
                  num_envs=config.num_envs_per_worker, policy_factories={config.group_id():
                                                                         factory},
                  policy_mapping_fn="shared", batch_mode=batch_mode,
                  rollout_fragment_length=config.rollout_fragment_length, seed=config.seed,
                  include_next_obs=True)
    return WorkerSet(runtime, config.num_workers, kwargs,
                     restart_failed=config.restart_failed_workers,
                     worker_cls=MultiAgentRolloutWorker)


@dataclass
class Config(GroupedConfig):
    """QMIX settings; the defaults train two agents of MPE simple_spread (discrete actions)."""

    lr: float = field(default=1e-3, metadata=_h("learning rate (paper: RMSprop 5e-4)"))
    optimizer: Literal["adam", "rmsprop"] = field(
        default="adam", metadata=_h("optimizer (paper: rmsprop)"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    hiddens: tuple[int, ...] = field(default=(64, 64),
                                     metadata=_h("hidden sizes of the shared agent network"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("activation of the agent network"))
    agent_id: bool = field(default=True, metadata=_h("append a one-hot agent id to each "
                                                     "agent's input (parameter sharing)"))
    mixing_embed_dim: int = field(default=32, metadata=_h("mixing network width E (paper: 32)"))
    double_q: bool = field(default=True, metadata=_h("next actions from the online agents"))
    grad_clip: float | None = field(default=10.0, metadata=_h("max gradient norm"))
    train_batch_size: int = field(default=32, metadata=_h("episodes per gradient step"))
    buffer_size: int = field(default=5000, metadata=_h("replay capacity in episodes"))
    learning_starts: int = field(default=32, metadata=_h("episodes in replay before training"))
    training_intensity: float | None = field(
        default=None, metadata=_h("replayed episodes per stored episode (None: "
                                  "train_batch_size, one step per episode)"))
    target_network_update_freq: int = field(
        default=1000, metadata=_h("env steps between target-network copies"))
    initial_epsilon: float = field(default=1.0, metadata=_h("exploration rate at the start"))
    final_epsilon: float = field(default=0.05, metadata=_h("exploration rate after the anneal"))
    epsilon_timesteps: int = field(default=10_000,
                                   metadata=_h("env steps of the linear epsilon anneal"))

    algorithm_name = "qmix"

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.train_batch_size >= 1, "train_batch_size", "must be >= 1"),
            (self.buffer_size >= self.train_batch_size, "buffer_size",
             "must be >= train_batch_size"),
            (1 <= self.learning_starts <= self.buffer_size, "learning_starts",
             "must be in [1, buffer_size]"),
            (self.mixing_embed_dim >= 1, "mixing_embed_dim", "must be >= 1"),
            (0 <= self.final_epsilon <= self.initial_epsilon <= 1, "final_epsilon",
             "must satisfy 0 <= final_epsilon <= initial_epsilon <= 1"),
            (self.training_intensity is None or self.training_intensity > 0,
             "training_intensity", "must be > 0 or None"),
        ]
        for ok, key, text in checks:
            if not ok:
                raise ConfigError(f"config key {key!r} {text} (got {getattr(self, key)!r})")


# -- the networks ----------------------------------------------------------------------------
class QMixer(nn.Module):
    """``Q_tot = |W_2(s)|^T elu(|W_1(s)|^T q + b_1(s)) + V(s)`` (see the module docs).

    Example::

        >>> mixer = QMixer(num_agents=2, state_dim=3, embed_dim=4)
        >>> mixer(torch.zeros(5, 2), torch.zeros(5, 3)).shape
        torch.Size([5])
    """

    def __init__(self, num_agents: int, state_dim: int, embed_dim: int = 32) -> None:
        super().__init__()
        self.num_agents, self.embed_dim = int(num_agents), int(embed_dim)
        self.hyper_w1 = nn.Linear(state_dim, self.num_agents * self.embed_dim)
        self.hyper_b1 = nn.Linear(state_dim, self.embed_dim)
        self.hyper_w2 = nn.Linear(state_dim, self.embed_dim)
        self.hyper_v = nn.Sequential(nn.Linear(state_dim, self.embed_dim), nn.ReLU(),
                                     nn.Linear(self.embed_dim, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``q``: ``[..., N]`` chosen utilities, ``state``: ``[..., S]`` -> ``Q_tot [...]``."""
        lead = q.shape[:-1]
        q = q.reshape(-1, 1, self.num_agents)
        s = state.reshape(q.shape[0], -1)
        w1 = self.hyper_w1(s).abs().view(-1, self.num_agents, self.embed_dim)
        b1 = self.hyper_b1(s).view(-1, 1, self.embed_dim)
        hidden = F.elu(torch.bmm(q, w1) + b1)
        w2 = self.hyper_w2(s).abs().view(-1, self.embed_dim, 1)
        v = self.hyper_v(s).view(-1, 1, 1)
        return (torch.bmm(hidden, w2) + v).view(lead)


class QMIXModel(nn.Module):
    """The shared agent network and the mixer, reading a group's flat observation."""

    def __init__(self, layout: GroupLayout, config: Mapping[str, Any]) -> None:
        super().__init__()
        sizes, nums = set(layout.obs_sizes), set(layout.num_actions)
        if len(sizes) != 1 or len(nums) != 1 or None in nums:
            raise ValueError(f"QMIX shares one agent network: the members {layout.members} need "
                             f"equal observation sizes and Discrete actions of one size (got "
                             f"obs {layout.obs_sizes}, actions {layout.num_actions})")
        self.n, self.obs_dim, self.num_actions = layout.num_members, sizes.pop(), int(nums.pop())
        self.state_dim = layout.state_size or layout.obs_size
        self.agent_id = bool(config["agent_id"])
        in_dim = self.obs_dim + (self.n if self.agent_id else 0)
        self.body = MLP(in_dim, tuple(config["hiddens"]), str(config["activation"]))
        self.head = nn.Linear(self.body.out_dim, self.num_actions)
        self.mixer = QMixer(self.n, self.state_dim, int(config["mixing_embed_dim"]))
        self.register_buffer("ids", torch.eye(self.n), persistent=False)

    def agent_q(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [..., D]`` (the group's flat observation) -> utilities ``[..., N, A]``."""
        x = obs[..., : self.n * self.obs_dim].reshape(*obs.shape[:-1], self.n, self.obs_dim)
        if self.agent_id:
            x = torch.cat([x, self.ids.expand(*obs.shape[:-1], self.n, self.n)], dim=-1)
        return self.head(self.body(x))

    def state(self, obs: torch.Tensor) -> torch.Tensor:
        """The global state part of the flat observation (all observations if none)."""
        if obs.shape[-1] > self.n * self.obs_dim:
            return obs[..., self.n * self.obs_dim:]
        return obs

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.agent_q(obs).flatten(-2)


def qmix_loss(policy: QMIXPolicy, batch: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The masked TD loss of the module docstring on ``[B, T, ...]`` episode batches."""
    model, target = policy.model, policy.target_model
    obs, next_obs = batch[SB.OBS].float(), batch[SB.NEXT_OBS].float()
    actions = batch[SB.ACTIONS].long()
    mask = batch[MASK].float()
    chosen = model.agent_q(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    q_tot = model.mixer(chosen, model.state(obs))
    with torch.no_grad():
        q_next = target.agent_q(next_obs)
        chooser = model.agent_q(next_obs) if policy.config["double_q"] else q_next
        best = chooser.argmax(dim=-1, keepdim=True)
        next_tot = target.mixer(q_next.gather(-1, best).squeeze(-1), target.state(next_obs))
        not_done = 1.0 - batch[SB.TERMINATEDS].float()
        y = batch[SB.REWARDS].float() + float(policy.config["gamma"]) * not_done * next_tot
    td = (q_tot - y) * mask
    steps = mask.sum().clamp(min=1.0)
    loss = (td ** 2).sum() / steps
    return loss, {"loss": loss, "mean_q_tot": (q_tot * mask).sum() / steps,
                  "mean_target": (y * mask).sum() / steps,
                  "mean_abs_td_error": td.abs().sum() / steps}


#: the columns a QMIX transition keeps (plus eps_id / env_id to split episodes)
EPISODE_COLUMNS = (SB.OBS, SB.ACTIONS, SB.REWARDS, SB.NEXT_OBS, SB.TERMINATEDS, SB.EPS_ID,
                   SB.ENV_ID)


def keep_transitions(policy: TorchPolicy, batch: SB) -> SB:
    return SB({k: batch[k] for k in EPISODE_COLUMNS}, stats=batch.stats, info=batch.info)


class QMIXPolicy(TorchPolicy):
    """A group's agents (epsilon-greedy on their own utilities) and the mixer they learn with.

    ``config["layout"]`` is the group's :class:`GroupLayout` as a dict. Example::

        policy = QMIXPolicy(obs_space, MultiDiscrete([5, 5]), {"layout": layout.to_dict()})
        actions, _ = policy.compute_actions(obs)        # [B, N] ints
        policy.learn_on_batch(episode_buffer.sample(32))
    """

    DEFAULTS: dict[str, Any] = {
        "hiddens": (64, 64), "activation": "relu", "lr": 1e-3, "gamma": 0.99, "grad_clip": 10.0,
        "agent_id": True, "mixing_embed_dim": 32, "double_q": True, "initial_epsilon": 1.0,
        "final_epsilon": 0.05, "epsilon_timesteps": 10_000, "epsilon_step_scale": 1,
    }

    def __init__(self, observation_space: spaces.Box, action_space: spaces.MultiDiscrete,
                 config: Mapping[str, Any], seed: int | None = None) -> None:
        if not isinstance(action_space, spaces.MultiDiscrete):
            raise ValueError(f"QMIX needs a group of Discrete-action agents, but the group's "
                             f"action space is {action_space}; for Box actions use maddpg")
        cfg = {**self.DEFAULTS, **dict(config)}
        layout = GroupLayout.from_dict(cfg["layout"])
        super().__init__(observation_space, action_space, cfg, loss_fn=qmix_loss,
                         postprocess_fn=keep_transitions,
                         model_factory=lambda o, a, d, c: QMIXModel(layout, c), seed=seed,
                         learner_options=dict(targets=("target",)))
        self.epsilon_schedule = LinearSchedule(float(cfg["initial_epsilon"]),
                                               float(cfg["final_epsilon"]),
                                               int(cfg["epsilon_timesteps"]))
        self.epsilon_step_scale = int(cfg["epsilon_step_scale"])
        self.env_steps = 0

    @property
    def epsilon(self) -> float:
        return self.epsilon_schedule.value(self.env_steps * self.epsilon_step_scale)

    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per agent: its greedy action, replaced by a uniform one with probability epsilon."""
        with torch.no_grad():
            actions = self.model.agent_q(self._obs_tensor(obs)).argmax(dim=-1).numpy()
        if explore:
            rng, eps = self.np_rng, self.epsilon
            random = rng.integers(0, self.model.num_actions, actions.shape)
            actions = np.where(rng.random(actions.shape) < eps, random, actions)
            self.env_steps += len(actions)
        return actions, {}

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["env_steps"] = int(self.env_steps)
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.env_steps = int(state.get("env_steps", self.env_steps))


# -- the plan ----------------------------------------------------------------------------------
def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    group = config.group_id()
    episodes = EpisodeReplayBuffer(config.buffer_size, seed=config.seed)
    policy = workers.local_worker().get_policy(group)
    store_op = (ParallelRollouts(workers, mode="bulk_sync")
                .for_each(SelectExperiences([group]))
                .for_each(StoreToReplayBuffer(local_buffer=episodes))
                .for_each(BroadcastWeights(workers)))
    replay_op = (Replay(local_buffer=episodes, batch_size=config.train_batch_size,
                        learning_starts=config.learning_starts,
                        training_intensity=config.training_intensity or config.train_batch_size)
                 .for_each(TrainOneStep(workers, broadcast=False, policy_id=group))
                 .for_each(UpdateTargetNetwork(policy.update_target,
                                               config.target_network_update_freq)))
    # Replay is capped per stored episode; enough turns per store turn to reach the cap.
    turns = max(1, config.num_workers) * config.num_envs_per_worker
    train_op = Concurrently([store_op, replay_op], mode="round_robin", output_indexes=[1],
                            round_robin_weights=[1, max(1, turns)])
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


def policy_config(config: Config, layout: GroupLayout) -> dict[str, Any]:
    return dict(layout=layout.to_dict(), hiddens=config.hiddens, activation=config.activation,
                lr=config.lr, optimizer=config.optimizer, gamma=config.gamma,
                grad_clip=config.grad_clip, agent_id=config.agent_id,
                mixing_embed_dim=config.mixing_embed_dim, double_q=config.double_q,
                initial_epsilon=config.initial_epsilon, final_epsilon=config.final_epsilon,
                epsilon_timesteps=config.epsilon_timesteps,
                epsilon_step_scale=max(1, config.num_workers))


@register_algorithm("qmix")
class QMIX(AlgorithmBuilder):
    """QMIX (monotonic mixing of per-agent utilities; one group of agents)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        cfg = policy_config(config, config.layout())

        def make(obs_space: spaces.Box, action_space: spaces.MultiDiscrete) -> QMIXPolicy:
            return QMIXPolicy(obs_space, action_space, cfg)

        return make

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return grouped_workers(config, runtime, self.policy_factory(config),
                               batch_mode="complete_episodes")

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        if workers.remote_workers():
            steps = sum(workers.foreach_worker(
                lambda w: w.get_policy(config.group_id()).env_steps, local=False))
        else:
            steps = workers.local_worker().get_policy(config.group_id()).env_steps
        return {"sampler_env_steps": int(steps)}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        """Exploration clocks back; the episode buffer restarts empty."""
        total, group = int(state.get("sampler_env_steps", 0)), config.group_id()
        if workers.remote_workers():
            share = total // workers.num_remote_workers
            workers.foreach_worker(lambda w: setattr(w.get_policy(group), "env_steps", share),
                                   local=False)
        else:
            workers.local_worker().get_policy(group).env_steps = total
        plan.metrics.counters[ROWS_ADDED] = 0
