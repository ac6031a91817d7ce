"""CQL: conservative Q-learning from a fixed dataset (offline), continuous and discrete.

Kumar et al. 2020, "Conservative Q-Learning for Offline Reinforcement Learning" (NeurIPS,
arXiv:2006.04779). Q-learning on a dataset overestimates the value of actions the dataset never
took; CQL(H) (eq. 4) adds to the critic's TD loss a term that pushes Q down on all actions
(a soft maximum) and up on the dataset's actions::

    penalty(s, a_data) = log sum_a exp Q(s, a) - Q(s, a_data)
    J_Q = J_TD + min_q_weight * mean(penalty)

* **discrete** (``cql_dqn``): the log-sum-exp runs over all actions exactly; ``J_TD`` is DQN's
  double-Q n-step Huber loss (:func:`~rldataflow.algorithms.dqn.dqn_loss`), the paper's QR-DQN
  variant aside (section 6.3 uses a quantile head; here the plain Q head).
* **continuous** (``cql``): on SAC (:func:`~rldataflow.algorithms.sac.sac_loss`: twin critics,
  squashed Gaussian actor, learned temperature), each critic's log-sum-exp is estimated by
  importance sampling (Appendix F) from ``N = num_sampled_actions`` uniform actions on
  ``[-1, 1]^d`` (density ``2^-d``) and ``N`` actions of the current policy at ``s`` (density
  ``pi(a|s)``)::

      log sum_a exp Q(s, a) ~= log( 1/(2N) [ sum_{a~U} exp(Q(s,a)) / U(a)
                                             + sum_{a~pi} exp(Q(s,a)) / pi(a|s) ] )

  (the authors' code also adds actions of ``pi(.|s')`` and drops the ``1/(2N)``; the constant
  matters only to ``target_action_gap``.) The sampled actions carry no gradient to the actor.
* **Lagrange** (``lagrangian=True``, continuous; section 5, eq. 30 in Appendix F): the weight
  ``alpha' = exp(log_alpha')`` is learned so that the gap stays near ``target_action_gap``::

      J_Q      = J_TD + alpha' * sum_j (min_q_weight * mean(penalty_j) - target_action_gap)
      J_alpha' = -alpha' * mean_j (min_q_weight * mean(penalty_j) - target_action_gap)

  (``alpha'`` is held constant in ``J_Q`` and the penalty in ``J_alpha'``; each has its own
  optimizer, ``alpha_prime``.)

Datasets need ``next_obs`` (``rldataflow record`` writes it, as does ``output`` from the
Q-learning algorithms); transitions are n-step per recorded episode
(:func:`~rldataflow.policies.compute_nstep`, per chunk before shuffling).

Dataflow (``rldataflow plan cql``; the rollout workers only evaluate the learned policy)::

    from_dataset(input, train_batch_size, postprocess=n-step)
        [union round-robin with ParallelRollouts -> ConcatBatches -> BroadcastWeights,
         when input_sampled_fraction > 0]
        -> TrainOneStep
        [-> UpdateTargetNetwork (discrete)] -> every updates_per_iteration
        -> [IS/WIS estimates] -> report   (evaluation: the Algorithm's evaluation workers)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rldataflow.algorithms import dqn, sac
from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.marwil import CheckDatasetSpaces, with_off_policy_estimation
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.data.dataset import REQUIRED_COLUMNS
from rldataflow.flow import Plan
from rldataflow.ops import (
    MixWithSamples,
    StandardMetricsReporting,
    TrainOneStep,
    UpdateTargetNetwork,
    from_dataset,
)
from rldataflow.policies import compute_nstep
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

_h = describe_field

#: the dataset columns CQL reads (the recorded episodes' bookkeeping and ``next_obs``)
CQL_COLUMNS = (*REQUIRED_COLUMNS, SB.NEXT_OBS)


# -- the penalties (pure functions: the reference tests check these) -----------------------------
def discrete_cql_penalty(q_all: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """Per row ``log sum_a exp Q(s, a) - Q(s, a_data)``; ``q_all`` is ``(B, |A|)``."""
    return torch.logsumexp(q_all, dim=1) - q_data


def continuous_cql_penalty(q_random: torch.Tensor, q_policy: torch.Tensor,
                           logp_policy: torch.Tensor, q_data: torch.Tensor, action_dim: int
                           ) -> torch.Tensor:
    """Per row the importance-sampled ``log sum_a exp Q(s, a) - Q(s, a_data)`` of the module
    docstring. ``q_random``: ``(B, N)`` Q at uniform actions on ``[-1, 1]^d``; ``q_policy`` and
    ``logp_policy``: ``(B, N)`` Q and ``log pi`` at policy actions; ``q_data``: ``(B,)``."""
    log_uniform = -action_dim * math.log(2.0)
    n = q_random.shape[1] + q_policy.shape[1]
    weighted = torch.cat([q_random - log_uniform, q_policy - logp_policy], dim=1)
    return torch.logsumexp(weighted, dim=1) - math.log(n) - q_data


def lagrange_terms(gaps: list[torch.Tensor], log_alpha_prime: torch.Tensor,
                   min_q_weight: float, target_action_gap: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(critic penalty, alpha' loss, alpha')`` of the Lagrange variant; ``gaps`` holds each
    critic's ``mean(penalty)`` (with gradient)."""
    alpha_prime = log_alpha_prime.exp().clamp(0.0, 1e6)
    slack = [min_q_weight * g - target_action_gap for g in gaps]
    critic_term = alpha_prime.detach() * sum(slack)
    alpha_loss = -alpha_prime * torch.stack([s.detach() for s in slack]).mean()
    return critic_term, alpha_loss, alpha_prime.detach()


