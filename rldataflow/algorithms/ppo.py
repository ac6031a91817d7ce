"""PPO: proximal policy optimization (Schulman et al. 2017, "Proximal Policy Optimization
Algorithms", arXiv:1707.06347), clipped surrogate, clipped value loss and an adaptive KL penalty.

Dataflow::

    bulk-sync rollouts -> ConcatBatches(train_batch_size) -> StandardizeFields(advantages)
      -> TrainOneStep(num_epochs, minibatch_size) -> BroadcastWeights -> UpdateKL -> report

Multi-agent (``policies`` set): the one rollout stream is duplicated, one branch per policy;
each branch selects its policy's experiences and runs the same :func:`training_flow` for that
policy (with its own config overrides); the branches run concurrently (see
:func:`multi_agent_training_flow`). ``train_batch_size`` then counts the policy's agent steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from gymnasium import spaces

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.options import TrainingAids, aid_policy_config
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.flow import Concurrently, LocalIterator, Plan
from rldataflow.ops import (
    BroadcastWeights,
    ConcatBatches,
    ParallelRollouts,
    SelectExperiences,
    StandardizeFields,
    StandardMetricsReporting,
    TrainOneStep,
)
from rldataflow.policies import TorchPolicy
from rldataflow.policies.kl_controller import AdaptiveKLCoeff
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.policies.policy_spec import policy_config
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(TrainingAids, AlgorithmConfig):
    """PPO settings. The defaults follow the published ones (gamma 0.99, GAE lambda 0.95, clip
    0.2, Adam 3e-4, 64-row minibatches; Schulman et al. 2017, the RL Baselines3 Zoo), with
    four that depend on the action space (:data:`ACTION_SPACE_DEFAULTS`: discrete, 4 epochs
    and entropy bonus 0.01; Box, 10 epochs, no entropy bonus, observation normalization and
    reward scaling). They solve CartPole-v1 in ~100k env steps (~10 s on 2 cores) and reach a
    mean return of 200 on LunarLander-v3 within 1M (docs/benchmarks.md)."""

    lr: float = field(default=3e-4, metadata=_h("Adam learning rate"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    lambda_: float = field(default=0.95, metadata=_h("GAE lambda"))
    train_batch_size: int = field(default=4096, metadata=_h("env steps per training step"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(default=256, metadata=_h("steps per env per sample"))
    minibatch_size: int = field(default=64, metadata=_h("rows per SGD minibatch"))
    num_epochs: int | None = field(
        default=None, metadata=_h("SGD passes over each train batch (None: 4 for discrete "
                                  "actions, 10 for Box actions)"))
    clip_param: float = field(default=0.2, metadata=_h("surrogate clip range epsilon"))
    vf_clip_param: float | None = field(
        default=None, metadata=_h("clip value updates to this range around the old value "
                                  "(None: no value clipping)"))
    vf_loss_coeff: float = field(default=0.5, metadata=_h("weight of the value loss"))
    entropy_coeff: float | None = field(
        default=None, metadata=_h("weight of the entropy bonus (None: 0.01 for discrete "
                                  "actions, 0 for Box actions)"))
    obs_normalization: bool | None = field(default=None, metadata=_h(
        "standardize observations by running mean/std (None: on for Box actions with flat "
        "observations and no LSTM; kept in the model, synced, checkpointed)"))
    reward_scaling: bool | None = field(default=None, metadata=_h(
        "divide rewards by the running std of the discounted return (None: on for Box "
        "actions; reported returns stay raw)"))
    kl_coeff: float = field(default=0.0, metadata=_h("initial KL penalty weight (0: off)"))
    kl_target: float = field(default=0.01, metadata=_h("KL the adaptive penalty aims for"))
    grad_clip: float | None = field(default=0.5, metadata=_h("max global gradient norm", gt=0))
    vf_share_layers: bool = field(default=False, metadata=_h("one trunk for policy and value"))
    action_mode: Literal["clip", "squash"] = field(
        default="clip", metadata=_h("Box actions: clip a Gaussian sample, or tanh-squash it"))
    use_lstm: bool = field(
        default=False, metadata=_h("encoder -> LSTM -> heads (memory); see docs/recurrent.md"))
    lstm_cell_size: int = field(default=64, metadata=_h("LSTM cell size (use_lstm)", ge=1))
    max_seq_len: int = field(
        default=20, metadata=_h("use_lstm: rows per training sequence at most; minibatches "
                                "hold minibatch_size // max_seq_len sequences", ge=1))

    def validate(self) -> None:
        super().validate()
        self.validate_aids()
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError(f"config key 'minibatch_size' ({self.minibatch_size}) must be <= "
                              f"train_batch_size ({self.train_batch_size})")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ConfigError("config key 'num_epochs' must be >= 1")
        if not 0 <= self.lambda_ <= 1:
            raise ConfigError("config key 'lambda_' must be in [0, 1]")


#: PPO's defaults that depend on the action space, taken by config values left at None.
#: Box actions: the MuJoCo settings of Schulman et al. 2017 (table 3: 10 epochs) and of CleanRL's
#: ppo_continuous_action (Huang et al. 2022, "The 37 Implementation Details of PPO": no entropy
#: bonus, observation normalization, reward scaling); discrete actions: the Atari / classic
#: control settings (4 epochs, entropy bonus 0.01; Schulman et al. 2017, table 5).
ACTION_SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "discrete": {"num_epochs": 4, "entropy_coeff": 0.01, "obs_normalization": False,
                 "reward_scaling": False},
    "box": {"num_epochs": 10, "entropy_coeff": 0.0, "obs_normalization": True,
            "reward_scaling": True},
}


def action_space_defaults(action_space: spaces.Space, obs_space: spaces.Space | None = None,
                          use_lstm: bool = False) -> dict[str, Any]:
    """The :data:`ACTION_SPACE_DEFAULTS` for these spaces. Observation normalization needs flat
    observations and a feed-forward model, so it stays off for images and LSTMs.

    Example::

        >>> action_space_defaults(spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (3,)))["num_epochs"]
        10
    """
    out = dict(ACTION_SPACE_DEFAULTS["box" if isinstance(action_space, spaces.Box)
                                     else "discrete"])
    flat = obs_space is None or len(getattr(obs_space, "shape", None) or ()) == 1
    out["obs_normalization"] = out["obs_normalization"] and flat and not use_lstm
    return out


def resolve_defaults(values: Mapping[str, Any], action_space: spaces.Space,
                     obs_space: spaces.Space | None = None) -> dict[str, Any]:
    """``values`` with each of the :data:`ACTION_SPACE_DEFAULTS` keys that is None filled in
    for the action space."""
    auto = action_space_defaults(action_space, obs_space, bool(values.get("use_lstm")))
    return {**values, **{k: auto[k] for k in auto if k in values and values[k] is None}}


def ppo_loss(policy: TorchPolicy, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Clipped surrogate + (optionally clipped) value loss + KL penalty - entropy bonus."""
    cfg = policy.config
    return actor_critic_loss(policy, batch, clip_param=cfg["clip_param"],
                             vf_clip_param=cfg["vf_clip_param"],
                             kl_inputs_key=SB.ACTION_DIST_INPUTS, kl_coeff=policy.kl_coeff)


