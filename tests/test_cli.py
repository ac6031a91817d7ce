"""The command line as a user meets it: train, resume, evaluate, inspect, and fail clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

CLI = [sys.executable, "-m", "rldataflow"]
QUICK = ["--set", "train_batch_size=256", "--set", "minibatch_size=128",
         "--set", "num_envs_per_worker=2", "--set", "rollout_fragment_length=64"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_train_writes_a_complete_run_directory_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = run("train", "ppo", "--env", "CartPole-v1", "--runtime", "inline",
               "--num-workers", "1", "--stop-iters", "3", "--out", str(out), *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "reached 3 iterations" in proc.stdout
    for name in ("config.yaml", "progress.csv", "result.jsonl"):
        assert (out / name).exists(), name
    assert list(out.glob("events.out.tfevents.*"))
    assert (out / "checkpoint_000003" / "metadata.json").exists()
    lines = (out / "result.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    # non-tty output is plain lines, one per update at most every second, plus the last one
    assert "iter 3" in proc.stdout

    proc = run("train", "--resume", str(out), "--stop-iters", "2")
    assert proc.returncode == 0, proc.stderr
    assert "resumed ppo" in proc.stdout
    lines = (out / "result.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["env_steps_sampled"] > records[2]["env_steps_sampled"]
    assert (out / "checkpoint_000005").exists()

    proc = run("evaluate", str(out), "--episodes", "2")
    assert proc.returncode == 0, proc.stderr
    assert "evaluation/episode_return_mean" in proc.stdout

    data = tmp_path / "data"
    proc = run("record", str(out), "--episodes", "3", "--out", str(data), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "recorded 3 episodes" in proc.stdout
    from rldataflow.data import DatasetReader

    chunks = list(DatasetReader(data).iter_batches())
    eps = set().union(*(set(c["eps_id"].tolist()) for c in chunks))
    assert len(eps) == 3
    assert all(c["terminateds"][-1] or c["truncateds"][-1] for c in chunks)

    proc = run("record", str(tmp_path / "nothing"), "--episodes", "3", "--out", str(data))
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--set", "lr_rate=0.1"], "did you mean 'lr'"),
    (["--set", "num_workers=many"], "num_workers"),
    (["--env", "CartPol-v1"], "CartPole-v1"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, needle):
    proc = run("train", "ppo", "--runtime", "inline", "--stop-iters", "1",
               "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, proc.stderr
    assert err_lines[0].startswith("error:") and needle in err_lines[0]


def test_unknown_algorithm():
    proc = run("train", "ppoo", "--env", "CartPole-v1")
    assert proc.returncode == 2
    assert "did you mean 'ppo'" in proc.stderr


def test_config_and_plan_and_list():
    proc = run("config", "ppo")
    assert proc.returncode == 0 and "clip_param" in proc.stdout and "minibatch_size" in proc.stdout
    proc = run("plan", "ppo")
    assert proc.returncode == 0, proc.stderr
    assert "TrainOneStep" in proc.stdout and "ppo.py:" in proc.stdout
    proc = run("list")
    assert proc.returncode == 0 and "ppo" in proc.stdout


def test_ctrl_c_saves_a_checkpoint_and_leaves_no_orphans(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", "ppo", "--env", "CartPole-v1", "--num-workers", "2",
                             "--out", str(out), *QUICK],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "result.jsonl").exists() or not (out / "result.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the process runtime should have worker processes"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout
    assert "Traceback" not in stderr, stderr
    assert list(out.glob("checkpoint_*/metadata.json"))
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left: {alive}"


def test_python_m_rldataflow_help():
    proc = run("--help")
    assert proc.returncode == 0 and "train" in proc.stdout
    assert os.path.exists(Path(sys.executable).parent / "rldataflow")


def test_plot_writes_an_image(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "progress.csv").write_text(
        "env_steps_sampled,episode_return_mean\n1000,20.5\n2000,\n3000,80.0\n")
    out = tmp_path / "curves.png"
    proc = run("plot", str(run_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    proc = run("plot", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no progress.csv" in proc.stderr


def test_evaluate_a_run_that_needs_workers(tmp_path):
    """Ape-X needs >= 1 worker: evaluate keeps the run's worker count (inline, no processes)."""
    import rldataflow

    with rldataflow.build("apex", env="CartPole-v1", runtime="process", num_workers=2) as algo:
        path = algo.save(tmp_path / "ckpt")
    proc = run("evaluate", str(path), "--episodes", "2")
    assert proc.returncode == 0, proc.stderr
    assert "evaluation/num_episodes: 2" in proc.stdout
