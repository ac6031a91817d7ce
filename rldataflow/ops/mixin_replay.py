"""MixInReplay: replay recent batches alongside new ones (IMPALA's optional experience replay)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from rldataflow.flow import NOT_READY, Metrics, StreamOperator


class MixInReplay(StreamOperator):
    """Pass every batch on, then ``replay_proportion`` replayed batches on average.

    New batches are kept in a ring buffer of at most ``capacity`` batches (the oldest drops out:
    memory stays bounded). After each new batch, ``floor(p)`` batches drawn uniformly from the
    buffer follow it, plus one more with probability ``p - floor(p)``; the new batch itself may
    be drawn. Replayed batches carry no episode ``stats`` (an episode is counted once) and are
    counted in ``env_steps_replayed``. Put it before ``ConcatBatches`` so the train batches mix
    new and replayed rows. Example::

        rollouts.for_each(MixInReplay(replay_proportion=0.5, capacity=100))
                .for_each(ConcatBatches(512))
    """

    def __init__(self, replay_proportion: float, capacity: int, seed: int | None = 0) -> None:
        if replay_proportion < 0:
            raise ValueError(f"MixInReplay: replay_proportion must be >= 0, got "
                             f"{replay_proportion}")
        if capacity < 1:
            raise ValueError(f"MixInReplay: capacity must be >= 1, got {capacity}")
        self.replay_proportion = float(replay_proportion)
        self.capacity = int(capacity)
        self.seed = seed

    @property
    def op_name(self) -> str:
        return f"MixInReplay(proportion={self.replay_proportion}, capacity={self.capacity})"

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        buffer: deque[Any] = deque(maxlen=self.capacity)
        rng = np.random.default_rng(self.seed)
        whole, frac = divmod(self.replay_proportion, 1.0)
        for batch in upstream:
            if batch is NOT_READY:
                yield batch
                continue
            # A stats-free view: replaying it must not count its episodes again.
            buffer.append(batch.slice(0, batch.count) if hasattr(batch, "slice") else batch)
            yield batch
            n = int(whole) + int(frac > 0 and rng.random() < frac)
            for _ in range(n):
                replayed = buffer[int(rng.integers(len(buffer)))]
                metrics.counters["env_steps_replayed"] += replayed.count
                yield replayed
