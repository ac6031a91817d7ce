"""Base classes for reusable operators.

Any callable works with ``for_each``; these two bases add what stateful RL operators need:

* :class:`Operator` — called once per item, like a function; before each call the iterator
  that drives it sets ``self.metrics`` to *that* plan's :class:`Metrics`, so one operator object
  can sit in two plans and always count into the plan that is pulling it.
* :class:`StreamOperator` — sees the whole stream (``apply(upstream, metrics)``, a generator),
  may hold items across calls and may yield ``NOT_READY`` to wait without blocking the plan.
  Its per-stream state lives in the generator, so one object can be applied in several places
  without the streams mixing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rldataflow.flow.metrics import Metrics


class Operator:
    """An operator applied per item. Subclasses implement ``__call__(item)``.

    Example::

        class CountItems(Operator):
            def __call__(self, item):
                self.metrics.counters["items"] += 1
                return item

        it = from_range(10, num_shards=1, runtime=rt).gather_sync().for_each(CountItems())
    """

    metrics: Metrics

    @property
    def op_name(self) -> str:
        return type(self).__name__

    def __call__(self, item: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class StreamOperator:
    """An operator applied to a whole stream; ``apply`` is a generator over the upstream.

    ``upstream`` may yield ``NOT_READY``; an implementation passes it on (after doing any
    waiting-related bookkeeping) and may itself yield ``NOT_READY`` while it cannot emit.

    Example::

        class Pairs(StreamOperator):
            def apply(self, upstream, metrics):
                held = None
                for item in upstream:
                    if item is NOT_READY:
                        yield item
                    elif held is None:
                        held = item
                    else:
                        yield (held, item)
                        held = None
    """

    @property
    def op_name(self) -> str:
        return type(self).__name__

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        raise NotImplementedError