# -- configs -------------------------------------------------------------------------------------
def _check(checks: list[tuple[bool, str, str]], config: Any) -> None:
    for ok, key, text in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} {text} (got {getattr(config, key)!r})")


@dataclass
class OfflineQConfig(AlgorithmConfig):
    """Fields of both CQL variants: the dataset, the penalty, evaluation."""

    input: str | None = field(
        default=None, metadata=_h("dataset directory (or file) to learn from; required "
                                  "(needs next_obs: write one with `rldataflow record`)"))
    shuffle_buffer_size: int = field(
        default=50_000, metadata=_h("rows held to shuffle the dataset in (memory bound)", ge=1))
    min_q_weight: float = field(
        default=1.0, metadata=_h("weight of the CQL penalty (the paper's alpha, 'cql_alpha')",
                                 ge=0))
    updates_per_iteration: int = field(
        default=100, metadata=_h("gradient steps per training iteration (one result)", ge=1))
    num_workers: int = field(
        default=0, metadata=_h("rollout workers (they sample only with "
                               "input_sampled_fraction > 0; evaluation runs on "
                               "evaluation_num_workers)"))
    num_envs_per_worker: int = field(default=1, metadata=_h("envs per worker"))
    evaluation_interval: int | None = field(
        default=5, metadata=_h("evaluate every this many iterations (0: never)", ge=0))
    evaluation_num_workers: int = field(
        default=1, metadata=_h("evaluation workers (0: evaluate in the driver)", ge=0))
    n_step: int = field(default=1, metadata=_h("steps summed in the return before bootstrap",
                                               ge=1))
    input_sampled_fraction: float = field(
        default=0.0, metadata=_h("fraction of training batches sampled fresh by the rollout "
                                 "workers with the current policy, the rest from the dataset "
                                 "(0: offline only)", ge=0, lt=1))
    off_policy_estimation_episodes: int = field(
        default=0, metadata=_h("estimate the greedy policy's return by IS/WIS on this many "
                               "dataset episodes every evaluation_interval iterations (0: off; "
                               "cql_dqn only)", ge=0))

    def validate(self) -> None:
        super().validate()
        if self.input is None:
            raise ConfigError("config key 'input' is required: a dataset directory to learn "
                              "from (see docs/offline.md)")
        if self.policies:
            raise ConfigError("config key 'policies': CQL is single-agent")


