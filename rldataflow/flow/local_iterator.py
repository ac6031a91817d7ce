"""LocalIterator: a lazy, pull-based stream in the driver (or inside one actor).

Each operator call returns a new LocalIterator node that remembers its name, the plan line that
created it and its parents; nothing runs until someone calls ``next()``. Internally every node is
a generator that may yield ``NOT_READY`` (see :mod:`rldataflow.flow.signals`) so that unions
can serve whichever branch is ready; the public ``next()`` hides that and sleeps, without
spinning, until something the plan waits on changes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from rldataflow.flow.errors import FlowError, OperatorError, creation_site, describe_exception
from rldataflow.flow.metrics import Metrics
from rldataflow.flow.operator import Operator, StreamOperator
from rldataflow.flow.provenance import source_actor
from rldataflow.flow.signals import NOT_READY, WAIT_STATE, WAKER, plan_moved, waiting_on_plan

T = TypeVar("T")
U = TypeVar("U")

# How long the outermost next() sleeps before re-checking things that cannot notify it (e.g. a
# producer thread that died without saying so). It is a safety net, not a poll: every source
# notifies the waker as soon as it has something.
_SAFETY_WAKEUP_S = 1.0


def fn_name(fn: Any) -> str:
    if isinstance(fn, (Operator, StreamOperator)):
        return fn.op_name
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name or type(fn).__name__


def _wrap(exc: Exception, node: LocalIterator) -> OperatorError:
    return OperatorError(node.name, node.site, node.shard, describe_exception(exc))


def _blocking_view(upstream: Iterator[Any]) -> Iterator[Any]:
    """The stream as a plain iterator: waits (without spinning) instead of yielding NOT_READY.

    User-written ``transform`` functions get this view, so they never see NOT_READY.
    """
    while True:
        outer_external, outer_internal = WAIT_STATE.external, WAIT_STATE.internal
        try:
            item = _pull_ready(upstream)
        except StopIteration:  # inside a generator it would become a RuntimeError (PEP 479)
            return
        finally:
            WAIT_STATE.external, WAIT_STATE.internal = outer_external, outer_internal
        yield item


def _pull_ready(stream: Iterator[Any]) -> Any:
    """Pull one item, waiting on the process-wide waker while the plan is not ready."""
    state = WAIT_STATE
    while True:
        generation = WAKER.generation
        state.external = 0
        state.internal = []
        item = next(stream)  # StopIteration ends the stream
        if item is not NOT_READY:
            return item
        if state.external == 0:
            reasons = "; ".join(dict.fromkeys(state.internal)) or "no source is waiting"
            raise FlowError(
                "the plan cannot make progress: every branch is waiting on another part of the "
                f"same plan that is never pulled ({reasons})")
        WAKER.wait(generation, _SAFETY_WAKEUP_S)


class LocalIterator(Generic[T]):
    """A lazy stream of items pulled in the driver.

    Example::

        it = from_range(6, num_shards=2, runtime=rt).gather_sync()
        it = it.for_each(lambda x: x * 10).filter(lambda x: x > 0)
        it.take(3)     # [10, 30, 40]  (round-robin over the two shards: 0, 3, 1, 4, ...)
        print(it.describe())

    A node can feed exactly one consumer; use :meth:`duplicate` to feed several.
    """

    def __init__(self, make_stream: Callable[[], Iterator[Any]], *,
                 metrics: Metrics | None = None, name: str = "from_iterator",
                 site: str | None = None, parents: Sequence[Any] = (),
                 shard: str | None = None) -> None:
        self._make_stream = make_stream
        self._stream: Iterator[Any] | None = None
        self.metrics = metrics if metrics is not None else Metrics()
        self.name = name
        self.site = site or creation_site()
        self.parents = list(parents)
        self.shard = shard
        self._consumer: tuple[str, str] | None = None
        #: set on the node a gather makes: its options, read when the gather starts
        self.gather_options: dict[str, Any] | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def _claim(self, consumer: str, site: str) -> None:
        if self._consumer is not None:
            first_name, first_site = self._consumer
            raise FlowError(
                f"{self.name} (created at {self.site}) already feeds {first_name} (at "
                f"{first_site}); it cannot also feed {consumer} (at {site}). Use "
                ".duplicate(n) to feed several consumers")
        self._consumer = (consumer, site)

    def _internal(self) -> Iterator[Any]:
        if self._stream is None:
            self._stream = self._make_stream()
        return self._stream

    def _child(self, name: str, make: Callable[[Iterator[Any]], Iterator[Any]],
               site: str | None = None) -> LocalIterator[Any]:
        site = site or creation_site()
        self._claim(name, site)
        return LocalIterator(lambda: make(self._internal()), metrics=self.metrics, name=name,
                             site=site, parents=[self], shard=self.shard)

    # -- pulling ------------------------------------------------------------------------------
    def __iter__(self) -> LocalIterator[T]:
        return self

    def __next__(self) -> T:
        if self._consumer is None:
            self._consumer = ("next()", "<caller>")
        try:
            return _pull_ready(self._internal())
        except (OperatorError, FlowError) as err:
            # The frames between here and the failing operator are generator plumbing; the
            # message names the operator and the chained cause holds the user's own frames.
            err.__traceback__ = None
            raise err from err.__cause__

    def take(self, n: int) -> list[T]:
        """Pull up to ``n`` items and return them as a list.

        Example: ``from_range(5, num_shards=1, runtime=rt).gather_sync().take(2) == [0, 1]``
        """
        return list(itertools.islice(self, n))

    def show(self, n: int = 20) -> None:
        """Print up to ``n`` items (a debugging aid)."""
        for item in self.take(n):
            print(item)

    # -- per-item operators --------------------------------------------------------------------
    def for_each(self, fn: Callable[[T], U] | Operator | StreamOperator) -> LocalIterator[U]:
        """Apply ``fn`` to every item.

        ``fn`` may be a plain function, an :class:`Operator` (gets the plan's ``metrics``) or a
        :class:`StreamOperator` (sees the whole stream). Example:
        ``it.for_each(lambda batch: batch.count)``
        """
        name = f"for_each({fn_name(fn)})"
        if isinstance(fn, StreamOperator):
            return self._apply_stream_operator(name, fn)

        node: LocalIterator[U]

        if isinstance(fn, Operator):
            def make(up: Iterator[Any]) -> Iterator[Any]:
                metrics = node.metrics
                for item in up:
                    if item is NOT_READY:
                        yield item
                        continue
                    fn.metrics = metrics
                    try:
                        out = fn(item)
                    except (OperatorError, FlowError):
                        raise
                    except Exception as exc:
                        raise _wrap(exc, node) from exc
                    yield out
        else:
            def make(up: Iterator[Any]) -> Iterator[Any]:
                for item in up:
                    if item is NOT_READY:
                        yield item
                        continue
                    try:
                        out = fn(item)
                    except (OperatorError, FlowError):
                        raise
                    except Exception as exc:
                        raise _wrap(exc, node) from exc
                    yield out

        node = self._child(name, make)
        return node

    def _apply_stream_operator(self, name: str, op: StreamOperator) -> LocalIterator[Any]:
        node: LocalIterator[Any]

        def make(up: Iterator[Any]) -> Iterator[Any]:
            inner = op.apply(up, node.metrics)
            while True:
                try:
                    item = next(inner)
                except StopIteration:
                    return
                except (OperatorError, FlowError):
                    raise
                except Exception as exc:
                    raise _wrap(exc, node) from exc
                yield item

        node = self._child(name, make)
        return node

    def filter(self, fn: Callable[[T], bool]) -> LocalIterator[T]:
        """Keep the items for which ``fn(item)`` is true. Example: ``it.filter(lambda x: x % 2)``"""
        node: LocalIterator[T]

        def make(up: Iterator[Any]) -> Iterator[Any]:
            for item in up:
                if item is NOT_READY:
                    yield item
                    continue
                if isinstance(fn, Operator):
                    fn.metrics = node.metrics
                try:
                    keep = fn(item)
                except (OperatorError, FlowError):
                    raise
                except Exception as exc:
                    raise _wrap(exc, node) from exc
                if keep:
                    yield item

        node = self._child(f"filter({fn_name(fn)})", make)
        return node

    def batch(self, n: int) -> LocalIterator[list[T]]:
        """Group items into lists of ``n`` (the last list may be shorter).

        Example: ``from_range(5, 1, runtime=rt).gather_sync().batch(2).take(3)`` gives
        ``[[0, 1], [2, 3], [4]]``.
        """
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")

        def make(up: Iterator[Any]) -> Iterator[Any]:
            buf: list[Any] = []
            for item in up:
                if item is NOT_READY:
                    yield item
                    continue
                buf.append(item)
                if len(buf) >= n:
                    yield buf
                    buf = []
            if buf:
                yield buf

        return self._child(f"batch({n})", make)

    def flatten(self) -> LocalIterator[Any]:
        """Turn a stream of iterables into a stream of their items (the inverse of batch)."""

        def make(up: Iterator[Any]) -> Iterator[Any]:
            for item in up:
                if item is NOT_READY:
                    yield item
                    continue
                yield from item

        return self._child("flatten()", make)

    def combine(self, fn: Callable[[T], Iterable[U]]) -> LocalIterator[U]:
        """Flat-map: ``fn`` returns a list (possibly empty) of output items per input item."""
        node: LocalIterator[U]

        def make(up: Iterator[Any]) -> Iterator[Any]:
            for item in up:
                if item is NOT_READY:
                    yield item
                    continue
                if isinstance(fn, Operator):
                    fn.metrics = node.metrics
                try:
                    outs = list(fn(item))
                except (OperatorError, FlowError):
                    raise
                except Exception as exc:
                    raise _wrap(exc, node) from exc
                yield from outs

        node = self._child(f"combine({fn_name(fn)})", make)
        return node

    def transform(self, fn: Callable[[Iterator[T]], Iterable[U]]) -> LocalIterator[U]:
        """Apply a whole-stream function ``Iterator -> Iterator`` (e.g. a generator function).

        The function sees a plain iterator (it never sees NOT_READY). Example::

            def running_sum(items):
                total = 0
                for x in items:
                    total += x
                    yield total

            it.transform(running_sum)
        """
        if isinstance(fn, StreamOperator):
            return self._apply_stream_operator(f"transform({fn.op_name})", fn)
        node: LocalIterator[U]

        def make(up: Iterator[Any]) -> Iterator[Any]:
            inner = iter(fn(_blocking_view(up)))
            while True:
                try:
                    item = next(inner)
                except StopIteration:
                    return
                except (OperatorError, FlowError):
                    raise
                except Exception as exc:
                    raise _wrap(exc, node) from exc
                yield item

        node = self._child(f"transform({fn_name(fn)})", make)
        return node

    def zip_with_source_actor(self) -> LocalIterator[tuple[Any, T]]:
        """Pair each item with the actor it came from: ``(actor, item)``.

        Right after a gather, any item: the gather then yields ``(actor, item)`` envelopes
        (as with ``with_source=True``). Further down, the item must carry its source
        (:mod:`rldataflow.flow.provenance`: sample batches do, stamped by the gather that
        pulled them; concatenated batches pair with their last source).
        """
        node: LocalIterator[Any]
        if self.gather_options is not None and self._stream is None:
            self.gather_options["with_source"] = True
            node = self._child("zip_with_source_actor()", lambda up: up)
            return node

        def make(up: Iterator[Any]) -> Iterator[Any]:
            for item in up:
                if item is NOT_READY:
                    yield item
                    continue
                actor = source_actor(item)
                if actor is None:
                    raise OperatorError(node.name, node.site, node.shard,
                                        f"the {type(item).__name__} item carries no source "
                                        "actor (gather with with_source=True for items that "
                                        "cannot carry one)")
                yield (actor, item)

        node = self._child("zip_with_source_actor()", make)
        return node

    # -- many streams ---------------------------------------------------------------------------
    def union(self, *others: LocalIterator[Any], deterministic: bool = False,
              round_robin_weights: Sequence[int | str] | None = None) -> LocalIterator[Any]:
        """Merge this stream with others into one.

        ``deterministic=True``: round-robin, ``round_robin_weights[i]`` items from input ``i``
        per turn (``"*"``: as many as are ready without waiting, at least one and at most
        ``concurrency.STAR_MAX_ITEMS``). Otherwise items come from whichever input is ready,
        without spinning while none is. All inputs share one :class:`Metrics`. Example:
        ``a.union(b, deterministic=True, round_robin_weights=[1, 2])``
        """
        from rldataflow.flow.concurrency import union_streams

        return union_streams([self, *others], deterministic=deterministic,
                             round_robin_weights=round_robin_weights, site=creation_site())

    def duplicate(self, n: int, max_buffered: int = 16) -> list[LocalIterator[T]]:
        """Split into ``n`` streams that each see every item.

        A branch that runs ahead waits (yields NOT_READY) while any other branch already holds
        ``max_buffered`` items it has not consumed: memory stays bounded. Example::

            a, b = it.duplicate(2)
            Concurrently([a.for_each(f), b.for_each(g)], mode="async")
        """
        if n < 1:
            raise ValueError(f"duplicate needs n >= 1, got {n}")
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        site = creation_site()
        self._claim(f"duplicate({n})", site)
        buffers: list[deque[Any]] = [deque() for _ in range(n)]
        exhausted = [False]

        def make_child(index: int) -> Callable[[], Iterator[Any]]:
            def stream() -> Iterator[Any]:
                mine = buffers[index]
                while True:
                    if mine:
                        item = mine.popleft()
                        plan_moved()  # a sibling held back by this buffer may go on now
                        yield item
                        continue
                    if exhausted[0]:
                        return
                    full = [j for j, b in enumerate(buffers)
                            if j != index and len(b) >= max_buffered]
                    if full:
                        waiting_on_plan(f"duplicate branch {full[0]} of {self.name} holds "
                                        f"{max_buffered} unconsumed items")
                        yield NOT_READY
                        continue
                    try:
                        item = next(self._internal())
                    except StopIteration:
                        exhausted[0] = True
                        return
                    if item is NOT_READY:
                        yield item
                        continue
                    for j, b in enumerate(buffers):
                        if j != index:
                            b.append(item)
                    yield item

            return stream

        return [LocalIterator(make_child(i), metrics=self.metrics,
                              name=f"duplicate({n})[{i}]", site=site, parents=[self],
                              shard=self.shard)
                for i in range(n)]

    # -- introspection --------------------------------------------------------------------------
    def describe(self) -> str:
        """The plan feeding this iterator as an indented text tree (with plan file:line)."""
        from rldataflow.flow.describe import describe

        return describe(self)

    def to_dot(self) -> str:
        """The plan as a Graphviz DOT graph."""
        from rldataflow.flow.describe import to_dot

        return to_dot(self)

    def to_mermaid(self) -> str:
        """The plan as a Mermaid flowchart."""
        from rldataflow.flow.describe import to_mermaid

        return to_mermaid(self)

    def __repr__(self) -> str:
        return f"LocalIterator[{self.name} @ {self.site}]"


def from_local_iterable(iterable: Iterable[Any] | Callable[[], Iterable[Any]], *,
                        name: str = "from_iterable", metrics: Metrics | None = None,
                        shard: str | None = None, site: str | None = None) -> LocalIterator[Any]:
    """A LocalIterator over an iterable (or a function returning one), in this process."""
    node: LocalIterator[Any]

    def make() -> Iterator[Any]:
        try:
            source = iter(iterable() if callable(iterable) else iterable)
        except Exception as exc:
            raise _wrap(exc, node) from exc
        while True:
            try:
                item = next(source)
            except StopIteration:
                return
            except (OperatorError, FlowError):
                raise
            except Exception as exc:
                raise _wrap(exc, node) from exc
            yield item

    node = LocalIterator(make, metrics=metrics, name=name, site=site or creation_site(),
                         shard=shard)
    return node