def policy_factory(config: Config):
    policy_config = dict(
        hiddens=config.hiddens, activation=config.activation, lr=config.lr,
        gamma=config.gamma, lambda_=config.lambda_, grad_clip=config.grad_clip,
        vf_share_layers=config.vf_share_layers, action_mode=config.action_mode,
        clip_param=config.clip_param, vf_clip_param=config.vf_clip_param,
        vf_loss_coeff=config.vf_loss_coeff, entropy_coeff=config.entropy_coeff,
        use_lstm=config.use_lstm, lstm_cell_size=config.lstm_cell_size,
        max_seq_len=config.max_seq_len,
        **aid_policy_config(config))

    def make(obs_space, action_space) -> TorchPolicy:
        kl = AdaptiveKLCoeff(config.kl_coeff, config.kl_target)  # one per policy
        return TorchPolicy(obs_space, action_space,
                           resolve_defaults(policy_config, action_space, obs_space),
                           loss_fn=ppo_loss, seed=config.seed, learner_options=dict(kl=kl))

    return make


class UpdateKL:
    """Adapt the KL penalty after each step: x1.5 when KL > 2 x target, x0.5 when < target / 2."""

    __name__ = "UpdateKL"

    def __init__(self, workers: WorkerSet, kl_target: float,
                 policy_id: str | None = None) -> None:
        self.workers = workers
        self.kl_target = kl_target
        self.policy_id = policy_id

    def __call__(self, item: tuple[SB, dict[str, float]]) -> tuple[SB, dict[str, float]]:
        policy = self.workers.local_worker().get_policy(self.policy_id)
        coeff = policy.learner.kl
        coeff.target = self.kl_target
        item[1]["kl_coeff"] = coeff.update(item[1].get("kl", 0.0))
        return item


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                  policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """PPO's training sub-flow: a stream of experience in, ``(batch, learner stats)`` out.

    ``policy_id`` trains one policy of a multi-agent worker, so PPO can be one branch of a
    larger plan (see ``examples/ppo_and_dqn.py``).
    """
    num_epochs = config.num_epochs
    if num_epochs is None:  # by the action space of the policy this flow trains
        policy = workers.local_worker().get_policy(policy_id)
        num_epochs = action_space_defaults(policy.action_space)["num_epochs"]
    return (batches
            .for_each(ConcatBatches(min_batch_size=config.train_batch_size))
            .for_each(StandardizeFields([SB.ADVANTAGES]))
            .for_each(TrainOneStep(workers, num_epochs=num_epochs,
                                   minibatch_size=config.minibatch_size, broadcast=False,
                                   policy_id=policy_id))
            .for_each(BroadcastWeights(workers))
            .for_each(UpdateKL(workers, config.kl_target, policy_id)))