@dataclass
class Config(OfflineQConfig):
    """Continuous CQL (on SAC). Defaults: SAC's for Pendulum-v1 (64x64, Adam 1e-3 for all;
    the paper's section 6.1 uses 1e-4 for the actor and 3e-4 for the critics on D4RL, which
    here learned Pendulum-v1 several times slower), ``N = 10`` sampled actions of each kind
    (Appendix F)."""

    env: Any = field(default="Pendulum-v1", metadata=_h("Gymnasium env id or creator (Box "
                                                         "actions)"))
    hiddens: tuple[int, ...] = field(
        default=(64, 64), metadata=_h("hidden sizes of the actor and of each critic"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("activation of the hidden layers"))
    train_batch_size: int = field(default=256, metadata=_h("dataset rows per gradient step",
                                                           ge=1))
    actor_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the actor", gt=0))
    critic_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the critics",
                                                       gt=0))
    alpha_lr: float = field(default=1e-3, metadata=_h("Adam learning rate of log alpha", gt=0))
    initial_alpha: float = field(default=1.0, metadata=_h("SAC temperature at the start", gt=0))
    target_entropy: float | None = field(
        default=None, metadata=_h("entropy target of the temperature (None: -|A|)"))
    tau: float = field(default=0.005, metadata=_h("Polyak coefficient of the target critics",
                                                  gt=0, le=1))
    grad_clip: float | None = field(
        default=None, metadata=_h("max gradient norm per optimizer (None: no clipping)"))
    num_sampled_actions: int = field(
        default=10, metadata=_h("uniform and policy actions each, per state, in the "
                                "log-sum-exp estimate", ge=1))
    lagrangian: bool = field(
        default=False, metadata=_h("learn the penalty weight alpha' (Lagrange variant)"))
    target_action_gap: float = field(
        default=5.0, metadata=_h("the gap alpha' aims at (lagrangian only)"))
    alpha_prime_lr: float = field(
        default=1e-3, metadata=_h("Adam learning rate of log alpha' (lagrangian only)", gt=0))
    initial_alpha_prime: float = field(
        default=1.0, metadata=_h("alpha' at the start (lagrangian only)", gt=0))

    def validate(self) -> None:
        super().validate()
        sac.check_box_env(self, "cql")
        if self.off_policy_estimation_episodes:
            raise ConfigError("config key 'off_policy_estimation_episodes': cql evaluates a "
                              "deterministic continuous policy, whose importance weights are "
                              "undefined; use it with cql_dqn, bc or marwil")


@dataclass
class DQNConfig(OfflineQConfig):
    """Discrete CQL (on DQN). Defaults for CartPole-v1 datasets: 64x64 dueling double Q,
    Adam 1e-3, batch 256, 1-step targets, target copy every 40 gradient steps."""

    env: Any = field(default="CartPole-v1", metadata=_h("Gymnasium env id or creator "
                                                         "(Discrete actions)"))
    lr: float = field(default=1e-3, metadata=_h("Adam learning rate", gt=0))
    hiddens: tuple[int, ...] = field(default=(64, 64), metadata=_h("hidden layer sizes"))
    activation: Literal["tanh", "relu", "elu"] = field(
        default="relu", metadata=_h("activation of the hidden layers"))
    train_batch_size: int = field(default=256, metadata=_h("dataset rows per SGD step", ge=1))
    dueling: bool = field(default=True, metadata=_h("dueling heads V + A - mean A"))
    double_q: bool = field(default=True, metadata=_h("double Q targets"))
    huber_delta: float = field(default=1.0, metadata=_h("Huber loss threshold", gt=0))
    grad_clip: float | None = field(
        default=10.0, metadata=_h("max global gradient norm (None: no clipping)"))
    target_network_update_freq: int = field(
        default=10_240, metadata=_h("copy the online net to the target net every this many "
                                    "rows trained", ge=1))


# -- continuous: the model, loss and policy -------------------------------------------------------
class CQLModel(sac.SACModel):
    """SAC's model and ``log_alpha_prime`` (the Lagrange variant's penalty weight)."""

    def __init__(self, obs_space: spaces.Box, action_dim: int, config: Mapping[str, Any]) -> None:
        super().__init__(obs_space, action_dim, config)
        self.log_alpha_prime = nn.Parameter(
            torch.tensor(float(np.log(config["initial_alpha_prime"]))))


