"""DQN: deep Q-learning with double Q, dueling heads, n-step returns and prioritized replay.

* Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518):
  experience replay, a target network ``Q'`` copied every C steps, epsilon-greedy exploration
  annealed linearly, and the TD error clipped to [-1, 1] (here: the Huber loss, whose gradient
  is that clipped error).
* van Hasselt et al. 2016, "Deep Reinforcement Learning with Double Q-learning" (AAAI,
  arXiv:1509.06461), eq. 4: the online net picks the next action, the target net values it.
* Wang et al. 2016, "Dueling Network Architectures for Deep RL" (ICML, arXiv:1511.06581), eq. 9:
  ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.
* Schaul et al. 2016, "Prioritized Experience Replay" (ICLR, arXiv:1511.05952): rows drawn with
  probability ``p_i^alpha / sum_k p_k^alpha``, ``p_i = |delta_i| + eps``, each row's loss scaled
  by ``w_i = (N P(i))^-beta / max_j w_j``, beta annealed to 1.
* n-step returns (Sutton 1988; as used by Hessel et al. 2018, "Rainbow", and Horgan et al. 2018).

The target of a replayed transition (``rewards`` = n-step discounted sum, ``discounts`` =
``gamma**m`` for the ``m <= n`` steps actually summed, both from
:func:`~rldataflow.policies.compute_nstep`)::

    a*     = argmax_a Q(next_obs, a)                          (double Q; max over Q' without)
    target = rewards + discounts * (1 - terminateds) * Q'(next_obs, a*)
    loss   = mean_i  w_i * huber(Q(obs_i, a_i) - target_i)

A truncated episode (time limit) is *not* terminated: its ``next_obs`` is the final observation
and the target bootstraps from it.

Dataflow (``rldataflow plan dqn``)::

    Concurrently(round_robin, output [1], weights from training_intensity):
      [0] rollouts -> StoreToReplayBuffer -> BroadcastWeights
      [1] Replay(learning_starts) -> TrainOneStep -> UpdatePriorities -> UpdateTargetNetwork
    -> report

The defaults are tuned for CartPole-v1 on a small machine (64x64 MLP, Adam 2e-3, batch 64,
target copy every 250 env steps, 16 replayed rows per sampled row, epsilon 1 -> 0.04 over 10k
steps, n = 3, alpha 0.6, beta 0.4 -> 1); Mnih et al. used RMSProp (2.5e-4), a target copy every
10k updates and epsilon 1 -> 0.1 over 1M frames on Atari, Schaul et al. alpha 0.6, beta 0.4 -> 1.

Checkpoints hold the policy (online and target networks, optimizer, the exploration step
counter); the replay buffer's contents are *not* saved: a restored run refills it (for
``learning_starts`` rows) before training again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from rldataflow.algorithms.base import AlgorithmBuilder, dataset_output
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import LinearSchedule, ReplayBuffer
from rldataflow.data import SampleBatch as SB
from rldataflow.envs import UnsupportedSpaceError
from rldataflow.flow import Concurrently, LocalIterator, Plan
from rldataflow.ops import (
    BroadcastWeights,
    ParallelRollouts,
    Replay,
    StandardMetricsReporting,
    StoreToReplayBuffer,
    TrainOneStep,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from rldataflow.ops.replay import ROWS_ADDED, TD_ERROR, make_replay_buffer
from rldataflow.policies import QModel, TorchPolicy, compute_nstep
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

#: Columns a DQN transition keeps after n-step postprocessing (the rest is not shipped/stored).
TRANSITION_COLUMNS = (SB.OBS, SB.ACTIONS, SB.REWARDS, SB.NEXT_OBS, SB.TERMINATEDS, SB.DISCOUNTS)


_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class QConfig(AlgorithmConfig):
    """Fields shared by DQN and Ape-X: Q network, loss, replay and target network."""

    lr: float = field(default=2e-3, metadata=_h("Adam learning rate"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    hiddens: tuple[int, ...] = field(default=(64, 64), metadata=_h("hidden layer sizes"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("activation of the hidden layers"))
    dueling: bool = field(default=True, metadata=_h("dueling heads V + A - mean A (Wang 2016)"))
    double_q: bool = field(default=True, metadata=_h("double Q targets (van Hasselt 2016)"))
    n_step: int = field(default=3, metadata=_h("steps summed in the return before bootstrapping"))
    huber_delta: float = field(default=1.0, metadata=_h("Huber loss threshold (Mnih 2015: 1)"))
    grad_clip: float | None = field(
        default=10.0, metadata=_h("max global gradient norm (None: no clipping)"))
    train_batch_size: int = field(default=64, metadata=_h("replayed rows per SGD step"))
    buffer_size: int = field(default=100_000, metadata=_h("replay capacity in rows"))
    prioritized_replay: bool = field(
        default=True, metadata=_h("proportional prioritized replay (Schaul 2016); else uniform"))
    prioritized_replay_alpha: float = field(default=0.6, metadata=_h("priority exponent alpha"))
    prioritized_replay_beta: float = field(
        default=0.4, metadata=_h("initial importance-weight exponent beta"))
    learning_starts: int = field(
        default=1000, metadata=_h("rows in replay before the first SGD step", ge=0))
    replay_frame_dedup: Literal["auto", "on", "off"] = field(
        default="auto", metadata=_h("store each frame of uint8 frame-stacked obs once in replay "
                                    "(auto: when obs are uint8 (H, W, K>1) stacks)"))
    target_network_update_freq: int = field(
        default=250, metadata=_h("copy the online net to the target net every this many env "
                                 "steps sampled (DQN) / rows trained (Ape-X)"))

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.n_step >= 1, "n_step", "must be >= 1"),
            (self.buffer_size >= self.train_batch_size, "buffer_size",
             "must be >= train_batch_size"),
            (self.learning_starts <= self.buffer_size, "learning_starts",
             "must be <= buffer_size"),
            (self.prioritized_replay_alpha >= 0, "prioritized_replay_alpha", "must be >= 0"),
            (self.prioritized_replay_beta >= 0, "prioritized_replay_beta", "must be >= 0"),
            (self.target_network_update_freq >= 1, "target_network_update_freq", "must be >= 1"),
            (self.huber_delta > 0, "huber_delta", "must be > 0"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or None"),
        ]
        for ok, key, text in checks:
            if not ok:
                raise ConfigError(f"config key {key!r} {text} (got {getattr(self, key)!r})")


@dataclass
class Config(QConfig):
    """DQN settings; the defaults reach a CartPole-v1 mean return of 400 in well under 100k
    env steps (sampling on the driver: on a small machine SGD, not sampling, is the cost)."""

    num_workers: int = field(
        default=0, metadata=_h("remote rollout workers; 0 samples on the driver"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(default=4, metadata=_h("steps per env per sample"))
    training_intensity: float | None = field(
        default=16.0, metadata=_h("replayed rows per sampled row (None: one train batch per "
                                  "sample round)"))
    final_prioritized_replay_beta: float = field(
        default=1.0, metadata=_h("beta reached after beta_annealing_steps env steps", ge=0, le=1))
    beta_annealing_steps: int = field(
        default=100_000, metadata=_h("env steps over which beta is annealed linearly", ge=0))
    initial_epsilon: float = field(default=1.0, metadata=_h("exploration epsilon at step 0"))
    final_epsilon: float = field(default=0.04, metadata=_h("exploration epsilon at the end"))
    epsilon_timesteps: int = field(
        default=10_000, metadata=_h("env steps over which epsilon is annealed linearly", ge=0))
    min_steps_per_iteration: int = field(
        default=1000, metadata=_h("report a result only after at least this many env steps"))

    def validate(self) -> None:
        super().validate()
        if self.training_intensity is not None and self.training_intensity <= 0:
            raise ConfigError("config key 'training_intensity' must be > 0 or None")
        for key in ("initial_epsilon", "final_epsilon"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"config key {key!r} must be in [0, 1]")


# -- the policy -------------------------------------------------------------------------------
def q_model_factory(obs_space: spaces.Box, action_space: spaces.Discrete, num_outputs: int,
                    config: Mapping[str, Any]) -> QModel:
    return QModel(obs_space.shape, obs_space.dtype, num_outputs, hiddens=tuple(config["hiddens"]),
                  activation=config["activation"], dueling=bool(config["dueling"]))


def dqn_loss(policy: DQNPolicy, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Double-Q n-step Huber loss weighted by importance weights (see the module docstring).

    The per-row TD errors ``Q(s, a) - target`` are the ``td_error`` stat (one per row: the
    learner writes them into the batch's ``td_error`` column).
    """
    cfg = policy.config
    obs, next_obs = batch[SB.OBS], batch[SB.NEXT_OBS]
    if cfg["double_q"]:  # one forward pass of the online net for obs and next_obs together
        q_both = policy.model(torch.cat([obs, next_obs]))
        q, chooser = q_both[: len(obs)], q_both[len(obs):].detach()
    else:
        q = policy.model(obs)
    q_taken = q.gather(1, batch[SB.ACTIONS].long().view(-1, 1)).squeeze(1)
    with torch.no_grad():
        q_next_target = policy.target_model(next_obs)
        if not cfg["double_q"]:
            chooser = q_next_target
        best = chooser.argmax(dim=1, keepdim=True)
        q_next = q_next_target.gather(1, best).squeeze(1)
        not_done = 1.0 - batch[SB.TERMINATEDS].float()
        discounts = batch.get(SB.DISCOUNTS)
        if discounts is None:
            discounts = torch.full_like(q_next, float(cfg["gamma"]))
        target = batch[SB.REWARDS].float() + discounts * not_done * q_next
    td_error = q_taken - target
    per_row = F.huber_loss(q_taken, target, reduction="none", delta=float(cfg["huber_delta"]))
    weights = batch.get("weights")
    loss = (per_row * weights).mean() if weights is not None else per_row.mean()
    return loss, {"loss": loss, "mean_q": q_taken.mean(), "mean_target": target.mean(),
                  "mean_abs_td_error": td_error.abs().mean(), TD_ERROR: td_error.detach()}


