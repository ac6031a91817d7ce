"""SAC: soft actor-critic with twin critics and automatic entropy tuning.

Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv:1812.05905),
the version with a learned temperature and no separate value network:

* twin soft Q critics ``Q_1, Q_2`` and their Polyak-averaged targets ``Q'_j`` (section 5,
  ``tau = 0.005``), the minimum of the two in every target (clipped double Q, Fujimoto et al.
  2018) -- eq. 5 with the soft value of eq. 3::

      a' ~ pi(.|s'),   V'(s') = min_j Q'_j(s', a') - alpha log pi(a'|s')
      y = r + discounts * (1 - terminated) * V'(s')
      J_Q = mean_i w_i * 1/2 sum_j (Q_j(s_i, a_i) - y_i)^2

* a tanh-squashed Gaussian actor, trained by reparameterization (eq. 7, 11), its log-prob
  with the change-of-variables term (appendix C, eq. 26)::

      a~ = tanh(mu(s) + sigma(s) eps),   J_pi = mean(alpha log pi(a~|s) - min_j Q_j(s, a~))

* the temperature tuned to a target entropy ``H = -|A|`` (section 5, eq. 18), optimizing
  ``log alpha`` as in the authors' code::

      J_alpha = mean(-log_alpha * (log pi(a~|s) + H))

All three losses are taken from the same weights, each optimizer (``actor``, ``critic``,
``alpha``; Adam, 3e-4 in the paper) steps on its own loss's gradient
(:class:`~rldataflow.policies.MultiLossLearner`), then the targets move by ``tau``. ``rewards``
and ``discounts`` come from :func:`~rldataflow.policies.compute_nstep` (n = 1: ``gamma``); a
truncated episode bootstraps from its final observation, a terminated one does not. With
prioritized replay (Schaul et al. 2016; not in the SAC paper) ``w_i`` are the importance
weights and the priorities are ``|td_error|``, the mean of the two critics' ``|Q_j - y|``.

Workers sample ``a~`` (stochastic); evaluation acts with ``tanh(mu(s))``. Only the actor's
weights travel to the workers.

Defaults: the paper's MuJoCo settings (256x256 networks, Adam 3e-4 for all three, batch 256,
gamma 0.99, tau 0.005, one gradient step per env step, target entropy -|A|, 1M-row replay) and
10k rows before the first gradient step (RL Baselines3 Zoo's MuJoCo ``learning_starts``; the
paper collects 1000-10000 random steps), acted with uniform random actions
(``initial_random_steps``, by default each sampling worker's share of ``learning_starts``).
Pendulum-v1 learns several times faster with ``hiddens=(64, 64)``, learning rates of 1e-3
(RL Baselines3 Zoo's tuned Pendulum-v1 setting), ``learning_starts=1000`` and
``initial_random_steps=0``: -250 in ~5.5k env steps (what its learning test sets).

Dataflow (``rldataflow plan sac``)::

    Concurrently(round_robin, output [1], weights from training_intensity):
      [0] rollouts -> StoreToReplayBuffer -> BroadcastWeights
      [1] Replay(learning_starts) -> TrainOneStep -> [UpdatePriorities]
    -> report

Checkpoints hold the actor, the critics, their targets, ``log_alpha`` and the three optimizers
(the policy's state and its learner's ``state_dict``); the replay buffer is not saved, a
restored run refills ``learning_starts`` rows before training again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import LinearSchedule, PrioritizedReplayBuffer, ReplayBuffer
from rldataflow.data import SampleBatch as SB
from rldataflow.envs import make_env
from rldataflow.flow import Concurrently, LocalIterator, Plan
from rldataflow.ops import (
    BroadcastWeights,
    ParallelRollouts,
    Replay,
    StandardMetricsReporting,
    StoreToReplayBuffer,
    TrainOneStep,
    UpdatePriorities,
)
from rldataflow.ops.replay import ROWS_ADDED, TD_ERROR
from rldataflow.policies import MultiLossLearner
from rldataflow.policies.continuous import BoxActorPolicy, SquashedGaussianActor, TwinQ
from rldataflow.policies.learner import frozen
from rldataflow.utils.config import AlgorithmConfig, ConfigError
from rldataflow.workers import WorkerSet


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class OffPolicyConfig(AlgorithmConfig):
    """Fields shared by SAC, DDPG and TD3: env, networks, replay, targets, sampling."""

    env: Union[str, Callable[..., Any]] = field(  # noqa: UP007 - the base class's annotation
        default="Pendulum-v1", metadata=_h("Gymnasium env id or creator (Box actions)"))
    num_workers: int = field(
        default=0, metadata=_h("remote rollout workers; 0 samples on the driver"))
    num_envs_per_worker: int = field(default=1, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(default=1, metadata=_h("steps per env per sample"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    hiddens: tuple[int, ...] = field(
        default=(256, 256), metadata=_h("hidden sizes of the actor and of each critic"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("activation of the hidden layers"))
    actor_lr: float = field(
        default=3e-4, metadata=_h("Adam learning rate of the actor (SAC paper: 3e-4)"))
    critic_lr: float = field(
        default=3e-4, metadata=_h("Adam learning rate of the critics (SAC paper: 3e-4)"))
    tau: float = field(default=0.005, metadata=_h("Polyak coefficient of the target networks"))
    grad_clip: float | None = field(
        default=None, metadata=_h("max gradient norm per optimizer (None: no clipping)"))
    n_step: int = field(default=1, metadata=_h("steps summed in the return before bootstrap"))
    train_batch_size: int = field(default=256, metadata=_h("replayed rows per gradient step"))
    buffer_size: int = field(default=1_000_000, metadata=_h("replay capacity in rows"))
    learning_starts: int = field(
        default=10_000, metadata=_h("rows in replay before the first gradient step"))
    initial_random_steps: int | None = field(
        default=None, metadata=_h("each rollout worker acts uniformly at random for its "
                                  "first this many env steps (None: its share of "
                                  "learning_starts; 0: the policy acts from the start)"))
    training_intensity: float | None = field(
        default=None, metadata=_h("replayed rows per sampled row (None: train_batch_size, "
                                  "i.e. one gradient step per env step)"))
    prioritized_replay: bool = field(
        default=False, metadata=_h("proportional prioritized replay (Schaul 2016); else "
                                   "uniform"))
    prioritized_replay_alpha: float = field(default=0.6, metadata=_h("priority exponent"))
    prioritized_replay_beta: float = field(
        default=0.4, metadata=_h("initial importance-weight exponent"))
    final_prioritized_replay_beta: float = field(
        default=1.0, metadata=_h("beta after beta_annealing_steps env steps"))
    beta_annealing_steps: int = field(
        default=100_000, metadata=_h("env steps over which beta is annealed linearly"))
    min_steps_per_iteration: int = field(
        default=1000, metadata=_h("report a result only after at least this many env steps"))

    #: the registered name, for error messages
    algorithm_name = "this algorithm"

    def validate(self) -> None:
        super().validate()
        checks = [
            (0 < self.tau <= 1, "tau", "must be in (0, 1]"),
            (self.n_step >= 1, "n_step", "must be >= 1"),
            (self.buffer_size >= self.train_batch_size, "buffer_size",
             "must be >= train_batch_size"),
            (self.learning_starts <= self.buffer_size, "learning_starts",
             "must be <= buffer_size"),
            (self.training_intensity is None or self.training_intensity > 0,
             "training_intensity", "must be > 0 or None"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or None"),
            (self.actor_lr > 0 and self.critic_lr > 0, "actor_lr", "and critic_lr must be > 0"),
            (self.initial_random_steps is None or self.initial_random_steps >= 0,
             "initial_random_steps", "must be >= 0 or None"),
        ]
        for ok, key, text in checks:
            if not ok:
                raise ConfigError(f"config key {key!r} {text} (got {getattr(self, key)!r})")
        self.check_env()

    def check_env(self) -> None:
        """A one-line ConfigError unless the env suits the algorithm (a bounded Box)."""
        check_box_env(self, self.algorithm_name)


def check_box_env(config: AlgorithmConfig, algorithm: str) -> None:
    """A ConfigError (one line) unless the env's action space is a Box with finite bounds."""
    env = make_env(config.env, config.env_config)
    try:
        space = env.action_space
    finally:
        env.close()
    name = config.env if isinstance(config.env, str) else getattr(config.env, "__name__", "env")
    if not isinstance(space, spaces.Box):
        raise ConfigError(f"{algorithm} needs a continuous (Box) action space, but env {name!r} "
                          f"has {space}; for discrete actions use dqn, apex, ppo or impala")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ConfigError(f"{algorithm} needs finite action bounds, but env {name!r} has "
                          f"{space}; rescale its actions to a bounded Box")


