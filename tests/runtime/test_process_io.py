"""Who reads the process runtime's replies: the waiting thread itself, or the reader thread.

A thread waiting on a future reads the replies itself and keeps that role ("parked") after its
wait, so that a busy loop's next wait starts at once. These tests pin down what must still
hold: other threads' waits, callbacks and death notices never depend on the parked thread
coming back, and no combination of waits, sends and callbacks deadlocks.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rldataflow.flow import from_range
from rldataflow.runtime import ActorDiedError, get_runtime

pytestmark = pytest.mark.timeout(120)


class Echo:
    def echo(self, value):
        return value

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def pid(self) -> int:
        return os.getpid()


@pytest.fixture
def rt():
    with get_runtime("process") as runtime:
        yield runtime


def test_the_waiting_thread_reads_its_own_replies(rt):
    actor = rt.create_actor(Echo)
    for i in range(50):
        assert actor.call("echo", i).result(timeout=10) == i
    # after a wait, this thread keeps the role of reader (parked), the reader thread sleeps
    assert rt._replies._io_owner == threading.get_ident()
    assert rt._replies._io_parked_at is not None


def test_callbacks_run_while_the_thread_that_read_last_is_busy(rt):
    actor = rt.create_actor(Echo)
    actor.call("echo", 0).result(timeout=10)  # this thread now holds the (parked) reader role
    fired = threading.Event()
    actor.call("sleep", 0.1).add_done_callback(lambda fut: fired.set())
    # this thread does not wait on the runtime now (it sleeps on an unrelated event): the
    # reader thread must take over and run the callback
    t0 = time.monotonic()
    assert fired.wait(5)
    assert time.monotonic() - t0 < 1.0


def test_another_thread_waits_while_this_one_holds_the_reader_role(rt):
    actors = [rt.create_actor(Echo) for _ in range(2)]
    actors[0].call("echo", 0).result(timeout=10)
    results, errors = [], []

    def other() -> None:
        try:
            for i in range(200):
                results.append(actors[1].call("echo", i).result(timeout=10))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    for i in range(200):  # both threads wait on the runtime at once, taking turns to read
        assert actors[0].call("echo", -i).result(timeout=10) == -i
    thread.join(30)
    assert not errors and results == list(range(200))


def test_many_threads_waiting_at_once_all_get_their_results(rt):
    actor = rt.create_actor(Echo)
    out: dict[int, list] = {}

    def work(k: int) -> None:
        out[k] = [actor.call("echo", (k, i)).result(timeout=20) for i in range(100)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {k: [(k, i) for i in range(100)] for k in range(6)}


def test_a_death_is_reported_while_the_reader_role_is_parked(rt):
    victim = rt.create_actor(Echo, name="victim")
    pid = victim.call("pid").result(timeout=10)  # this thread now holds the parked role
    failed = threading.Event()
    seen: list = []

    def on_done(fut) -> None:
        seen.append(fut.exception(timeout=0))
        failed.set()

    victim.call("sleep", 30).add_done_callback(on_done)
    time.sleep(0.2)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert failed.wait(5)  # nobody waits on the runtime: the reader thread sees the death
    assert time.monotonic() - t0 < 2
    assert isinstance(seen[0], ActorDiedError) and "victim" in str(seen[0])


def test_large_sends_while_the_actor_sends_large_replies_never_deadlock(rt):
    """The parked reader blocked in a send must let the reader thread read meanwhile."""
    actor = rt.create_actor(Echo)
    actor.call("echo", 0).result(timeout=10)
    payload = b"x" * 3_000_000  # larger than both socket buffers together
    futures = [actor.call("echo", payload) for _ in range(8)]  # sends while replies pile up
    assert all(len(f.result(timeout=60)) == len(payload) for f in futures)


def test_a_callback_may_wait_on_another_future(rt):
    actor = rt.create_actor(Echo)
    got: list = []
    done = threading.Event()

    def on_done(fut) -> None:
        # a callback runs in whichever thread reads; waiting here must not stall the reading
        got.append(actor.call("echo", fut.result() + 1).result(timeout=10))
        done.set()

    actor.call("echo", 1).add_done_callback(on_done)
    assert done.wait(15)
    assert got == [2]


def test_gather_async_wakes_on_a_queue_handoff_from_another_thread(rt):
    """A plan waiting on slow shards also wakes for something outside the runtime."""
    from rldataflow.flow.signals import WAKER

    it = from_range(4, num_shards=1, runtime=rt).for_each(
        lambda x: time.sleep(5) or x).gather_async()
    fired = []

    def notify_later() -> None:
        time.sleep(0.3)
        fired.append(time.monotonic())
        WAKER.notify()

    thread = threading.Thread(target=notify_later)
    generation = WAKER.generation
    thread.start()
    stream = iter(it)  # installs the shard; the first item takes 5 s
    del stream
    t0 = time.monotonic()
    assert WAKER.wait(generation, timeout=10)
    assert time.monotonic() - t0 < 2
    thread.join()
