"""ES: evolution strategies (Salimans et al. 2017, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", arXiv:1703.03864).

Workers evaluate antithetic perturbations ``theta +- sigma * eps_i`` of a deterministic policy,
``eps_i`` read from a shared noise table, and send back only ``(i, F+_i, F-_i, lengths)``. The
driver estimates the gradient of the expected return of the Gaussian-smoothed policy (section
2, Algorithm 2) from centered ranks of the returns (fitness shaping, section 2.1 and Wierstra
et al. 2014), adds weight decay and takes an Adam step on the flat ``theta``:

    u_j   = rank(F_j) / (2n - 1) - 1/2                    (over all 2n returns)
    g     = 1/(2n) * sum_i (u+_i - u-_i) * eps_i
    theta = Adam(theta, -g + l2_coeff * theta)

``1/sigma`` of the paper's estimator is folded into the step size, as in the paper's code;
``l2_coeff`` is the paper's weight decay. Evaluation is deterministic (argmax / mean action).

Dataflow::

    PerturbationRollouts (as ready, current theta only) -> CollectPerturbations(pairs, steps)
      -> ESUpdate (centered ranks, weight decay, Adam) -> BroadcastWeights -> report
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.flow import Operator, Plan
from rldataflow.ops import BroadcastWeights, StandardMetricsReporting
from rldataflow.ops.perturbations import (
    CollectPerturbations,
    PerturbationRollouts,
    merge_obs_stats,
    perturbation_noise,
    perturbation_workers,
)
from rldataflow.runtime import Runtime
from rldataflow.utils.config import AlgorithmConfig, ConfigError
from rldataflow.workers import WorkerSet
from rldataflow.workers.perturbation_worker import PerturbationResult

__all__ = ["Config", "ESUpdate", "centered_ranks", "es_gradient", "plan"]


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Config(AlgorithmConfig):
    """ES settings; the defaults solve CartPole-v1 (see docs/algorithms.md for the figures).

    Salimans et al. used sigma 0.02, Adam step size 0.01 and weight decay 0.005 on MuJoCo with
    thousands of episodes per step; CartPole needs far fewer, with a larger sigma.
    """

    lr: float = field(default=0.03, metadata=_h("Adam step size on theta"))
    noise_stdev: float = field(default=0.05, metadata=_h("sigma, the perturbation scale"))
    l2_coeff: float = field(default=0.005, metadata=_h("weight decay added to the gradient"))
    episodes_per_batch: int = field(
        default=40, metadata=_h("perturbed episodes per update (at least; 2 per pair)"))
    train_batch_size: int = field(
        default=1, metadata=_h("env steps per update (at least; 1: episodes decide)"))
    hiddens: tuple[int, ...] = field(
        default=(16,), metadata=_h("hidden layer sizes of the policy (() = linear)"))
    obs_normalization: bool = field(
        default=False, metadata=_h("normalize observations by running mean/std of all workers"))
    noise_size: int = field(
        default=10_000_000, metadata=_h("float32 numbers in the shared noise table"))
    pairs_per_sample: int = field(default=1, metadata=_h("antithetic pairs per worker request"))
    rollouts_per_perturbation: int = field(
        default=1, metadata=_h("episodes per perturbation (its return is their mean)"))
    common_env_seeds: bool = field(
        default=False, metadata=_h("all perturbations of an update start from the same env "
                                   "seeds (variance reduction for random start states)"))
    num_async: int = field(default=1, metadata=_h("worker requests in flight per worker"))
    max_episode_steps: int | None = field(
        default=None, metadata=_h("cap on episode length (None: the env's time limit)"))

    def validate(self) -> None:
        super().validate()
        validate_perturbation_config(self)
        if self.episodes_per_batch < 2:
            raise ConfigError("config key 'episodes_per_batch' must be >= 2 (one pair)")


def validate_perturbation_config(config: Any) -> None:
    """Checks ES and ARS share."""
    for key in ("noise_stdev", "lr"):
        if not getattr(config, key) > 0:
            raise ConfigError(f"config key {key!r} must be > 0")
    for key in ("pairs_per_sample", "num_async", "rollouts_per_perturbation"):
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1")
    if config.noise_size < 1_000:
        raise ConfigError("config key 'noise_size' must be >= 1000")


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of all entries of ``x`` scaled to [-0.5, 0.5], same shape (ties: by position)."""
    flat = np.asarray(x).reshape(-1)
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    if flat.size > 1:
        ranks /= flat.size - 1
    return (ranks - 0.5).reshape(np.shape(x))


def es_gradient(returns: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``1/(2n) sum_i (u+_i - u-_i) eps_i`` for returns ``(n, 2)`` and noise rows ``(n, dim)``."""
    ranks = centered_ranks(returns)
    return (ranks[:, 0] - ranks[:, 1]) @ noise / returns.size


class ESUpdate(Operator):
    """Centered-rank gradient, weight decay and an Adam step on the local worker's ``theta``;
    the new weights get the next version. Emits ``(result, learner stats)``."""

    op_name = "ESUpdate(centered ranks, Adam)"

    def __init__(self, workers: WorkerSet, config: Config) -> None:
        self.workers = workers
        self.config = config

    def __call__(self, result: PerturbationResult) -> tuple[PerturbationResult, dict]:
        worker = self.workers.local_worker()
        policy, cfg = worker.policy, self.config
        eps = perturbation_noise(worker.noise, result.noise_indices, policy.num_params)
        g = es_gradient(result.returns, eps)
        theta = policy.theta.astype(np.float64)
        new = policy.optimizer(cfg.lr).step(theta, -g + cfg.l2_coeff * theta)
        merge_obs_stats(policy, result)
        policy.set_weights({**policy.get_weights(), "theta": new})
        stats = {"grad_norm": float(np.linalg.norm(g)), "theta_norm": float(np.linalg.norm(new)),
                 "update_ratio": float(np.linalg.norm(new - theta) / (np.linalg.norm(theta)
                                                                      + 1e-8)),
                 "pairs": len(result.noise_indices),
                 "perturbed_return_mean": float(result.returns.mean())}
        self.metrics.counters["env_steps_trained"] += result.count
        self.metrics.info["learner"] = stats
        return result, stats


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    train_op = (PerturbationRollouts(workers, num_async=config.num_async)
                .for_each(CollectPerturbations(min_episodes=config.episodes_per_batch,
                                               min_steps=config.train_batch_size))
                .for_each(PerturbationResult.concat)
                .for_each(ESUpdate(workers, config))
                .for_each(BroadcastWeights(workers)))
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration),
                resources=[workers.local_worker().noise])


@register_algorithm("es")
class ES(AlgorithmBuilder):
    """Evolution strategies: antithetic perturbations, centered ranks, Adam on the driver."""

    Config = Config

    def make_workers(self, config: Config, runtime: Runtime) -> WorkerSet:
        if config.policies:
            raise ConfigError("config key 'policies': ES trains one (single-agent) policy")
        return perturbation_workers(config, runtime, dict(
            hiddens=config.hiddens, activation=config.activation,
            obs_normalization=config.obs_normalization))

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)