@dataclass
class Config(OffPolicyConfig):
    """SAC settings; the defaults are for MuJoCo tasks (see the module docstring); with
    ``hiddens=(64, 64)``, lr 1e-3, ``learning_starts=1000``, ``initial_random_steps=0`` SAC
    reaches a Pendulum-v1 return of -250 (mean of the last 10 episodes) in ~5.5k env steps."""

    alpha_lr: float = field(
        default=3e-4, metadata=_h("Adam learning rate of log alpha (paper: 3e-4)"))
    initial_alpha: float = field(default=1.0, metadata=_h("entropy temperature at the start"))
    target_entropy: float | None = field(
        default=None, metadata=_h("entropy target of the temperature (None: -|A|, Haarnoja "
                                  "2018)"))

    algorithm_name = "sac"

    def validate(self) -> None:
        super().validate()
        if not self.initial_alpha > 0:
            raise ConfigError(f"config key 'initial_alpha' must be > 0 "
                              f"(got {self.initial_alpha!r})")
        if not self.alpha_lr > 0:
            raise ConfigError(f"config key 'alpha_lr' must be > 0 (got {self.alpha_lr!r})")


# -- the model, the loss and the policy -----------------------------------------------------------
class SACModel(nn.Module):
    """The actor, the twin critics and ``log_alpha`` (one module: one state dict)."""

    def __init__(self, obs_space: spaces.Box, action_dim: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        shape, dtype = obs_space.shape, obs_space.dtype
        hiddens, act = tuple(config["hiddens"]), str(config["activation"])
        self.actor = SquashedGaussianActor(shape, dtype, action_dim, hiddens, act)
        self.critic = TwinQ(shape, dtype, action_dim, hiddens, act)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(config["initial_alpha"]))))


