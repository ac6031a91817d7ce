"""LearnerThread: learning in a thread of the driver, fed and drained through bounded queues.

Asynchronous plans (Ape-X, IMPALA) keep the learner busy while the driver keeps gathering
samples: the plan ``Enqueue``s batches into ``thread.inqueue`` and ``Dequeue``s results from
``thread.outqueue``. If the learning function raises, the thread stops, keeps the exception in
``error`` and wakes the plan, so ``Dequeue(..., check=thread)`` raises one error naming the
thread with the original traceback chained (not RLlib's bare "error reading from queue").
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from rldataflow.flow.signals import WAKER

_STOP = object()


class LearnerThread(threading.Thread):
    """Run ``learn_fn(item)`` for every item put into ``inqueue``; results go to ``outqueue``.

    Example::

        learner = LearnerThread(lambda batch: policy.learn_on_batch(batch), name="learner")
        learner.start()
        enqueue_op = batches.for_each(Enqueue(learner.inqueue))
        results = Dequeue(learner.outqueue, check=learner)

    ``utilization`` is the fraction of wall time (since the first item arrived) spent inside
    ``learn_fn``; ``num_steps`` counts calls.
    """

    def __init__(self, learn_fn: Callable[[Any], Any], inqueue_size: int = 16,
                 outqueue_size: int = 16, name: str = "learner") -> None:
        super().__init__(name=name, daemon=True)
        if inqueue_size < 1 or outqueue_size < 1:
            raise ValueError("LearnerThread queues must be bounded (sizes >= 1)")
        self.learn_fn = learn_fn
        self.inqueue: queue.Queue = queue.Queue(maxsize=inqueue_size)
        self.outqueue: queue.Queue = queue.Queue(maxsize=outqueue_size)
        self.error: BaseException | None = None
        self.num_steps = 0
        self.busy_s = 0.0
        #: (when the last step ended, busy_s then), set as one tuple: two marks bound a window
        #: whose busy time cannot exceed its length (a step in it started after the first mark)
        self.busy_mark: tuple[float, float] = (time.perf_counter(), 0.0)
        self._first_item_at: float | None = None
        self._stopping = False

    def run(self) -> None:
        try:
            while True:
                item = self.inqueue.get()
                if item is _STOP or self._stopping:
                    return
                now = time.perf_counter()
                if self._first_item_at is None:
                    self._first_item_at = now
                out = self.learn_fn(item)
                ended = time.perf_counter()
                self.busy_s += ended - now
                self.busy_mark = (ended, self.busy_s)
                self.num_steps += 1
                self.outqueue.put(out)
        except BaseException as exc:  # kept for Dequeue to re-raise in the driver
            self.error = exc
        finally:
            WAKER.notify()

    @property
    def utilization(self) -> float:
        if self._first_item_at is None:
            return 0.0
        wall = time.perf_counter() - self._first_item_at
        return self.busy_s / wall if wall > 0 else 0.0

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish after its current item; drops queued items."""
        self._stopping = True
        for q in (self.outqueue, self.inqueue):
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        try:
            self.inqueue.put_nowait(_STOP)
        except queue.Full:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