def multi_agent_training_flow(rollouts: LocalIterator[Any], workers: WorkerSet, config: Config,
                              policy_ids: list[str] | None = None
                              ) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """Train several PPO policies from one stream of ``MultiAgentBatch`` es.

    One branch per policy (``policy_ids``, default: all of ``config.policies``): the stream is
    duplicated, each branch keeps its policy's ``SampleBatch`` (``SelectExperiences``) and runs
    :func:`training_flow` with that policy's config (``policy_config(config, pid)``: its
    ``policies[pid]`` overrides applied). The branches run with ``Concurrently(mode="async")``:
    policies that fill their train batch at different rates (a shared policy of three agents
    next to one of a single agent) each train as soon as theirs is full, and none can block the
    bounded ``duplicate`` (round-robin turns would wait on the slow branch). Emits each
    branch's ``(batch, learner stats)``. The same shape composes PPO with other algorithms'
    sub-flows (e.g. a DQN branch) on one rollout stream.
    """
    ids = list(config.policies) if policy_ids is None else list(policy_ids)
    if not ids:
        raise ValueError("multi_agent_training_flow needs policies (config.policies is empty)")

    def branch(stream: LocalIterator[Any], pid: str) -> LocalIterator[Any]:
        return training_flow(stream.for_each(SelectExperiences([pid])), workers,
                             policy_config(config, pid), policy_id=pid)

    if len(ids) == 1:
        return branch(rollouts, ids[0])
    streams = rollouts.duplicate(len(ids))
    return Concurrently([branch(s, pid) for s, pid in zip(streams, ids, strict=True)],
                        mode="async")


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    rollouts = ParallelRollouts(workers, mode="bulk_sync")
    if config.policies:
        train_op = multi_agent_training_flow(rollouts, workers, config)
    else:
        train_op = training_flow(rollouts, workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


@register_algorithm("ppo")
class PPO(AlgorithmBuilder):
    """Proximal policy optimization."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                      policy_id: str | None = None) -> LocalIterator[Any]:
        return training_flow(batches, workers, config, policy_id)

    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        local = workers.local_worker()
        if not config.policies:
            return {"kl_coeff": float(local.policy.kl_coeff)}
        return {"kl_coeff": {pid: float(local.get_policy(pid).kl_coeff)
                             for pid in local.policy_ids()}}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        local = workers.local_worker()
        kl = state["kl_coeff"]
        if isinstance(kl, Mapping):
            for pid, value in kl.items():
                local.get_policy(pid).kl_coeff = float(value)
        else:
            local.policy.kl_coeff = float(kl)
