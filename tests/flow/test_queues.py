"""Enqueue / Dequeue with real threads: back-pressure, no loss, named errors, no spinning."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from rldataflow.flow import (
    NOT_READY,
    Concurrently,
    Dequeue,
    Enqueue,
    OperatorError,
    from_local_iterable,
)

pytestmark = pytest.mark.timeout(60)


def watch_size(q: queue.Queue) -> list[int]:
    """Record the queue's length after every put (called with the queue's lock held)."""
    sizes: list[int] = []
    put = q._put

    def recording_put(item):
        put(item)
        sizes.append(len(q.queue))

    q._put = recording_put
    return sizes


def test_enqueue_applies_back_pressure_without_dropping_or_reordering():
    q = queue.Queue(maxsize=3)
    op = Enqueue(q)
    sizes = watch_size(q)
    received = []

    def consumer():
        while True:
            item = q.get()
            if item is None:
                return
            received.append(item)
            time.sleep(0.001)

    t = threading.Thread(target=consumer, name="consumer")
    t.start()
    it = from_local_iterable(range(200)).for_each(op)
    try:
        assert list(it) == list(range(200))  # passed on downstream too
    finally:
        q.put(None)
        t.join(10)
    assert received == list(range(200))
    assert max(sizes) == 3  # filled up to its bound, never beyond


def test_enqueue_on_a_full_queue_holds_the_item_and_yields_not_ready():
    q = queue.Queue(maxsize=1)
    raw = from_local_iterable(["a", "b"]).for_each(Enqueue(q))._internal()
    assert next(raw) == "a"
    assert next(raw) is NOT_READY
    assert next(raw) is NOT_READY
    assert q.get_nowait() == "a"
    assert next(raw) == "b"
    assert q.get_nowait() == "b"


def test_enqueue_and_dequeue_around_a_learner_thread():
    in_q, out_q = queue.Queue(maxsize=2), queue.Queue(maxsize=2)
    in_sizes, out_sizes = watch_size(in_q), watch_size(out_q)

    def learn():
        while True:
            item = in_q.get()
            if item is None:
                return
            time.sleep(0.002)
            out_q.put(item * 10)

    learner = threading.Thread(target=learn, name="learner", daemon=True)
    learner.start()
    enqueue_op = from_local_iterable(range(50)).for_each(Enqueue(in_q))
    dequeue_op = Dequeue(out_q, check=learner)
    plan = Concurrently([enqueue_op, dequeue_op], mode="async", output_indexes=[1])
    try:
        assert plan.take(50) == [x * 10 for x in range(50)]
    finally:
        in_q.put(None)
        learner.join(10)
    assert max(in_sizes) <= 2 and max(out_sizes) <= 2


class KeepsError(threading.Thread):
    """A thread that stores its exception in ``self.error`` (like RLlib's learner thread)."""

    def __init__(self, q):
        super().__init__(name="keeps-its-error", daemon=True)
        self.q = q
        self.error = None

    def run(self):
        try:
            self.q.put("last words")
            raise KeyError("lost the replay buffer")
        except Exception as exc:
            self.error = exc


def test_dequeue_raises_the_stored_error_of_a_dead_thread_after_its_last_item():
    q = queue.Queue(maxsize=4)
    t = KeepsError(q)
    it = Dequeue(q, check=t)
    t.start()
    t.join(5)
    assert next(it) == "last words"  # what it put before dying is still delivered
    with pytest.raises(OperatorError) as info:
        next(it)
    msg = str(info.value)
    assert "Dequeue" in msg and "'keeps-its-error'" in msg and "KeyError" in msg
    assert "test_queues.py:" in msg
    assert info.value.__cause__ is t.error


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dequeue_chains_the_exception_a_plain_thread_died_of():
    q = queue.Queue(maxsize=4)

    def run():
        time.sleep(0.2)
        raise ValueError("learner exploded")

    t = threading.Thread(target=run, name="plain-learner", daemon=True)
    it = Dequeue(q, check=t)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(OperatorError) as info:
        next(it)  # waits (without spinning) until the thread is found dead
    assert time.monotonic() - t0 < 3
    msg = str(info.value)
    assert "'plain-learner'" in msg and "ValueError: learner exploded" in msg
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "learner exploded"
    assert cause.__traceback__ is not None  # the thread's own frames are kept


def test_dequeue_with_a_check_callable():
    q = queue.Queue(maxsize=2)
    alive = [True]
    it = Dequeue(q, check=lambda: alive[0])
    q.put(1)
    assert next(it) == 1
    alive[0] = False
    with pytest.raises(OperatorError, match="the producer stopped .its check returned False"):
        next(it)


@pytest.mark.parametrize("make", [lambda q: Enqueue(q), lambda q: Dequeue(q)])
def test_unbounded_queues_are_rejected(make):
    with pytest.raises(ValueError, match="bounded"):
        make(queue.Queue())
    with pytest.raises(TypeError, match="queue.Queue"):
        make([])


def test_dequeue_waiting_on_a_slow_thread_does_not_busy_poll(driver_cpu):
    q = queue.Queue(maxsize=4)

    def feed():
        for i in range(6):
            time.sleep(0.2)
            q.put(i)

    t = threading.Thread(target=feed, name="slow-feeder", daemon=True)
    it = Dequeue(q, check=t)
    t.start()
    with driver_cpu:
        got = it.take(6)
    t.join(5)
    assert got == list(range(6)) and driver_cpu.wall > 1.0
    assert driver_cpu.plan_share < 0.05, str(driver_cpu)


def test_enqueue_blocked_on_a_full_queue_does_not_busy_poll(driver_cpu):
    q = queue.Queue(maxsize=1)

    def drain():
        for _ in range(6):
            time.sleep(0.2)
            q.get()

    it = from_local_iterable(range(6)).for_each(Enqueue(q))
    t = threading.Thread(target=drain, name="slow-drain", daemon=True)
    t.start()
    with driver_cpu:
        assert list(it) == list(range(6))
    t.join(5)
    assert driver_cpu.wall > 0.8
    assert driver_cpu.plan_share < 0.05, str(driver_cpu)
