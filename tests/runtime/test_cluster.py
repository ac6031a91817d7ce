"""A real two-node Ray cluster on this machine: ``--runtime ray --address HOST:PORT`` joins it,
rollout workers (and Ape-X's replay shards) are spread over both nodes, and a Ray Tune sweep
runs its trials on it.

Both nodes are started with ``ray start --block`` in their own process group and a temp dir of
their own, so teardown ends exactly these processes (``ray stop`` would end every Ray instance
on the machine, other test sessions' included).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

ray = pytest.importorskip("ray")

CLI = [sys.executable, "-m", "rldataflow"]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # Every port a node opens is chosen here, so a second node on this machine (or another
    # test session's Ray) does not collide with the defaults.
    ports = [f"--dashboard-agent-listen-port={_free_port()}",
             f"--dashboard-agent-grpc-port={_free_port()}",
             f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
    return subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus=1",
         "--disable-usage-stats", *ports, *args],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _end(procs: list[subprocess.Popen], temp_dir: str, port: int) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # anything of this cluster that left the process groups (named by its temp dir or port)
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if temp_dir in cmdline or f":{port}" in cmdline or f"--port={port}" in cmdline:
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.fixture(scope="module")
def two_node_cluster():
    """``HOST:PORT`` of a running cluster of a head node and one more node, 1 CPU each."""
    temp_dir = tempfile.mkdtemp(prefix="rdfray", dir="/tmp")  # short: Ray's socket paths
    port = _free_port()
    # No token authentication (Ray >= 2.5x turns it on when ~/.ray/auth_token exists): the
    # cluster lives on this machine only, and its nodes and clients then need no shared token.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    procs = [_ray_start(["--head", f"--port={port}", f"--temp-dir={temp_dir}",
                         "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                         '--resources={"node_head": 1}'], Path(temp_dir) / "head.log", env)]
    try:
        procs.append(_ray_start([f"--address={address}", '--resources={"node_b": 1}'],
                                Path(temp_dir) / "node_b.log", env))
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + 120
        alive = 0
        while time.monotonic() < deadline:
            for proc, log in zip(procs, ("head.log", "node_b.log"), strict=False):
                assert proc.poll() is None, (Path(temp_dir) / log).read_text()[-2000:]
            out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True,
                                 text=True, timeout=120, env=env)
            alive = int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout else 0
            if alive == 2:
                break
            time.sleep(1)
        assert alive == 2, "the two-node cluster did not come up"
        yield address, env
    finally:
        _end(procs, temp_dir, port)


def _placement(stdout: str) -> tuple[int, int]:
    match = re.search(r"ray: (\d+) actors on (\d+) nodes", stdout)
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


def test_ppo_and_apex_spread_their_actors_over_both_nodes(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    common = ["--env", "CartPole-v1", "--runtime", "ray", "--address", address,
              "--stop-iters", "1", "--quiet", "--set", "num_envs_per_worker=2"]
    proc = subprocess.run(
        [*CLI, "train", "ppo", *common, "--num-workers", "2", "--set", "train_batch_size=256",
         "--set", "minibatch_size=128", "--out", str(tmp_path / "ppo")],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _placement(proc.stdout) == (2, 2)  # 2 rollout workers, one per node
    assert (tmp_path / "ppo" / "checkpoint_000001").is_dir()

    proc = subprocess.run(
        [*CLI, "train", "apex", *common, "--num-workers", "2", "--set", "learning_starts=200",
         "--set", "min_steps_per_iteration=400", "--set", "min_time_s_per_iteration=0",
         "--out", str(tmp_path / "apex")], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actors, nodes = _placement(proc.stdout)
    assert actors >= 4 and nodes == 2  # 2 workers + the replay shards, over both nodes
    assert (tmp_path / "apex" / "checkpoint_000001").is_dir()


def test_ray_tune_sweep_runs_its_trials_on_the_cluster(two_node_cluster, tmp_path):
    pytest.importorskip("ray.tune")
    address, env = two_node_cluster
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [*CLI, "tune", "pg", "--env", "CartPole-v1", "--runtime", "ray",
         "--address", address, "--grid", "lr=[1e-3,3e-4]", "--num-workers", "1",
         "--set", "train_batch_size=256", "--set", "num_envs_per_worker=2",
         "--stop-iters", "2", "--no-prune", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["backend"] == "ray"
    trials = summary["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [3e-4, 1e-3]
    for t in trials:
        assert t["status"] == "complete" and t["iterations"] == 2, t
        run_dir = Path(t["run_dir"])
        assert (run_dir / "checkpoint_000002").is_dir()   # our run directory per trial
        assert len((run_dir / "progress.csv").read_text().splitlines()) == 3
    # Tune kept the reported checkpoints too
    assert list((out / "ray_tune").rglob("checkpoint_*/metadata.json"))
    assert "best trial:" in proc.stdout


def test_spread_placement_and_placement_report_on_one_node(ray_runtime):
    from rldataflow.runtime.ray import RayRuntime

    rt = RayRuntime(placement="spread")  # reuses the session's local Ray instance
    try:
        actors = [rt.create_actor(dict, name=f"d{i}") for i in range(3)]
        placement = rt.placement()
        assert set(placement) == {a.name for a in actors}
        assert len(set(placement.values())) == 1  # one node: all actors on it
        assert actors[0].call("__len__").result() == 0  # pinned actors work as usual
    finally:
        rt.shutdown()
    with pytest.raises(ValueError, match="'placement' must be 'default' or 'spread'"):
        RayRuntime(placement="pack")