def cql_sac_loss(policy: CQLPolicy, batch: dict[str, torch.Tensor], step: int = 0
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """SAC's three losses with the CQL penalty added to the critics' (and ``alpha_prime``'s
    loss when ``lagrangian``)."""
    losses, stats = sac.sac_loss(policy, batch, step)
    model, cfg = policy.model, policy.config
    obs = batch[SB.OBS]
    n, d = int(cfg["num_sampled_actions"]), policy.action_dim
    b = len(obs)
    obs_rep = obs.repeat_interleave(n, dim=0)
    with torch.no_grad():  # the sampled actions are proposals: no gradient to the actor
        a_rand = torch.rand(b * n, d, generator=policy.generator) * 2.0 - 1.0
        a_pi, logp_pi = model.actor.sample(obs_rep, policy.generator)
    q1_s, q2_s = model.critic(torch.cat([obs_rep, obs_rep]), torch.cat([a_rand, a_pi]))
    q1_d, q2_d = model.critic(obs, policy.normalize(batch[SB.ACTIONS]))
    logp_pi = logp_pi.view(b, n)
    gaps = []
    for q_s, q_d in ((q1_s, q1_d), (q2_s, q2_d)):
        q_rand, q_pi = q_s[: b * n].view(b, n), q_s[b * n:].view(b, n)
        gaps.append(continuous_cql_penalty(q_rand, q_pi, logp_pi, q_d, d).mean())
    weight = float(cfg["min_q_weight"])
    if cfg["lagrangian"]:
        term, alpha_prime_loss, alpha_prime = lagrange_terms(
            gaps, model.log_alpha_prime, weight, float(cfg["target_action_gap"]))
        losses["alpha_prime"] = alpha_prime_loss
        stats["alpha_prime"] = alpha_prime
    else:
        term = weight * sum(gaps)
    losses["critic"] = losses["critic"] + term
    stats["cql_gap"] = 0.5 * (gaps[0] + gaps[1]).detach()
    return losses, stats


class CQLPolicy(sac.SACPolicy):
    """A :class:`~rldataflow.algorithms.sac.SACPolicy` learning with :func:`cql_sac_loss`
    (and an ``alpha_prime`` optimizer when ``lagrangian``). Example::

        policy = CQLPolicy(obs_space, gymnasium.spaces.Box(-2, 2, (1,)), {"lagrangian": True})
        stats = policy.learn_on_batch(dataset_rows)   # stats["cql_gap"], stats["alpha_prime"]
    """

    DEFAULTS = {**sac.SACPolicy.DEFAULTS, "min_q_weight": 1.0, "num_sampled_actions": 10,
                "lagrangian": False, "target_action_gap": 5.0, "alpha_prime_lr": 1e-3,
                "initial_alpha_prime": 1.0}
    model_cls = CQLModel

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box,
                 config: Mapping[str, Any] | None = None, seed: int | None = None) -> None:
        super().__init__(observation_space, action_space, config, seed=seed,
                         loss_fn=cql_sac_loss, algorithm="cql")

    def optimizer_groups(self) -> tuple[dict[str, tuple[str, ...]], dict[str, float]]:
        groups, lrs = super().optimizer_groups()
        if self.config["lagrangian"]:
            groups["alpha_prime"] = ("log_alpha_prime",)
            lrs["alpha_prime"] = self.config["alpha_prime_lr"]
        return groups, lrs


# -- discrete: the loss and policy ----------------------------------------------------------------
def cql_dqn_loss(policy: dqn.DQNPolicy, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
    """DQN's loss plus ``min_q_weight * mean(logsumexp_a Q(s, a) - Q(s, a_data))``."""
    loss, stats = dqn.dqn_loss(policy, batch)
    q_all = policy.model(batch[SB.OBS])
    q_data = q_all.gather(1, batch[SB.ACTIONS].long().view(-1, 1)).squeeze(1)
    gap = discrete_cql_penalty(q_all, q_data).mean()
    total = loss + float(policy.config["min_q_weight"]) * gap
    stats.update(td_loss=loss, loss=total, cql_gap=gap)
    return total, stats


class CQLDQNPolicy(dqn.DQNPolicy):
    """A :class:`~rldataflow.algorithms.dqn.DQNPolicy` learning with :func:`cql_dqn_loss`;
    it acts greedily in evaluation like DQN."""

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Discrete,
                 config: Mapping[str, Any] | None = None, seed: int | None = None) -> None:
        super().__init__(observation_space, action_space, config, seed=seed)
        self.loss_fn = cql_dqn_loss  # before the learner (made on first use) takes it


