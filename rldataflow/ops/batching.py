"""Shaping the stream of batches: concatenation, selection, standardization."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rldataflow.data import MultiAgentBatch, SampleBatch
from rldataflow.flow import NOT_READY, Metrics, StreamOperator


class ConcatBatches(StreamOperator):
    """Buffer batches until ``min_batch_size`` env steps are held, then emit them as one.

    The buffer is never larger than one output batch. Example::

        rollouts.for_each(ConcatBatches(min_batch_size=4000))
    """

    def __init__(self, min_batch_size: int) -> None:
        if min_batch_size < 1:
            raise ValueError(f"ConcatBatches: min_batch_size must be >= 1, got {min_batch_size}")
        self.min_batch_size = int(min_batch_size)

    @property
    def op_name(self) -> str:
        return f"ConcatBatches({self.min_batch_size})"

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        held: list[Any] = []
        count = 0
        for batch in upstream:
            if batch is NOT_READY:
                yield batch
                continue
            held.append(batch)
            count += batch.count
            if count >= self.min_batch_size:
                out = held[0] if len(held) == 1 else type(held[0]).concat_samples(held)
                held, count = [], 0
                yield out


class SelectExperiences:
    """Keep only the given policies' part of a :class:`MultiAgentBatch`.

    With one policy id the output is that policy's :class:`SampleBatch`. Example::

        rollouts.for_each(SelectExperiences(["ppo_policy"]))
    """

    def __init__(self, policy_ids: Sequence[str]) -> None:
        self.policy_ids = list(policy_ids)
        self.__name__ = f"SelectExperiences({self.policy_ids})"

    def __call__(self, batch: Any) -> Any:
        if not isinstance(batch, MultiAgentBatch):
            return batch
        selected = batch.select(self.policy_ids)
        if len(self.policy_ids) == 1:
            one = selected.policy_batches.get(self.policy_ids[0]) or SampleBatch()
            one.set_sources(batch.sources)  # the workers that sampled it, for weight sync
            return one
        return selected


class StandardizeFields:
    """Shift and scale the given columns to mean 0 and std 1 (e.g. PPO's advantages).

    Example: ``batches.for_each(StandardizeFields(["advantages"]))``
    """

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)
        self.__name__ = f"StandardizeFields({self.fields})"

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        for name in self.fields:
            if name not in batch:
                raise KeyError(f"batch has no column {name!r} (columns: {sorted(batch)})")
            values = batch[name].astype(np.float32)
            batch[name] = (values - values.mean()) / max(float(values.std()), 1e-8)
        return batch
