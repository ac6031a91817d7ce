"""Enqueue / Dequeue: hand items to and from a thread (a learner) through bounded queues.

Both sides wait without spinning: the queue is hooked so every put and get notifies the plan's
waker, and a full or empty queue makes the operator yield NOT_READY so other branches of an
async Concurrently keep running (the back-pressure RLlib's version lost by dropping items).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from rldataflow.flow.errors import OperatorError, creation_site, describe_exception
from rldataflow.flow.local_iterator import LocalIterator
from rldataflow.flow.metrics import Metrics
from rldataflow.flow.operator import StreamOperator
from rldataflow.flow.signals import NOT_READY, WAKER, waiting_on_external

_HOOK_LOCK = threading.Lock()
# The uncaught exception each thread died of (kept by our threading.excepthook), so that a
# Dequeue can chain the producer's own error even when the thread did not store it itself.
_THREAD_ERRORS: weakref.WeakKeyDictionary[threading.Thread, BaseException] = \
    weakref.WeakKeyDictionary()


def _keep_thread_errors() -> None:
    """Chain ``threading.excepthook`` to remember each thread's uncaught exception (idempotent)."""
    previous = threading.excepthook
    if getattr(previous, "_rldataflow_keeps_errors", False):
        return

    def hook(args: Any) -> None:
        if args.thread is not None and args.exc_value is not None:
            try:
                _THREAD_ERRORS[args.thread] = args.exc_value
            except TypeError:  # not weak-referenceable
                pass
        previous(args)

    hook._rldataflow_keeps_errors = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _hook_queue(q: queue.Queue) -> None:
    """Make every put and get on ``q`` notify the waker (idempotent)."""
    with _HOOK_LOCK:
        _keep_thread_errors()
        if getattr(q, "_rldataflow_hooked", False):
            return
        if not isinstance(q, queue.Queue):
            raise TypeError(f"expected a queue.Queue, got {type(q).__name__}")
        if q.maxsize <= 0:
            raise ValueError("Enqueue/Dequeue need a bounded queue.Queue(maxsize=N): an "
                             "unbounded one lets a slow consumer grow memory without limit")
        put, get = q._put, q._get

        def notifying_put(item: Any) -> None:
            put(item)
            WAKER.notify()

        def notifying_get() -> Any:
            item = get()
            WAKER.notify()
            return item

        q._put = notifying_put  # type: ignore[method-assign]
        q._get = notifying_get  # type: ignore[method-assign]
        q._rldataflow_hooked = True  # type: ignore[attr-defined]


class Enqueue(StreamOperator):
    """Put each item into a bounded queue (for a learner thread), then pass it on.

    When the queue is full the item is held and the stream yields NOT_READY until the consumer
    makes room: nothing is dropped and nothing spins. Example::

        in_queue = queue.Queue(maxsize=4)
        batches.for_each(Enqueue(in_queue))
    """

    def __init__(self, output_queue: queue.Queue) -> None:
        _hook_queue(output_queue)
        self.queue = output_queue

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        q = self.queue
        for item in upstream:
            if item is NOT_READY:
                yield item
                continue
            while True:
                try:
                    q.put_nowait(item)
                    break
                except queue.Full:
                    waiting_on_external()
                    yield NOT_READY
            yield item


def Dequeue(input_queue: queue.Queue,
            check: Callable[[], bool] | threading.Thread | None = None) -> LocalIterator[Any]:
    """A stream of the items a thread puts into a bounded queue.

    ``check`` says whether the producer is still alive (a callable returning bool, or the
    thread itself). If it died, the stream raises an :class:`OperatorError` naming it, with the
    thread's own exception chained (its ``error`` attribute if it kept one, else the uncaught
    exception its ``run`` raised). Example::

        learner = LearnerThread(...)
        results = Dequeue(learner.outqueue, check=learner)
    """
    _hook_queue(input_queue)
    site = creation_site()
    node: LocalIterator[Any]
    if isinstance(check, threading.Thread):
        thread = check
        alive: Callable[[], bool] | None = thread.is_alive
        producer = f"thread {thread.name!r}"
    else:
        thread = None
        alive = check
        producer = "the producer"

    def died() -> OperatorError:
        cause = None
        if thread is not None:
            cause = getattr(thread, "error", None) or _THREAD_ERRORS.get(thread)
        text = (f"{producer} stopped" + (f": {describe_exception(cause)}" if cause else
                                         " (its check returned False)"))
        err = OperatorError(node.name, node.site, None, text)
        err.__cause__ = cause
        return err

    def make() -> Iterator[Any]:
        q = input_queue
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                if alive is not None and not alive():
                    try:  # it may have put a last item before stopping
                        item = q.get_nowait()
                    except queue.Empty:
                        err = died()
                        raise err from err.__cause__
                else:
                    waiting_on_external()
                    yield NOT_READY
                    continue
            yield item

    node = LocalIterator(make, metrics=Metrics(), name="Dequeue", site=site)
    return node
