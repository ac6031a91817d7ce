"""Actor death: noticed at once, named, and never a hang (process and ray runtimes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from rldataflow.runtime import ActorDiedError, get_runtime

pytestmark = pytest.mark.timeout(90)


class Worker:
    def __init__(self, tag: str = "w") -> None:
        self.tag = tag

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def ping(self) -> str:
        return self.tag

    def ping_with(self, payload: bytes) -> int:
        return len(payload)

    def exit_now(self, code: int) -> None:
        os._exit(code)


def _gone(pids, timeout: float = 10.0) -> bool:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return all(p.status() == psutil.STATUS_ZOMBIE for p in alive if p.is_running())


def test_sigkill_during_a_long_call_fails_it_within_two_seconds(remote_runtime):
    victim = remote_runtime.create_actor(Worker, "v", name="victim")
    other = remote_runtime.create_actor(Worker, "o")
    pid = victim.call("pid").result(timeout=30)  # inside the actor, for ray as for process
    long_call = victim.call("sleep", 30)
    queued = [victim.call("ping") for _ in range(3)]
    time.sleep(0.3)  # let the long call start
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError) as info:
        long_call.result(timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 2, f"death noticed after {elapsed:.2f}s"
    assert info.value.actor_name == "victim" and info.value.class_name == "Worker"
    assert "victim" in str(info.value)
    for fut in queued:
        with pytest.raises(ActorDiedError):
            fut.result(timeout=5)
    assert time.monotonic() - t0 < 3
    assert not victim.is_alive()
    # later calls fail at once
    t1 = time.monotonic()
    with pytest.raises(ActorDiedError, match="victim"):
        victim.call("ping").result(timeout=5)
    assert time.monotonic() - t1 < 1
    # the other actors are untouched
    assert other.call("ping").result(timeout=30) == "o"
    assert other.is_alive()


def test_sigkill_message_names_the_signal():
    with get_runtime("process") as rt:
        actor = rt.create_actor(Worker)
        fut = actor.call("sleep", 30)
        os.kill(rt.pid(actor), signal.SIGKILL)
        with pytest.raises(ActorDiedError, match="SIGKILL"):
            fut.result(timeout=5)


def test_a_call_sent_into_a_dead_actors_broken_pipe_still_names_the_signal():
    """Sending to a SIGKILLed actor may fail (broken pipe) before the driver has seen the
    process end: the call must still fail with the real cause, not with the broken pipe."""
    payload = b"x" * (4 << 20)  # bigger than a socket buffer: the send itself hits the break
    with get_runtime("process") as rt:
        for _ in range(5):
            actor = rt.create_actor(Worker)
            os.kill(rt.pid(actor), signal.SIGKILL)
            futures = [actor.call("ping_with", payload) for _ in range(3)]
            for fut in futures:
                with pytest.raises(ActorDiedError, match="SIGKILL") as info:
                    fut.result(timeout=5)
                assert "Broken pipe" not in str(info.value)


def test_an_actor_that_exits_by_itself():
    with get_runtime("process") as rt:
        actor = rt.create_actor(Worker)
        fut = actor.call("exit_now", 3)
        with pytest.raises(ActorDiedError, match="exited with code 3"):
            fut.result(timeout=5)
        assert not actor.is_alive()


def test_shutdown_with_a_busy_actor_does_not_hang():
    rt = get_runtime("process", stop_timeout=0.5)
    busy = rt.create_actor(Worker)
    idle = rt.create_actor(Worker)
    pids = [rt.pid(busy), rt.pid(idle)]
    fut = busy.call("sleep", 30)
    t0 = time.monotonic()
    rt.shutdown()
    assert time.monotonic() - t0 < 3
    with pytest.raises(ActorDiedError, match="shut down"):
        fut.result(timeout=1)
    assert _gone(pids)


DRIVER = textwrap.dedent("""
    import sys, time
    from rldataflow.runtime import get_runtime

    class Sleeper:
        def sleep(self, s):
            time.sleep(s)

    rt = get_runtime("process", stop_timeout=0.5)
    actors = [rt.create_actor(Sleeper) for _ in range(2)]
    print(" ".join(str(rt.pid(a)) for a in actors), flush=True)
    futures = [a.call("sleep", 60) for a in actors]
    futures[0].result()
""")


def _start_driver(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)  # no `if __name__ == "__main__":` needed: __main__ is not re-run
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2, proc.stderr.read()
    time.sleep(0.3)
    return proc, pids


def test_ctrl_c_leaves_no_orphans_and_no_child_tracebacks(tmp_path):
    proc, pids = _start_driver(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    assert err.count("Traceback") == 1, err  # the driver's own, none from the actors
    assert _gone(pids)


def test_killed_driver_leaves_no_orphans(tmp_path):
    proc, pids = _start_driver(tmp_path)
    proc.kill()  # SIGKILL: no atexit, no cleanup in the driver at all
    proc.communicate(timeout=30)
    assert _gone(pids, timeout=15)
