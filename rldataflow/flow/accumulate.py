"""``AccumulateUntil``: group a stream's items into lists that are each "big enough".

``batch(n)`` groups a fixed number of items; black-box optimizers instead need "results until
at least 1,000 episodes and 10,000 env steps" (ES), or "until N directions" (ARS), whatever
number of items that takes. Each measure is a function of an item; a list is emitted as soon
as every measure's sum reaches its minimum, and the next list starts empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rldataflow.flow.metrics import Metrics
from rldataflow.flow.operator import StreamOperator
from rldataflow.flow.signals import NOT_READY

__all__ = ["AccumulateUntil"]


class AccumulateUntil(StreamOperator):
    """Emit lists of items once, for every ``name``, the sum of ``size(item)`` reaches ``min``.

    ``minimums`` maps a measure's name to ``(size_fn, minimum)``; a minimum of 0 or less is
    met at once (but every list holds at least one item). The sums of the emitted list are
    added to ``metrics.info["accumulated"]`` (``{name: sum}``, of the last list).

    Example::

        it.for_each(AccumulateUntil({"episodes": (lambda r: r.num_episodes, 100),
                                     "steps": (lambda r: r.count, 5_000)}))
        from_items(list(range(10)), num_shards=1).gather_sync().for_each(
            AccumulateUntil({"sum": (lambda x: x, 5)}))   # [0, 1, 2, 3], [4, 5], [6], ...

    Items left over when the upstream ends (a list not yet big enough) are dropped.
    """

    def __init__(self, minimums: Mapping[str, tuple[Callable[[Any], float], float]]) -> None:
        if not minimums:
            raise ValueError("AccumulateUntil needs at least one measure")
        self.minimums = dict(minimums)

    @property
    def op_name(self) -> str:
        parts = ", ".join(f"{name} >= {m}" for name, (_, m) in self.minimums.items())
        return f"AccumulateUntil({parts})"

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        held: list[Any] = []
        sums = dict.fromkeys(self.minimums, 0.0)
        for item in upstream:
            if item is NOT_READY:
                yield item
                continue
            held.append(item)
            for name, (size, _) in self.minimums.items():
                sums[name] += size(item)
            if all(sums[name] >= m for name, (_, m) in self.minimums.items()):
                metrics.info["accumulated"] = dict(sums)
                out, held = held, []
                sums = dict.fromkeys(self.minimums, 0.0)
                yield out