def sac_loss(policy: SACPolicy, batch: dict[str, torch.Tensor], step: int = 0
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The critic, actor and temperature losses of the module docstring, and their stats
    (``td_error`` per row: the learner writes it into the batch)."""
    model, cfg = policy.model, policy.config
    obs, next_obs = batch[SB.OBS], batch[SB.NEXT_OBS]
    actions = policy.normalize(batch[SB.ACTIONS])
    log_alpha = model.log_alpha
    alpha = log_alpha.detach().exp()
    target_critic = policy.learner.targets["critic"].module
    with torch.no_grad():
        next_a, next_logp = model.actor.sample(next_obs, policy.generator)
        q1_t, q2_t = target_critic(next_obs, next_a)
        soft_v = torch.minimum(q1_t, q2_t) - alpha * next_logp
        discounts = batch.get(SB.DISCOUNTS)
        if discounts is None:
            discounts = torch.full_like(soft_v, float(cfg["gamma"]))
        y = batch[SB.REWARDS].float() + discounts * (1.0 - batch[SB.TERMINATEDS].float()) * soft_v
    q1, q2 = model.critic(obs, actions)
    per_row = 0.5 * ((q1 - y) ** 2 + (q2 - y) ** 2)
    weights = batch.get("weights")
    critic_loss = (per_row * weights).mean() if weights is not None else per_row.mean()

    new_a, logp = model.actor.sample(obs, policy.generator)
    with frozen(model.critic):  # the actor's loss trains the actor only
        q_new = model.critic.min(obs, new_a)
    actor_loss = (alpha * logp - q_new).mean()
    alpha_loss = -(log_alpha * (logp.detach() + policy.target_entropy)).mean()

    td_error = 0.5 * ((q1 - y).abs() + (q2 - y).abs()).detach()
    return ({"critic": critic_loss, "actor": actor_loss, "alpha": alpha_loss},
            {"alpha": alpha, "entropy": -logp.detach().mean(), "mean_q": q1.detach().mean(),
             "mean_target": y.mean(), "mean_abs_td_error": td_error.mean(), TD_ERROR: td_error})


class SACPolicy(BoxActorPolicy):
    """The SAC model, acting with ``tanh(u)`` samples (deterministic ``tanh(mu)`` without
    ``explore``), learning with :func:`sac_loss` through a :class:`MultiLossLearner`.

    Example::

        policy = SACPolicy(obs_space, gymnasium.spaces.Box(-2, 2, (1,)), {"hiddens": (64, 64)})
        actions, _ = policy.compute_actions(obs)        # within [-2, 2]
        stats = policy.learn_on_batch(replayed)          # one step of each optimizer
    """

    DEFAULTS: dict[str, Any] = {
        "hiddens": (64, 64), "activation": "relu", "lr": 3e-4, "actor_lr": 3e-4,
        "critic_lr": 3e-4, "alpha_lr": 3e-4, "gamma": 0.99, "tau": 0.005, "n_step": 1,
        "initial_alpha": 1.0, "target_entropy": None, "grad_clip": None, "adam_eps": 1e-8,
    }

    #: the model class (a subclass may add parameters, e.g. CQL's log alpha')
    model_cls: type[SACModel] = SACModel

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any] | None = None, seed: int | None = None,
                 loss_fn: Callable[..., Any] = sac_loss, algorithm: str = "sac") -> None:
        cfg = {**self.DEFAULTS, **dict(config or {})}
        model_cls = self.model_cls
        super().__init__(observation_space, action_space, cfg, loss_fn=loss_fn,
                         model_factory=lambda obs, act, _dim, c: model_cls(
                             obs, int(np.prod(act.shape)), c),
                         seed=seed, algorithm=algorithm)
        target = cfg["target_entropy"]
        self.target_entropy = float(-self.action_dim if target is None else target)

    def optimizer_groups(self) -> tuple[dict[str, tuple[str, ...]], dict[str, float]]:
        """``(groups, lrs)`` of the :class:`MultiLossLearner`: one optimizer per loss."""
        cfg = self.config
        return ({"actor": ("actor",), "critic": ("critic",), "alpha": ("log_alpha",)},
                {"actor": cfg["actor_lr"], "critic": cfg["critic_lr"],
                 "alpha": cfg["alpha_lr"]})

    def make_learner(self) -> MultiLossLearner:
        groups, lrs = self.optimizer_groups()
        return MultiLossLearner(self, self.loss_fn, groups=groups, lrs=lrs,
                                targets=("critic",), tau=float(self.config["tau"]))

    @property
    def alpha(self) -> float:
        return float(self.model.log_alpha.detach().exp())

    def actor_actions(self, obs: torch.Tensor, explore: bool) -> np.ndarray:
        if explore:
            return self.model.actor.sample(obs, self.generator)[0].numpy()
        return self.model.actor.deterministic(obs).numpy()


# -- the plan (shared with DDPG and TD3) ----------------------------------------------------------
def make_buffer(config: OffPolicyConfig) -> ReplayBuffer:
    if config.prioritized_replay:
        return PrioritizedReplayBuffer(config.buffer_size, alpha=config.prioritized_replay_alpha,
                                       seed=config.seed)
    return ReplayBuffer(config.buffer_size, seed=config.seed)


def intensity(config: OffPolicyConfig) -> float:
    """Replayed rows per sampled row (``training_intensity``, default one step per env step)."""
    return float(config.training_intensity or config.train_batch_size)


def round_robin_weights(config: OffPolicyConfig) -> list[int]:
    """[store, replay] turns so that replayed / sampled rows ~= :func:`intensity`."""
    sampled = max(1, config.num_workers) * config.num_envs_per_worker * \
        config.rollout_fragment_length
    ratio = intensity(config) * sampled / config.train_batch_size  # replay turns per store turn
    if ratio >= 1:
        return [1, max(1, round(ratio))]
    return [max(1, round(1 / ratio)), 1]


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: OffPolicyConfig,
                  policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """Experience in, ``(batch, learner stats)`` out: store to one replay buffer, replay
    ``training_intensity`` rows per stored row and train ``policy_id`` on them."""
    buffer = make_buffer(config)
    store_op = (batches
                .for_each(StoreToReplayBuffer(local_buffer=buffer))
                .for_each(BroadcastWeights(workers)))
    beta = LinearSchedule(config.prioritized_replay_beta, config.final_prioritized_replay_beta,
                          config.beta_annealing_steps)
    replay_op = (Replay(local_buffer=buffer, batch_size=config.train_batch_size, beta=beta,
                        learning_starts=config.learning_starts,
                        training_intensity=intensity(config))
                 .for_each(TrainOneStep(workers, broadcast=False, policy_id=policy_id)))
    if config.prioritized_replay:
        replay_op = replay_op.for_each(UpdatePriorities(local_buffer=buffer))
    return Concurrently([store_op, replay_op], mode="round_robin", output_indexes=[1],
                        round_robin_weights=round_robin_weights(config))


def plan(workers: WorkerSet, config: OffPolicyConfig) -> Plan[dict[str, Any]]:
    train_op = training_flow(ParallelRollouts(workers, mode="bulk_sync"), workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration))


def random_steps(config: OffPolicyConfig) -> int:
    """Uniform-action steps of each sampling policy: ``initial_random_steps``, by default each
    sampling worker's share of ``learning_starts`` (the driver samples when num_workers=0)."""
    if config.initial_random_steps is not None:
        return int(config.initial_random_steps)
    return -(-config.learning_starts // max(1, config.num_workers))


def policy_config(config: Config) -> dict[str, Any]:
    return dict(hiddens=config.hiddens, activation=config.activation, lr=config.critic_lr,
                actor_lr=config.actor_lr, critic_lr=config.critic_lr, alpha_lr=config.alpha_lr,
                gamma=config.gamma, tau=config.tau, n_step=config.n_step,
                initial_alpha=config.initial_alpha, target_entropy=config.target_entropy,
                grad_clip=config.grad_clip, initial_random_steps=random_steps(config))


class OffPolicyBuilder(AlgorithmBuilder):
    """The builder of the replay-based continuous learners (the plan above)."""

    worker_options = {"include_next_obs": True}

    def make_plan(self, workers: WorkerSet, config: OffPolicyConfig) -> Plan[dict[str, Any]]:
        return plan(workers, config)

    def training_flow(self, batches: LocalIterator[SB], workers: WorkerSet,
                      config: OffPolicyConfig, policy_id: str | None = None
                      ) -> LocalIterator[Any]:
        return training_flow(batches, workers, config, policy_id)

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: OffPolicyConfig,
                            state: Mapping[str, Any]) -> None:
        """The replay buffer restarts empty, so does the count that gates replay."""
        plan.metrics.counters[ROWS_ADDED] = 0


@register_algorithm("sac")
class SAC(OffPolicyBuilder):
    """Soft actor-critic (twin critics, squashed Gaussian actor, learned temperature)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        cfg = policy_config(config)

        def make(obs_space: spaces.Box, action_space: spaces.Box) -> SACPolicy:
            return SACPolicy(obs_space, action_space, cfg)

        return make
