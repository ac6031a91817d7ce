"""ARS: augmented random search (Mania, Guy and Recht 2018, "Simple random search provides a
competitive approach to reinforcement learning", arXiv:1803.07055), version V2-t.

A linear policy ``a = M (x - mu) / sigma_x`` (an MLP is optional) is improved by finite
differences along random directions: each iteration, workers evaluate ``N`` antithetic pairs
``M +- nu * delta_k`` (``delta_k`` from the shared noise table) and the driver, following
Algorithm 2 of the paper:

* keeps the ``b`` directions with the largest ``max(r+_k, r-_k)`` (V2-t; ``b = N`` is V2),
* scales the step by the standard deviation ``sigma_R`` of the ``2b`` returns it uses:

      M <- M + alpha / (b * sigma_R) * sum_{k <= b} (r+_k - r-_k) * delta_k

* normalizes observations (V2) by the mean and standard deviation of every state seen so far,
  merged from the workers' per-request statistics and frozen for the next iteration.

Dataflow::

    PerturbationRollouts (as ready, current M only) -> CollectPerturbations(N directions)
      -> ARSUpdate (top-b, sigma_R-scaled step, merge obs stats) -> BroadcastWeights -> report
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.algorithms.es import validate_perturbation_config
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

__all__ = ["ARSUpdate", "Config", "ars_step", "plan"]


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Config(AlgorithmConfig):
    """ARS V2-t settings (the paper's table 9 ranges: alpha 0.01-0.02, nu 0.01-0.03, N 8-60,
    b <= N); the defaults solve CartPole-v1 and Pendulum-v1 (see docs/algorithms.md)."""

    lr: float = field(default=0.02, metadata=_h("alpha, the step size"))
    noise_stdev: float = field(default=0.03, metadata=_h("nu, the exploration noise scale"))
    num_directions: int = field(default=16, metadata=_h("N, directions per iteration"))
    top_directions: int = field(
        default=8, metadata=_h("b, best directions used in the step (b = N: ARS V2)"))
    hiddens: tuple[int, ...] = field(
        default=(), metadata=_h("hidden layer sizes (() = linear, the paper's policy)"))
    obs_normalization: bool = field(
        default=True, metadata=_h("V2: normalize states by the running mean/std of all states"))
    noise_size: int = field(
        default=10_000_000, metadata=_h("float32 numbers in the shared noise table"))
    pairs_per_sample: int = field(default=1, metadata=_h("directions per worker request"))
    rollouts_per_perturbation: int = field(
        default=1, metadata=_h("episodes per perturbation (its return is their mean)"))
    common_env_seeds: bool = field(
        default=False, metadata=_h("all directions of an update start from the same env seeds "
                                   "(variance reduction for random start states)"))
    num_async: int = field(default=1, metadata=_h("worker requests in flight per worker"))
    max_episode_steps: int | None = field(
        default=None, metadata=_h("cap on episode length (None: the env's time limit)"))

    def validate(self) -> None:
        super().validate()
        validate_perturbation_config(self)
        if self.num_directions < 1:
            raise ConfigError("config key 'num_directions' must be >= 1")
        if not 1 <= self.top_directions <= self.num_directions:
            raise ConfigError(f"config key 'top_directions' must be in [1, num_directions="
                              f"{self.num_directions}], got {self.top_directions}")


def ars_step(returns: np.ndarray, noise: np.ndarray, lr: float, top: int
             ) -> tuple[np.ndarray, float]:
    """The V2-t step for returns ``(N, 2)`` and directions ``(N, dim)``: ``(step, sigma_R)``."""
    best = np.argsort(-returns.max(axis=1), kind="stable")[:top]
    used = returns[best]
    sigma_r = float(used.std())
    diff = used[:, 0] - used[:, 1]
    if sigma_r < 1e-8:  # all 2b returns equal: every difference is 0, so is the step
        return np.zeros(noise.shape[1]), sigma_r
    return lr / (top * sigma_r) * (diff @ noise[best]), sigma_r


class ARSUpdate(Operator):
    """The ARS V2-t step on the local worker's ``M`` and the observation statistics merge;
    the new weights get the next version. Emits ``(result, learner stats)``."""

    op_name = "ARSUpdate(top-b, sigma_R)"

    def __init__(self, workers: WorkerSet, config: Config) -> None:
        self.workers = workers
        self.config = config

    def __call__(self, result: PerturbationResult) -> tuple[PerturbationResult, dict]:
        worker = self.workers.local_worker()
        policy, cfg = worker.policy, self.config
        deltas = perturbation_noise(worker.noise, result.noise_indices, policy.num_params)
        top = min(cfg.top_directions, len(result.noise_indices))
        step, sigma_r = ars_step(result.returns, deltas, cfg.lr, top)
        new = (policy.theta + step).astype(np.float32)
        merge_obs_stats(policy, result)
        policy.set_weights({**policy.get_weights(), "theta": new})
        stats = {"sigma_returns": sigma_r, "step_norm": float(np.linalg.norm(step)),
                 "theta_norm": float(np.linalg.norm(new)), "directions": len(deltas),
                 "obs_count": int(policy.obs_stats.count),
                 "perturbed_return_mean": float(result.returns.mean())}
        self.metrics.counters["env_steps_trained"] += result.count
        self.metrics.info["learner"] = stats
        return result, stats


def plan(workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
    train_op = (PerturbationRollouts(workers, num_async=config.num_async)
                .for_each(CollectPerturbations(min_pairs=config.num_directions))
                .for_each(PerturbationResult.concat)
                .for_each(ARSUpdate(workers, config))
                .for_each(BroadcastWeights(workers)))
    return Plan(StandardMetricsReporting(train_op, workers,
                                         min_time_s=config.min_time_s_per_iteration,
                                         min_steps=config.min_steps_per_iteration),
                resources=[workers.local_worker().noise])


@register_algorithm("ars")
class ARS(AlgorithmBuilder):
    """Augmented random search (V2-t): linear policy, top-b directions, normalized states."""

    Config = Config

    def make_workers(self, config: Config, runtime: Runtime) -> WorkerSet:
        if config.policies:
            raise ConfigError("config key 'policies': ARS trains one (single-agent) policy")
        return perturbation_workers(config, runtime, dict(
            hiddens=config.hiddens, activation=config.activation,
            obs_normalization=config.obs_normalization))

    def make_plan(self, workers: WorkerSet, config: Config) -> Plan[dict[str, Any]]:
        return plan(workers, config)