# -- the plan -------------------------------------------------------------------------------------
def nstep_chunks(n: int, gamma: float):
    """A chunk postprocessor: n-step transitions within each recorded episode piece."""

    def postprocess(chunk: SB) -> SB:
        return compute_nstep(chunk, n, gamma)

    postprocess.__name__ = f"nstep(n={n}, gamma={gamma})"
    return postprocess


def last_of(items: list[Any]) -> Any:
    """The last of a group of training items (one result per ``updates_per_iteration``)."""
    return items[-1]


def plan(workers: WorkerSet, config: OfflineQConfig) -> Plan[dict[str, Any]]:
    batches = from_dataset(config.input, config.train_batch_size,
                           shuffle_buffer_size=config.shuffle_buffer_size, seed=config.seed,
                           required=CQL_COLUMNS,
                           reader="ray" if config.runtime == "ray" else "local",
                           postprocess=nstep_chunks(config.n_step, config.gamma))
    batches = batches.for_each(CheckDatasetSpaces(workers, config.input))
    if config.input_sampled_fraction:
        batches = MixWithSamples(batches, workers, config.input_sampled_fraction,
                                 config.train_batch_size)
    train_op = batches.for_each(TrainOneStep(workers, broadcast=False))
    if isinstance(config, DQNConfig):
        policy = workers.local_worker().get_policy()
        train_op = train_op.for_each(UpdateTargetNetwork(
            policy.update_target, config.target_network_update_freq, by_steps_trained=True))
    train_op = train_op.batch(config.updates_per_iteration).for_each(last_of)
    train_op = with_off_policy_estimation(train_op, workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration))


@register_algorithm("cql")
class CQL(AlgorithmBuilder):
    """Conservative Q-learning on SAC from an offline dataset (Box actions)."""

    Config = Config
    worker_options = {"include_next_obs": True}   # for input_sampled_fraction

    def policy_factory(self, config: Config) -> Any:
        cfg = dict(hiddens=config.hiddens, activation=config.activation, lr=config.critic_lr,
                   actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                   alpha_lr=config.alpha_lr, gamma=config.gamma, tau=config.tau,
                   n_step=config.n_step, initial_alpha=config.initial_alpha,
                   target_entropy=config.target_entropy, grad_clip=config.grad_clip,
                   min_q_weight=config.min_q_weight,
                   num_sampled_actions=config.num_sampled_actions,
                   lagrangian=config.lagrangian, target_action_gap=config.target_action_gap,
                   alpha_prime_lr=config.alpha_prime_lr,
                   initial_alpha_prime=config.initial_alpha_prime)

        def make(obs_space: spaces.Box, action_space: spaces.Box) -> CQLPolicy:
            return CQLPolicy(obs_space, action_space, cfg, seed=config.seed)

        return make

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)


@register_algorithm("cql_dqn")
class CQLDQN(AlgorithmBuilder):
    """Conservative Q-learning on DQN from an offline dataset (Discrete actions)."""

    Config = DQNConfig
    worker_options = {"include_next_obs": True}   # for input_sampled_fraction

    def policy_factory(self, config: DQNConfig) -> Any:
        cfg = dqn.policy_config(config, min_q_weight=config.min_q_weight, initial_epsilon=0.0,
                                final_epsilon=0.0)

        def make(obs_space: spaces.Box, action_space: spaces.Discrete) -> CQLDQNPolicy:
            return CQLDQNPolicy(obs_space, action_space, cfg, seed=config.seed)

        return make

    def make_plan(self, workers: WorkerSet, config: DQNConfig) -> Plan[dict[str, Any]]:
        return plan(workers, config)
