"""MixWithSamples: train on a dataset and on fresh samples in a set ratio (mixed offline/online).

An offline algorithm's ``input_sampled_fraction`` (CQL, MARWIL, BC) is this one operator: the
dataset's batches and batches sampled by the rollout workers with the current policy take
turns in a round-robin ``Concurrently`` whose weights give that fraction of fresh batches.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from rldataflow.data import SampleBatch
from rldataflow.flow import Concurrently, LocalIterator
from rldataflow.ops.batching import ConcatBatches
from rldataflow.ops.rollouts import ParallelRollouts
from rldataflow.ops.weights import BroadcastWeights
from rldataflow.utils.config import ConfigError
from rldataflow.workers import WorkerSet


def mixture_weights(sampled_fraction: float, key: str = "input_sampled_fraction") -> list[int]:
    """``[dataset, sampled]`` round-robin turns closest to ``sampled_fraction`` (denominator
    at most 20), e.g. 0.5 -> [1, 1], 0.25 -> [3, 1]; ``key`` names the setting in errors.

    Example::

        >>> mixture_weights(0.25)
        [3, 1]
    """
    if not 0 < sampled_fraction < 1:
        raise ConfigError(f"config key {key!r} must be in (0, 1) to mix, got {sampled_fraction}")
    frac = Fraction(sampled_fraction).limit_denominator(20)
    if frac.numerator == 0:
        raise ConfigError(f"config key {key!r} ({sampled_fraction}) rounds to 0 (use 0 for "
                          "offline only, or at least 0.05)")
    return [frac.denominator - frac.numerator, frac.numerator]


def MixWithSamples(dataset_batches: LocalIterator[SampleBatch], workers: WorkerSet,
                   sampled_fraction: float, batch_size: int,
                   postprocess: Callable[[SampleBatch], SampleBatch] | None = None
                   ) -> LocalIterator[SampleBatch]:
    """``dataset_batches`` interleaved with fresh ``batch_size``-row batches from ``workers``,
    so that ``sampled_fraction`` of the batches are fresh. ``postprocess`` runs on each fresh
    batch (the per-chunk work the dataset's batches got, e.g. returns-to-go); the workers get
    the learner's weights after each fresh batch, so the next one is sampled with them.
    Example::

        batches = MixWithSamples(from_dataset(path, 512), workers, 0.5, 512)
        train_op = batches.for_each(TrainOneStep(workers, broadcast=False))
    """
    weights = mixture_weights(sampled_fraction)
    fresh = ParallelRollouts(workers, mode="bulk_sync").for_each(ConcatBatches(batch_size))
    if postprocess is not None:
        fresh = fresh.for_each(postprocess)
    fresh = fresh.for_each(BroadcastWeights(workers))
    return Concurrently([dataset_batches, fresh], mode="round_robin",
                        round_robin_weights=weights)
