"""MARWIL and BC: imitation of a dataset's actions, weighted by their advantage (offline).

MARWIL, monotonic advantage re-weighted imitation learning (Wang et al. 2018, "Exponentially
Weighted Imitation Learning for Batched Historical Data", NeurIPS), learns from a fixed dataset
of another policy's experience. It fits a value function to the dataset's discounted returns
and imitates each action with a weight that grows exponentially with its advantage::

    R_t       = r_t + gamma * R_{t+1}        (returns-to-go within each recorded episode; at a
                                              cut fragment, bootstrapped with the dataset's
                                              bootstrap_value column when it has one)
    A_t       = R_t - V(s_t)
    c^2      <- c^2 + rate * (mean(A_t^2) - c^2)       (moving average of the squared norm)
    w_t       = min(exp(beta * A_t / c), max_weight)   (A, c and w are not differentiated)
    loss      = -mean(w_t * log pi(a_t|s_t)) + vf_coeff * 0.5 * mean((V(s_t) - R_t)^2)

The paper's eq. (4) weights imitation by ``exp(beta * A)``; normalising the advantage by a
running scale ``c`` (its section 4, "in practice") keeps ``beta`` meaningful across reward
scales. With ``beta = 0`` every weight is 1 and the value term is dropped: that is behaviour
cloning (BC), registered as ``bc``. Discrete and continuous (Box) action spaces both work:
``log pi(a|s)`` is the policy's distribution's log-likelihood of the recorded action.

Dataflow (no sampling; every ``evaluation_interval`` iterations the learned policy plays on the
evaluation workers, like any algorithm's, see ``docs/evaluation.md``)::

    from_dataset(input, train_batch_size, shuffle_buffer_size) -> TrainOneStep -> report

With ``input_sampled_fraction`` > 0 the rollout workers also sample with the current policy and
that fraction of the training batches is fresh (:func:`~rldataflow.ops.MixWithSamples`; fresh
batches get the same returns-to-go)::

    Concurrently(round_robin, weights [dataset, sampled]):
      [0] from_dataset(input, ...)
      [1] ParallelRollouts -> ConcatBatches(train_batch_size) -> returns_to_go -> BroadcastWeights
    -> TrainOneStep -> report
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch as SB
from rldataflow.flow import LocalIterator, Plan
from rldataflow.ops import MixWithSamples, StandardMetricsReporting, TrainOneStep, from_dataset
from rldataflow.ops.offline_evaluation import OffPolicyEstimation
from rldataflow.policies import TorchPolicy
from rldataflow.policies.learner import Learner
from rldataflow.policies.postprocessing import batch_segment_ends, compute_discounted_returns
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

#: the column of discounted returns-to-go MARWIL adds to each chunk of the dataset
RETURNS = "returns"


def _h(text: str, **bounds: float) -> dict[str, Any]:
    return describe_field(text, **bounds)


@dataclass
class Config(AlgorithmConfig):
    """MARWIL settings: train on the dataset at ``input``; evaluate on the rollout workers."""

    input: str | None = field(
        default=None, metadata=_h("dataset directory (or file) to learn from; required "
                                  "(write one with `output` or `rldataflow record`)"))
    shuffle_buffer_size: int = field(
        default=50_000, metadata=_h("rows held to shuffle the dataset in (memory bound)"))
    beta: float = field(
        default=1.0, metadata=_h("advantage exponent; 0 = behaviour cloning"))
    vf_coeff: float = field(default=1.0, metadata=_h("weight of the value loss"))
    moving_average_sqd_adv_norm_start: float = field(
        default=100.0, metadata=_h("initial c^2, the running mean of squared advantages"))
    moving_average_sqd_adv_norm_update_rate: float = field(
        default=0.01, metadata=_h("step size of the running mean c^2 (per SGD step)"))
    max_weight: float = field(
        default=20.0, metadata=_h("upper bound of the imitation weight exp(beta * A / c)"))
    lr: float = field(default=1e-3, metadata=_h("Adam learning rate"))
    train_batch_size: int = field(
        default=2048, metadata=_h("dataset rows per training iteration"))
    minibatch_size: int = field(default=256, metadata=_h("rows per SGD step"))
    grad_clip: float | None = field(default=None, metadata=_h("max global gradient norm"))
    num_workers: int = field(
        default=0, metadata=_h("rollout workers (MARWIL samples nothing; it evaluates on "
                               "evaluation_num_workers)"))
    num_envs_per_worker: int = field(
        default=1, metadata=_h("envs per rollout worker (sampling: input_sampled_fraction)"))
    input_sampled_fraction: float = field(
        default=0.0, metadata=_h("fraction of training batches sampled fresh by the rollout "
                                 "workers with the current policy, the rest from the dataset "
                                 "(0: offline only)", ge=0, lt=1))
    evaluation_interval: int | None = field(
        default=10, metadata=_h("evaluate every this many iterations (0: never)", ge=0))
    evaluation_num_workers: int = field(
        default=1, metadata=_h("evaluation workers (0: evaluate in the driver)", ge=0))
    off_policy_estimation_episodes: int = field(
        default=0, metadata=_h("estimate the policy's return by IS/WIS on this many dataset "
                               "episodes every evaluation_interval iterations (0: off)", ge=0))

    def validate(self) -> None:
        super().validate()
        if self.input is None:
            raise ConfigError("config key 'input' is required: a dataset directory to learn "
                              "from (see docs/offline.md)")
        if self.beta < 0:
            raise ConfigError(f"config key 'beta' must be >= 0, got {self.beta}")
        if self.shuffle_buffer_size < 1:
            raise ConfigError("config key 'shuffle_buffer_size' must be >= 1")
        if self.minibatch_size < 1 or self.minibatch_size > self.train_batch_size:
            raise ConfigError(f"config key 'minibatch_size' ({self.minibatch_size}) must be in "
                              f"[1, train_batch_size ({self.train_batch_size})]")
        if self.max_weight <= 0:
            raise ConfigError("config key 'max_weight' must be > 0")
        if not 0 < self.moving_average_sqd_adv_norm_update_rate <= 1:
            raise ConfigError("config key 'moving_average_sqd_adv_norm_update_rate' must be "
                              "in (0, 1]")
        if self.policies:
            raise ConfigError("config key 'policies': MARWIL/BC are single-agent")


@dataclass
class BCConfig(Config):
    """Behaviour cloning: MARWIL with ``beta = 0`` (every recorded action imitated alike)."""

    beta: float = field(default=0.0, metadata=_h("must be 0 for BC (use marwil for beta > 0)"))

    def validate(self) -> None:
        super().validate()
        if self.beta != 0:
            raise ConfigError(f"config key 'beta' must be 0 for bc, got {self.beta}; "
                              "use the 'marwil' algorithm for advantage weighting")


class MarwilLearner(Learner):
    """A :class:`Learner` that also keeps MARWIL's running mean of squared advantages."""

    def __init__(self, policy: TorchPolicy, loss_fn: Any, **options: Any) -> None:
        super().__init__(policy, loss_fn, **options)
        self.sqd_adv_norm = float(policy.config["moving_average_sqd_adv_norm_start"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sqd_adv_norm"] = float(self.sqd_adv_norm)
        return state

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        if "sqd_adv_norm" in state:
            self.sqd_adv_norm = float(state["sqd_adv_norm"])


class MarwilPolicy(TorchPolicy):
    """A :class:`TorchPolicy` whose learner is a :class:`MarwilLearner`."""

    def make_learner(self) -> Learner:
        return MarwilLearner(self, self.loss_fn, **self.learner_options)


def marwil_loss(policy: TorchPolicy, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loss of the module docstring (BC when ``beta == 0``)."""
    cfg = policy.config
    dist_inputs, values = policy.model(batch[SB.OBS])
    logp = policy.action_dist(dist_inputs).logp(batch[SB.ACTIONS])
    beta = float(cfg["beta"])
    stats: dict[str, Any] = {}
    if beta == 0.0:
        policy_loss = -logp.mean()
        total = policy_loss
    else:
        returns = batch[RETURNS]
        adv = returns - values.detach()
        learner = policy.learner
        rate = float(cfg["moving_average_sqd_adv_norm_update_rate"])
        learner.sqd_adv_norm += rate * (float((adv ** 2).mean()) - learner.sqd_adv_norm)
        scale = math.sqrt(learner.sqd_adv_norm) + 1e-8
        weights = torch.clamp(torch.exp(beta * adv / scale), max=float(cfg["max_weight"]))
        policy_loss = -(weights * logp).mean()
        vf_loss = 0.5 * ((values - returns) ** 2).mean()
        total = policy_loss + float(cfg["vf_coeff"]) * vf_loss
        stats.update(vf_loss=vf_loss, mean_weight=weights.mean(),
                     sqd_adv_norm=learner.sqd_adv_norm)
    stats.update(policy_loss=policy_loss, total_loss=total, logp=logp.mean())
    return total, stats


def returns_to_go(gamma: float):
    """A chunk postprocessor adding :data:`RETURNS`, the discounted returns-to-go of each row
    within its episode piece (pieces end at ``eps_id`` changes, termination, truncation and
    the chunk's end; a piece not ended by termination is bootstrapped with the chunk's
    ``bootstrap_value`` column when it has one, else with 0)."""

    def postprocess(chunk: SB) -> SB:
        boot = chunk.get(SB.BOOTSTRAP_VALUE)
        chunk[RETURNS] = compute_discounted_returns(
            chunk[SB.REWARDS], chunk[SB.TERMINATEDS], chunk[SB.TRUNCATEDS],
            None if boot is None else np.asarray(boot, np.float64), gamma=gamma,
            segment_ends=batch_segment_ends(chunk))
        return chunk

    postprocess.__name__ = f"returns_to_go(gamma={gamma})"
    return postprocess


class CheckDatasetSpaces:
    """Fail with one line when the dataset's rows do not fit the policy's spaces."""

    __name__ = "CheckDatasetSpaces"

    def __init__(self, workers: WorkerSet, path: str) -> None:
        policy = workers.local_worker().policy
        self.obs_shape = tuple(policy.observation_space.shape)
        space = policy.action_space
        self.action_shape = tuple(space.shape or ())
        self.path = path

    def __call__(self, batch: SB) -> SB:
        obs_shape = tuple(batch[SB.OBS].shape[1:])
        if obs_shape != self.obs_shape:
            raise ConfigError(f"dataset {self.path}: observations have shape {obs_shape}, but "
                              f"the env's (preprocessed) observations have {self.obs_shape}")
        act_shape = tuple(batch[SB.ACTIONS].shape[1:])
        if act_shape != self.action_shape:
            raise ConfigError(f"dataset {self.path}: actions have shape {act_shape}, but the "
                              f"env's actions have {self.action_shape}")
        return batch


def policy_factory(config: Config):
    policy_config = dict(
        hiddens=config.hiddens, activation=config.activation, lr=config.lr,
        gamma=config.gamma, grad_clip=config.grad_clip, beta=config.beta,
        vf_coeff=config.vf_coeff, max_weight=config.max_weight,
        moving_average_sqd_adv_norm_start=config.moving_average_sqd_adv_norm_start,
        moving_average_sqd_adv_norm_update_rate=config.moving_average_sqd_adv_norm_update_rate)

    def make(obs_space, action_space) -> TorchPolicy:
        return MarwilPolicy(obs_space, action_space, policy_config, loss_fn=marwil_loss,
                            seed=config.seed)

    return make


def training_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
                  policy_id: str | None = None) -> LocalIterator[tuple[SB, dict[str, float]]]:
    """MARWIL's training sub-flow: dataset batches in, ``(batch, learner stats)`` out. The
    batches need :data:`RETURNS` unless ``beta == 0`` (see :func:`returns_to_go`)."""
    return batches.for_each(TrainOneStep(workers, minibatch_size=config.minibatch_size,
                                         broadcast=False, policy_id=policy_id))


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    needs_returns = config.beta != 0
    batches = from_dataset(config.input, config.train_batch_size,
                           shuffle_buffer_size=config.shuffle_buffer_size, seed=config.seed,
                           reader="ray" if config.runtime == "ray" else "local",
                           postprocess=returns_to_go(config.gamma) if needs_returns else None)
    batches = batches.for_each(CheckDatasetSpaces(workers, config.input))
    if config.input_sampled_fraction:
        batches = MixWithSamples(batches, workers, config.input_sampled_fraction,
                                 config.train_batch_size,
                                 postprocess=returns_to_go(config.gamma) if needs_returns
                                 else None)
    train_op = training_flow(batches, workers, config)
    train_op = with_off_policy_estimation(train_op, workers, config)
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration))


def with_off_policy_estimation(train_op: LocalIterator[Any], workers: WorkerSet,
                               config: Any) -> LocalIterator[Any]:
    """``train_op`` followed by IS/WIS estimates on ``config.input`` (every
    ``evaluation_interval`` items) when ``off_policy_estimation_episodes`` is set."""
    if not config.off_policy_estimation_episodes:
        return train_op
    return train_op.for_each(OffPolicyEstimation(
        workers, config.input, config.gamma, config.off_policy_estimation_episodes,
        every=max(1, config.evaluation_interval or 1)))


@register_algorithm("marwil")
class MARWIL(AlgorithmBuilder):
    """MARWIL: advantage-weighted imitation of an offline dataset (BC when beta = 0)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)


@register_algorithm("bc")
class BC(MARWIL):
    """Behaviour cloning of an offline dataset (MARWIL with beta = 0)."""

    Config = BCConfig
