"""The runtime protocol, on every runtime (inline, process, ray)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types

import psutil
import pytest

from rldataflow.runtime import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    ActorDiedError,
    RemoteError,
    RemoteTraceback,
    get_runtime,
)

pytestmark = pytest.mark.timeout(120)


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.log: list = []

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def append(self, item):
        self.log.append(item)
        return len(self.log)

    def get_log(self) -> list:
        return list(self.log)

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def echo(self, *args, **kwargs):
        return args, kwargs

    def fail_deep(self, message: str) -> None:
        self._raise_it(message)

    def _raise_it(self, message: str) -> None:
        raise ValueError(message)


class BrokenInit:
    def __init__(self, why: str) -> None:
        raise KeyError(why)


class UnpicklableError(Exception):
    def __init__(self, a, b):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{a}/{b}")


def raising_timeout(instance) -> None:
    raise TimeoutError("from the method")


def is_remote(rt) -> bool:
    return rt.name != "inline"


# -- create and call ---------------------------------------------------------------------------
def test_call_by_name_and_by_callable(runtime):
    actor = runtime.create_actor(Counter, 10)
    assert actor.call("incr").result(timeout=30) == 11
    assert actor.call("incr", k=5).result(timeout=30) == 16
    assert actor.call(lambda self, x: self.n * x, 2).result(timeout=30) == 32
    assert actor.call("echo", 1, "a", key=[1, 2]).result(timeout=30) == ((1, "a"), {"key": [1, 2]})
    assert runtime.get([actor.call("incr"), actor.call("incr")]) == [17, 18]
    assert actor.class_name == "Counter" and actor.name.startswith("Counter")


def test_actor_names_are_unique(runtime):
    a = runtime.create_actor(Counter)
    b = runtime.create_actor(Counter)
    c = runtime.create_actor(Counter, name="special")
    assert len({a.name, b.name, c.name}) == 3
    assert c.name == "special"


def test_calls_on_one_actor_run_in_order(runtime):
    actor = runtime.create_actor(Counter)
    futures = [actor.call("append", i) for i in range(200)]
    # ask for the last result first: earlier calls must still have run before it
    assert futures[-1].result(timeout=30) == 200
    assert [f.result(timeout=30) for f in futures] == list(range(1, 201))
    assert actor.call("get_log").result(timeout=30) == list(range(200))


def test_calls_from_many_threads_keep_per_thread_order(runtime):
    if runtime.name == "inline":
        pytest.skip("the inline runtime is single-threaded by design")
    actor = runtime.create_actor(Counter)

    def worker(tid: int) -> None:
        for i in range(50):
            actor.call("append", (tid, i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = actor.call("get_log").result(timeout=30)
    assert len(log) == 200
    for tid in range(4):
        assert [i for t, i in log if t == tid] == list(range(50))


def test_classes_defined_in_a_function_work(runtime):
    offset = 1000

    class Local:
        def __init__(self, base):
            self.base = base

        def value(self, x):
            return self.base + offset + x  # a closure over the test's local

    actor = runtime.create_actor(Local, 5)
    assert actor.call("value", 1).result(timeout=30) == 1006
    factor = 3
    assert actor.call(lambda self: self.base * factor).result(timeout=30) == 15


# -- waiting ----------------------------------------------------------------------------------
def test_wait_first_and_all_completed(runtime):
    slow_actor = runtime.create_actor(Counter, name="slow")
    fast_actor = runtime.create_actor(Counter, name="fast")
    slow = slow_actor.call("sleep", 1.0)
    fast = fast_actor.call("incr")
    t0 = time.monotonic()
    done, pending = runtime.wait([fast, slow], return_when=FIRST_COMPLETED, timeout=20)
    assert fast in done
    if is_remote(runtime):
        assert pending == [slow] and time.monotonic() - t0 < 0.9
        # a timeout that expires first leaves it pending
        done, pending = runtime.wait([slow], return_when=ALL_COMPLETED, timeout=0.05)
        assert done == [] and pending == [slow]
    done, pending = runtime.wait([slow, fast], return_when=ALL_COMPLETED, timeout=20)
    assert done == [slow, fast] and pending == []
    assert slow.result() == 1.0
    assert runtime.wait([]) == ([], [])


def test_future_timeout_and_callbacks(runtime):
    actor = runtime.create_actor(Counter)
    if is_remote(runtime):
        fut = actor.call("sleep", 0.5)
        with pytest.raises(TimeoutError, match="did not finish"):
            fut.result(timeout=0.01)
    seen = []
    got = threading.Event()

    def on_done(f):
        seen.append(f.result())
        got.set()

    fut = actor.call("incr", 7)
    fut.add_done_callback(on_done)
    fut.result(timeout=30)
    assert got.wait(10) and seen == [7]
    # on a done future the callback runs at once
    fut.add_done_callback(lambda f: seen.append("again"))
    assert seen == [7, "again"]


def test_a_method_raising_timeouterror_is_not_a_result_timeout(runtime):
    actor = runtime.create_actor(Counter)
    with pytest.raises(TimeoutError, match="from the method"):
        actor.call(raising_timeout).result(timeout=30)


# -- errors -----------------------------------------------------------------------------------
def test_method_exception_keeps_type_and_remote_traceback(runtime):
    actor = runtime.create_actor(Counter)
    fut = actor.call("fail_deep", "bad things")
    with pytest.raises(ValueError, match="bad things") as info:
        fut.result(timeout=30)
    assert isinstance(fut.exception(), ValueError)
    if is_remote(runtime):
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "_raise_it" in cause.text and "fail_deep" in cause.text
        assert "bad things" in str(cause)
    # the actor is still usable afterwards
    assert actor.call("incr").result(timeout=30) == 1
    assert actor.is_alive()


def test_exception_from_a_callable_method(runtime):
    def explode(instance, n):
        raise ZeroDivisionError(f"n={n}")

    actor = runtime.create_actor(Counter)
    with pytest.raises(ZeroDivisionError, match="n=3") as info:
        actor.call(explode, 3).result(timeout=30)
    if is_remote(runtime):
        assert "explode" in info.value.__cause__.text


def test_constructor_exception_arrives(runtime):
    with pytest.raises(KeyError, match="no config") as info:
        runtime.create_actor(BrokenInit, "no config")
    if is_remote(runtime):
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "__init__" in info.value.__cause__.text


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(remote_runtime):
    def raise_it(instance):
        raise UnpicklableError(1, 2)

    actor = remote_runtime.create_actor(Counter)
    with pytest.raises(RemoteError, match="UnpicklableError") as info:
        actor.call(raise_it).result(timeout=30)
    assert "raise_it" in info.value.__cause__.text
    assert actor.call("incr").result(timeout=30) == 1


def test_unpicklable_result_and_arguments_fail_clearly(remote_runtime):
    actor = remote_runtime.create_actor(Counter)
    with pytest.raises(Exception, match="pickl|serializ"):
        actor.call(lambda self: threading.Lock()).result(timeout=30)
    with pytest.raises(Exception, match="pickl|serializ"):
        actor.call("echo", threading.Lock()).result(timeout=30)
    assert actor.call("incr").result(timeout=30) == 1


# -- many actors ------------------------------------------------------------------------------
def test_call_many(runtime):
    actors = [runtime.create_actor(Counter, i) for i in range(3)]
    assert runtime.get(runtime.call_many(actors, "incr", 10)) == [10, 11, 12]
    futures = runtime.call_many(actors, lambda self, extra: self.n + extra, extra=100)
    assert [f.actor for f in futures] == actors
    assert runtime.get(futures) == [110, 111, 112]
    # a large payload (the weights broadcast): pickled once, sent to all
    blob = os.urandom(300_000)
    assert runtime.get(runtime.call_many(actors, lambda self, b: (len(b), b[:4]), blob)) == \
        [(300_000, blob[:4])] * 3


def test_large_arguments_and_results_round_trip(runtime):
    actor = runtime.create_actor(Counter)
    blob = os.urandom(3_000_000)
    out = actor.call(lambda self, b: b[::-1], blob).result(timeout=60)
    assert out == blob[::-1]
    small = [actor.call("incr") for _ in range(20)]
    assert runtime.get(small)[-1] == 20


# -- kill, liveness, shutdown -----------------------------------------------------------------
def test_kill_fails_calls_with_actor_died_error(runtime):
    victim = runtime.create_actor(Counter, name="victim")
    bystander = runtime.create_actor(Counter)
    assert victim.is_alive() and runtime.is_alive(bystander)
    runtime.kill(victim)
    assert not victim.is_alive()
    with pytest.raises(ActorDiedError) as info:
        victim.call("incr").result(timeout=10)
    err = info.value
    assert err.actor_name == "victim" and err.class_name == "Counter"
    assert "victim" in str(err) and "Counter" in str(err)
    runtime.kill(victim)  # idempotent
    assert bystander.call("incr").result(timeout=30) == 1


def test_kill_fails_pending_calls(runtime):
    if runtime.name == "inline":
        victim = runtime.create_actor(Counter)
        fut = victim.call("incr")
        runtime.kill(victim)  # a queued inline call fails too
    else:
        victim = runtime.create_actor(Counter)
        fut = victim.call("sleep", 30)
        time.sleep(0.2)
        t0 = time.monotonic()
        runtime.kill(victim)
    with pytest.raises(ActorDiedError, match="Counter"):
        fut.result(timeout=10)
    if runtime.name != "inline":
        assert time.monotonic() - t0 < 2


def test_context_manager_shuts_everything_down(runtime):
    with type(runtime)() as rt:
        actors = [rt.create_actor(Counter) for _ in range(2)]
        pids = [rt.pid(a) for a in actors] if rt.name == "process" else []
        assert rt.get([a.call("incr") for a in actors]) == [1, 1]
    assert not any(a.is_alive() for a in actors)
    with pytest.raises(ActorDiedError):
        actors[0].call("incr").result(timeout=10)
    rt.shutdown()  # idempotent
    if rt.name == "process":
        for pid in pids:
            assert not psutil.pid_exists(pid) or \
                psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
        assert not mine & set(pids)


def test_shutdown_runs_stop_and_waits_for_queued_calls(tmp_path):
    marker = tmp_path / "stopped"

    class Stoppable:
        def work(self):
            time.sleep(0.2)
            return "done"

        def stop(self):
            marker.write_text("yes")

    rt = get_runtime("process")
    actor = rt.create_actor(Stoppable)
    fut = actor.call("work")
    rt.shutdown()
    assert fut.result(timeout=1) == "done"
    assert marker.read_text() == "yes"


# -- the worker environment ---------------------------------------------------------------------
def test_workers_run_with_one_thread(remote_runtime):
    def env(instance):
        return {k: os.environ.get(k) for k in
                ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

    def torch_threads(instance):
        import torch

        return torch.get_num_threads()

    actor = remote_runtime.create_actor(Counter)
    assert actor.call(env).result(timeout=30) == {
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert actor.call(torch_threads).result(timeout=60) == 1


def test_process_calls_from_a_future_callback():
    """A callback runs in the reader thread; a call made there must not deadlock."""
    with get_runtime("process") as rt:
        actor = rt.create_actor(Counter)
        chained = []
        done = threading.Event()

        def again(fut):
            if len(chained) < 20:
                nxt = actor.call(lambda self, b: (self.incr(), len(b))[0], b"x" * 200_000)
                chained.append(nxt)
                nxt.add_done_callback(again)
            else:
                done.set()

        actor.call("incr").add_done_callback(again)
        assert done.wait(30)
        assert rt.get(chained) == list(range(2, 22))


def test_use_after_shutdown_fails_clearly(runtime):
    actor = runtime.create_actor(Counter)
    runtime.shutdown()
    with pytest.raises(ActorDiedError):
        actor.call("incr").result(timeout=10)
    if is_remote(runtime):
        with pytest.raises(RuntimeError, match="shut down"):
            runtime.create_actor(Counter)


def test_process_runtime_with_spawn():
    with get_runtime("process", start_method="spawn") as rt:
        scale = 3
        actor = rt.create_actor(Counter, 2)
        assert actor.call(lambda self: self.n * scale).result(timeout=60) == 6
        with pytest.raises(ValueError, match="spawn"):
            get_runtime("process", start_method="fork")


def module_level_helper(instance, k):
    return k


def test_small_calls_take_the_plain_pickle_path_only_when_it_is_safe():
    import pickle

    from rldataflow.runtime import wire

    local_fn = lambda instance, k: k  # noqa: E731
    assert wire.importable_by_name(module_level_helper)
    assert not wire.importable_by_name(local_fn)
    main_like = types_function_in("__main__")
    assert not wire.importable_by_name(main_like)
    frame = wire.call_frame(7, "incr", (3,), {"k": None})
    length, call_id, kind = wire.HEADER.unpack_from(frame)
    assert (call_id, kind) == (7, wire.CALL) and length == len(frame) - wire.HEADER.size
    assert pickle.loads(bytes(frame[wire.HEADER.size:])) == ("incr", (3,), {"k": None})
    # a lambda (or any non-scalar argument) goes through cloudpickle and still runs remotely
    with get_runtime("process") as rt:
        actor = rt.create_actor(Counter, 5)
        assert actor.call(local_fn, 11).result(timeout=30) == 11
        assert actor.call(module_level_helper, 12).result(timeout=30) == 12
        assert actor.call("append", [1, 2]).result(timeout=30) == 1


def types_function_in(module_name: str):
    def fn(instance):
        return instance

    fn.__module__ = module_name
    fn.__qualname__ = "fn"
    return fn


def test_functions_of_modules_registered_by_value_are_not_sent_by_name():
    import cloudpickle

    from rldataflow.runtime import wire

    fn = types_function_in("tests_pkg_by_value.sub")
    sys.modules.setdefault("tests_pkg_by_value", types.ModuleType("tests_pkg_by_value"))
    sub = sys.modules.setdefault("tests_pkg_by_value.sub",
                                 types.ModuleType("tests_pkg_by_value.sub"))
    sub.fn = fn
    cloudpickle.register_pickle_by_value(sys.modules["tests_pkg_by_value"])
    try:
        assert not wire.importable_by_name(fn)  # inside a by-value package: cloudpickle's path
        assert wire.importable_by_name(module_level_helper)  # other modules keep the fast path
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules["tests_pkg_by_value"])


def test_pid_names_the_process_an_actor_runs_in(runtime):
    actor = runtime.create_actor(Counter)
    pid = runtime.pid(actor)
    if runtime.name == "inline":
        assert pid is None  # it lives in the driver: nothing to kill but the driver
        return
    assert pid == runtime.call(actor, lambda inst: os.getpid()).result(timeout=60)
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError, match="Counter"):
        for _ in range(200):  # until the death is noticed
            actor.call("incr").result(timeout=30)
            time.sleep(0.05)
    runtime.kill(actor)
