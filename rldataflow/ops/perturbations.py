"""Black-box optimizer sources: perturbation results from the workers, as a stream.

ES and ARS (``algorithms/es.py``, ``algorithms/ars.py``) read
:class:`~rldataflow.workers.perturbation_worker.PerturbationResult` s instead of sample
batches. Workers evaluate pairs as fast as they can (``gather_async``: no worker waits for
another's long episode); after the driver updates ``theta``, results still in flight were
computed around the old ``theta`` and are dropped (:class:`DropStale`), so every update uses
only perturbations of the parameters it changes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from rldataflow.data.noise_table import NoiseTable
from rldataflow.data.running_stats import RunningMeanStd
from rldataflow.flow import LocalIterator, Operator, from_actors
from rldataflow.flow.accumulate import AccumulateUntil
from rldataflow.flow.local_iterator import from_local_iterable
from rldataflow.runtime import Runtime
from rldataflow.workers import WorkerSet
from rldataflow.workers.perturbation_worker import PerturbationResult, PerturbationWorker

__all__ = ["CollectPerturbations", "DropStale", "PerturbationRollouts", "RecordPerturbations",
           "merge_obs_stats", "perturbation_noise", "perturbation_workers"]


class RecordPerturbations(Operator):
    """Count env steps and episodes, and keep the perturbed episodes' returns and lengths."""

    op_name = "RecordPerturbations"

    def __call__(self, result: PerturbationResult) -> PerturbationResult:
        counters = self.metrics.counters
        counters["env_steps_sampled"] += result.count
        counters["episodes_total"] += result.num_episodes
        counters["perturbation_pairs"] += len(result.noise_indices)
        self.metrics.record_many("episode_return", result.returns.reshape(-1).tolist())
        self.metrics.record_many("episode_len", result.lengths.reshape(-1).tolist())
        return result


class DropStale(Operator):
    """Filter: keep results made with the local worker's current weights version; counts the
    others under ``stale_pairs_dropped``. Example: ``results.filter(DropStale(workers))``"""

    op_name = "DropStale"

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, result: PerturbationResult) -> bool:
        if result.weights_version == self.workers.local_worker().weights_version:
            return True
        self.metrics.counters["stale_pairs_dropped"] += len(result.noise_indices)
        return False


def PerturbationRollouts(workers: WorkerSet, num_async: int = 1) -> LocalIterator[Any]:
    """Perturbation results of the current ``theta`` from all workers, as they are ready.

    ``num_async`` requests are in flight per worker; dead workers are replaced (current
    weights) and their requests reissued. With no remote workers the local worker evaluates.
    Example::

        results = PerturbationRollouts(workers)      # PerturbationResult, current version only
    """
    if workers.remote_workers():
        par = from_actors(workers.remote_workers(), "sample", runtime=workers.runtime,
                          name=f"PerturbationRollouts({workers.num_remote_workers} workers)")
        source = par.gather_async(num_async=num_async, on_failure=workers.replace_dead_worker)
    else:
        local = workers.local_worker()
        source = from_local_iterable(lambda: (local.sample() for _ in itertools.count()),
                                     name="PerturbationRollouts(local worker)")
    return source.for_each(RecordPerturbations()).filter(DropStale(workers))


def CollectPerturbations(min_pairs: int = 0, min_episodes: int = 0,
                         min_steps: int = 0) -> AccumulateUntil:
    """Group results until at least ``min_pairs`` pairs, ``min_episodes`` episodes and
    ``min_steps`` env steps (each list holds at least one result); use with ``for_each``, then
    ``PerturbationResult.concat``. Example::

        PerturbationRollouts(workers).for_each(CollectPerturbations(min_episodes=100))
    """
    return AccumulateUntil({"pairs": (lambda r: len(r.noise_indices), min_pairs),
                            "episodes": (lambda r: r.num_episodes, min_episodes),
                            "steps": (lambda r: r.count, min_steps)})


def perturbation_noise(noise: NoiseTable, indices: np.ndarray, dim: int) -> np.ndarray:
    """The ``(n, dim)`` noise rows of ``indices``."""
    return np.stack([noise.get(int(i), dim) for i in indices]).astype(np.float64)


def merge_obs_stats(policy: Any, result: PerturbationResult) -> None:
    """Fold the workers' observation statistics into the policy's and freeze them for the
    next iteration's rollouts (no-op without observation normalization)."""
    if policy.obs_normalization and result.obs_stats:
        policy.obs_stats.merge(RunningMeanStd.from_state(result.obs_stats))
        policy.freeze_obs_stats()


def perturbation_workers(config: Any, runtime: Runtime, policy_options: dict[str, Any]
                         ) -> WorkerSet:
    """The noise table and the :class:`PerturbationWorker` s of an ES / ARS config."""
    noise = NoiseTable.create(config.noise_size, seed=config.seed)
    kwargs = dict(env=config.env, env_config=config.env_config, noise=noise,
                  policy_options=policy_options, noise_stdev=config.noise_stdev,
                  pairs_per_sample=config.pairs_per_sample,
                  rollouts_per_perturbation=config.rollouts_per_perturbation,
                  common_env_seeds=config.common_env_seeds,
                  max_episode_steps=config.max_episode_steps, seed=config.seed)
    try:
        return WorkerSet(runtime, config.num_workers, kwargs,
                         restart_failed=config.restart_failed_workers,
                         worker_cls=PerturbationWorker)
    except BaseException:
        noise.release()
        raise