def nstep_postprocess(policy: DQNPolicy, batch: SB) -> SB:
    """n-step transitions (per fragment, never across envs or episodes); keeps only the columns
    the loss reads."""
    out = compute_nstep(batch, int(policy.config["n_step"]), float(policy.config["gamma"]))
    return SB({k: out[k] for k in TRANSITION_COLUMNS}, stats=batch.stats, info=batch.info)


class DQNPolicy(TorchPolicy):
    """A Q network, its target copy, epsilon-greedy acting and the DQN loss.

    Exploration: ``epsilon`` follows ``LinearSchedule(initial_epsilon, final_epsilon,
    epsilon_timesteps)`` over ``env_steps * epsilon_step_scale`` (``env_steps`` counts the
    observations this policy acted on with ``explore=True``; the scale is the number of sampling
    workers, so the schedule runs on global env steps), unless ``fixed_epsilon`` is set (Ape-X).

    ``learn_on_batch`` takes one SGD step on the whole batch and writes each row's TD error into
    the batch's ``td_error`` column (for :class:`~rldataflow.ops.UpdatePriorities`). A lock
    makes learning, weight reads and target updates safe from a learner thread.

    Example::

        policy = DQNPolicy(obs_space, gymnasium.spaces.Discrete(2), {"n_step": 3}, seed=0)
        actions, _ = policy.compute_actions(obs)           # epsilon-greedy
        stats = policy.learn_on_batch(replayed)            # replayed["td_error"] now set
        policy.update_target()
    """

    LOSS_FN = staticmethod(dqn_loss)
    POSTPROCESS_FN = staticmethod(nstep_postprocess)
    MODEL_FACTORY = staticmethod(q_model_factory)
    DEFAULTS: dict[str, Any] = {
        "hiddens": (64, 64), "activation": "relu", "lr": 1e-3, "gamma": 0.99, "grad_clip": 10.0,
        "dueling": True, "double_q": True, "n_step": 3, "huber_delta": 1.0,
        "initial_epsilon": 1.0, "final_epsilon": 0.02, "epsilon_timesteps": 10_000,
        "epsilon_step_scale": 1, "adam_eps": 1e-8,
    }

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Discrete,
                 config: Mapping[str, Any] | None = None, seed: int | None = None) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise UnsupportedSpaceError(
                f"DQN and Ape-X need a Discrete action space, but the env's is {action_space}; "
                "for continuous actions use ppo, appo or impala")
        cfg = {**self.DEFAULTS, **dict(config or {})}
        cls = type(self)  # subclasses (R2D2) swap the loss, the postprocessing and the model
        super().__init__(observation_space, action_space, cfg, loss_fn=cls.LOSS_FN,
                         postprocess_fn=cls.POSTPROCESS_FN, model_factory=cls.MODEL_FACTORY,
                         seed=seed, learner_options=dict(targets=("target",), fused_adam=True))
        self.num_actions = int(action_space.n)
        self.epsilon_schedule = LinearSchedule(float(cfg["initial_epsilon"]),
                                               float(cfg["final_epsilon"]),
                                               int(cfg["epsilon_timesteps"]))
        self.epsilon_step_scale = int(cfg["epsilon_step_scale"])
        self.fixed_epsilon: float | np.ndarray | None = None
        self.env_steps = 0

    @property
    def epsilon(self) -> float | np.ndarray:
        """The exploration rate now: a float, or one per env row (Ape-X's per-env epsilons)."""
        if self.fixed_epsilon is not None:
            return self.fixed_epsilon
        return self.epsilon_schedule.value(self.env_steps * self.epsilon_step_scale)

    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions, each replaced by a uniform random one with probability epsilon."""
        with torch.no_grad():
            actions = self.model(self._obs_tensor(obs)).argmax(dim=1).numpy()
        if explore:
            actions = self.explore(actions)
        return actions, {}

    def explore(self, actions: np.ndarray) -> np.ndarray:
        """Epsilon-greedy: each greedy action replaced by a uniform random one with probability
        epsilon; advances the exploration clock by the number of rows."""
        n = len(actions)
        eps = self.epsilon
        if np.ndim(eps) and len(eps) != n:  # per-env rates, but not a vector step
            eps = float(np.mean(eps))
        if np.any(eps > 0):
            rng = self.np_rng
            explore_mask = rng.random(n) < eps
            if explore_mask.any():
                actions = np.where(explore_mask, rng.integers(0, self.num_actions, n),
                                   actions)
        self.env_steps += n
        return actions

    def learn_on_batch(self, batch: SB, num_epochs: int = 1, minibatch_size: int | None = None,
                       shuffle: bool = True) -> dict[str, float]:
        """One SGD step on the whole batch; writes ``batch["td_error"]``. (The epoch and
        minibatch arguments exist for TrainOneStep and must keep their defaults.)"""
        if num_epochs != 1 or (minibatch_size is not None and minibatch_size < batch.count):
            raise ValueError("DQNPolicy.learn_on_batch takes one step on the whole batch")
        return self.learner.update(batch)

    def get_state(self) -> dict[str, Any]:
        """TorchPolicy state (with the learner's target network) and the exploration clock."""
        state = super().get_state()
        state["env_steps"] = int(self.env_steps)
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.env_steps = int(state.get("env_steps", self.env_steps))


def policy_config(config: QConfig, **extra: Any) -> dict[str, Any]:
    """The DQNPolicy config for an algorithm config."""
    out = dict(hiddens=config.hiddens, activation=config.activation, lr=config.lr,
               gamma=config.gamma, grad_clip=config.grad_clip, dueling=config.dueling,
               double_q=config.double_q, n_step=config.n_step, huber_delta=config.huber_delta)
    out.update(extra)
    return out


def policy_factory(config: Config):
    """DQNPolicy per worker; its seed comes from the worker-seeded torch RNG (distinct per
    worker, reproducible)."""
    cfg = policy_config(config, initial_epsilon=config.initial_epsilon,
                        final_epsilon=config.final_epsilon,
                        epsilon_timesteps=config.epsilon_timesteps,
                        epsilon_step_scale=max(1, config.num_workers))

    def make(obs_space, action_space) -> DQNPolicy:
        return DQNPolicy(obs_space, action_space, cfg)

    return make


#: What DQN needs of any rollout worker that feeds it (used when it is composed with others).
WORKER_OPTIONS = {"include_next_obs": True}


def worker_kwargs(config: QConfig, factory: Any) -> dict[str, Any]:
    """RolloutWorker arguments: transitions with ``next_obs``, n-step postprocessed on the
    worker (per fragment, so only the needed columns travel)."""
    return dict(env=config.env, env_config=config.env_config,
                num_envs=config.num_envs_per_worker, policy_factory=factory,
                rollout_fragment_length=config.rollout_fragment_length, seed=config.seed,
                **WORKER_OPTIONS)


def make_workers(config: Config, runtime: Any) -> WorkerSet:
    return WorkerSet(runtime, config.num_workers, worker_kwargs(config, policy_factory(config)),
                     restart_failed=config.restart_failed_workers,
                     output=dataset_output(config))


def make_buffer(config: QConfig, capacity: int | None = None, seed: int | None = None
                ) -> ReplayBuffer:
    capacity = config.buffer_size if capacity is None else capacity
    seed = config.seed if seed is None else seed
    return make_replay_buffer(capacity, config.prioritized_replay, config.prioritized_replay_alpha,
                              seed, getattr(config, "replay_frame_dedup", "auto"))


def round_robin_weights(config: Config, steps_per_row: int = 1) -> list[int]:
    """[store, replay] turns so that replayed / sampled steps ~= ``training_intensity``
    (``steps_per_row``: env steps one replayed row trains, e.g. R2D2's sequence length)."""
    sampled = max(1, config.num_workers) * config.num_envs_per_worker * \
        config.rollout_fragment_length
    # replayed per sampled step with weights [1, 1]
    native = config.train_batch_size * steps_per_row / sampled
    ratio = (config.training_intensity or native) / native  # replay items per store item
    if ratio >= 1:
        return [1, max(1, round(ratio))]
    return [max(1, round(1 / ratio)), 1]


# -- the plan -----------------------------------------------------------------------------------
def store_flow(rollouts: LocalIterator[SB], workers: WorkerSet, buffer: ReplayBuffer
               ) -> LocalIterator[SB]:
    """DQN's store sub-flow: experience in, stored in ``buffer``, weights out to the workers."""
    return (rollouts
            .for_each(StoreToReplayBuffer(local_buffer=buffer))
            .for_each(BroadcastWeights(workers)))


def replay_flow(workers: WorkerSet, config: QConfig, buffer: ReplayBuffer,
                policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """DQN's replay sub-flow: replayed batches -> SGD on ``policy_id`` -> new priorities ->
    target-network copies; emits ``(batch, learner stats)``."""
    policy = workers.local_worker().get_policy(policy_id)
    beta = LinearSchedule(config.prioritized_replay_beta, config.final_prioritized_replay_beta,
                          config.beta_annealing_steps)
    return (Replay(local_buffer=buffer, batch_size=config.train_batch_size, beta=beta,
                   learning_starts=config.learning_starts,
                   training_intensity=getattr(config, "training_intensity", None))
            .for_each(TrainOneStep(workers, broadcast=False, policy_id=policy_id))
            .for_each(UpdatePriorities(local_buffer=buffer))
            .for_each(UpdateTargetNetwork(policy.update_target,
                                          config.target_network_update_freq)))


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                  policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """DQN's training sub-flow: a stream of experience in, ``(batch, learner stats)`` out.

    The store and replay sub-flows share one buffer and take turns in the ratio set by
    ``training_intensity``. ``policy_id`` trains one policy of a multi-agent worker, so DQN can
    be one branch of a larger plan (see ``examples/ppo_and_dqn.py``).
    """
    buffer = make_buffer(config)
    return Concurrently([store_flow(batches, workers, buffer),
                         replay_flow(workers, config, buffer, policy_id)],
                        mode="round_robin", output_indexes=[1],
                        round_robin_weights=round_robin_weights(config))


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    train_op = training_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


# -- checkpoint hooks ---------------------------------------------------------------------------
def sampler_env_steps(workers: WorkerSet) -> int:
    """Env steps the sampling policies have acted on (the epsilon schedule's clock)."""
    if not workers.remote_workers():
        return int(workers.local_worker().policy.env_steps)
    return int(sum(workers.foreach_worker(lambda w: w.policy.env_steps, local=False)))


def set_sampler_env_steps(workers: WorkerSet, total: int) -> None:
    """Put the exploration clocks back (split evenly over the sampling workers)."""
    if workers.remote_workers():
        share = int(total) // workers.num_remote_workers
        workers.foreach_worker(lambda w: setattr(w.policy, "env_steps", share), local=False)
    else:
        workers.local_worker().policy.env_steps = int(total)


@register_algorithm("dqn")
class DQN(AlgorithmBuilder):
    """Deep Q-networks (double, dueling, n-step, prioritized replay)."""

    Config = Config
    worker_options = WORKER_OPTIONS

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return make_workers(config, runtime)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                      policy_id: str | None = None) -> LocalIterator[Any]:
        return training_flow(batches, workers, config, policy_id)

    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        return {"sampler_env_steps": sampler_env_steps(workers)}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        """Restore the exploration clocks; the replay buffer restarts empty, so does its
        count."""
        set_sampler_env_steps(workers, int(state.get("sampler_env_steps", 0)))
        plan.metrics.counters[ROWS_ADDED] = 0
