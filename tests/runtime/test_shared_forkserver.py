"""``share_imports``: the forkserver forked from the driver, so all processes share its imports.

Each case runs in a fresh interpreter: the fork is only done from a single-threaded process,
and the test process runs threads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import psutil
    from rldataflow.runtime.process import ProcessRuntime
    from rldataflow.runtime import ActorDiedError

    class Probe:
        def info(self):
            return {"pid": os.getpid(), "parent": os.getppid(),
                    "has_marker": "xml.dom.minidom" in sys.modules}

    if sys.argv[1] == "thread":  # a second thread at construction: no fork
        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
    rt = ProcessRuntime(share_imports=True, preload=("xml.dom.minidom",))
    actors = [rt.create_actor(Probe) for _ in range(2)]
    infos = rt.get([a.call("info") for a in actors])
    server = psutil.Process(infos[0]["parent"])
    out = {
        "driver": os.getpid(),
        "infos": infos,
        "server_parent": server.ppid(),
        "server_is_fresh_interpreter": "forkserver import main" in " ".join(server.cmdline()),
    }
    os.kill(infos[1]["pid"], signal.SIGKILL)  # a death is still reported, and fast
    t0 = time.monotonic()
    try:
        actors[1].call("info").result(timeout=10)
    except ActorDiedError:
        out["death_seen_s"] = time.monotonic() - t0
    rt.shutdown()
    time.sleep(0.2)
    out["server_alive_after_shutdown"] = (psutil.pid_exists(server.pid)
                                          and server.status() != psutil.STATUS_ZOMBIE)
    print(json.dumps(out))
""")


def run_case(tmp_path, mode: str) -> dict:
    script = tmp_path / "case.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_forkserver_is_a_fork_of_a_single_threaded_driver(tmp_path):
    out = run_case(tmp_path, "single")
    assert out["server_parent"] == out["driver"]
    assert not out["server_is_fresh_interpreter"]
    # the preload module was imported in the driver before the fork: actors have it already
    assert all(info["has_marker"] for info in out["infos"])
    assert out["death_seen_s"] < 2
    assert not out["server_alive_after_shutdown"]


def test_a_driver_running_threads_gets_the_regular_forkserver(tmp_path):
    out = run_case(tmp_path, "thread")
    assert out["server_is_fresh_interpreter"]
    assert all(info["has_marker"] for info in out["infos"])  # preloaded by the forkserver
    assert out["death_seen_s"] < 2
