"""``rldataflow tune`` as a user meets it: an embedded grid sweep, a YAML search sweep, and bad
input in one line. (The Ray Tune sweep is in tests/runtime/test_cluster.py.)"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from rldataflow import cli

pytest.importorskip("optuna")

CLI = [sys.executable, "-m", "rldataflow"]
QUICK = ["--set", "train_batch_size=256", "--set", "minibatch_size=128",
         "--set", "num_envs_per_worker=2", "--set", "rollout_fragment_length=64"]


def test_grid_sweep_embedded_writes_one_run_dir_per_trial_and_a_summary(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [*CLI, "tune", "ppo", "--env", "CartPole-v1", "--grid", "lr=[1e-3,3e-4]",
         "--grid", "num_epochs=[1,2]", "--num-workers", "1", *QUICK, "--stop-iters", "3",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    trial_dirs = sorted(p for p in out.iterdir() if p.name.startswith("trial_"))
    assert [p.name for p in trial_dirs] == [f"trial_{i:03d}" for i in range(4)]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["backend"] == "optuna" and summary["metric"] == "episode_return_mean"
    seen = set()
    for trial in summary["trials"]:
        run_dir = out / f"trial_{trial['number']:03d}"
        assert trial["run_dir"] == str(run_dir)
        assert trial["status"] in ("complete", "pruned"), trial
        assert trial["iterations"] == 3
        # each trial's run directory holds its own config and a checkpoint
        config = (run_dir / "config.yaml").read_text()
        assert f"num_epochs: {trial['params']['num_epochs']}" in config
        assert (run_dir / "checkpoint_000003").is_dir()
        rows = (run_dir / "progress.csv").read_text().splitlines()
        assert len(rows) == 4  # header + 3 iterations
        seen.add((trial["params"]["lr"], trial["params"]["num_epochs"]))
    assert seen == {(1e-3, 1), (1e-3, 2), (3e-4, 1), (3e-4, 2)}  # the GridSampler's 4 points
    best = max(summary["trials"], key=lambda t: t["best"])
    assert summary["best_trial"] == best["number"] and math.isfinite(best["best"])
    # the table names every trial and the best one
    assert "best episode_return_mean" in proc.stdout
    for trial in summary["trials"]:
        assert f"trial_{trial['number']:03d}" in proc.stdout
    assert f"best trial: {best['number']} (" in proc.stdout


def test_yaml_search_sweep_draws_within_the_ranges(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("""
algorithm: pg
env: CartPole-v1
runtime: inline
num_workers: 0
train_batch_size: 256
grid:
  hiddens: [[16], [32, 32]]
search:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  gamma: {uniform: [0.9, 0.99]}
sweep:
  samples: 2
""")
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = cli.main(["tune", "--config", str(path), "--stop-iters", "2", "--no-prune",
                         "--seed", "3", "--out", str(tmp_path / "s")])
    assert code == 0, stdout.getvalue()
    summary = json.loads((tmp_path / "s" / "sweep.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4  # 2 grid points x 2 draws (TPE, grid points enqueued)
    assert sorted(map(str, (t["params"]["hiddens"] for t in trials))) == \
        ["[16]", "[16]", "[32, 32]", "[32, 32]"]
    for t in trials:
        assert 1e-4 <= t["params"]["lr"] <= 1e-2 and 0.9 <= t["params"]["gamma"] <= 0.99
        assert t["status"] == "complete" and t["iterations"] == 2
        assert f"lr: {t['params']['lr']}" in (tmp_path / "s" / t["run_dir"].split("/")[-1]
                                               / "config.yaml").read_text()
    assert len({t["params"]["lr"] for t in trials}) == 4  # drawn, not repeated


@pytest.mark.parametrize("args, needle", [
    (["--grid", "lrr=[1e-3,3e-4]", "--stop-iters", "1"],
     "unknown config key 'lrr' in the sweep's grid for Config (did you mean 'lr'?)"),
    (["--grid", "lr=[1e-3,3e-4", "--stop-iters", "1"], "--grid lr: cannot parse"),
    (["--grid", "lr=[1e-3]"], "tune needs a stop condition"),
    (["--stop-iters", "1"], "tune needs something to sweep"),
    (["--grid", "lr=[1e-3]", "--stop-iters", "1", "--address", "auto"],
     "--address auto joins a Ray cluster: it needs --runtime ray"),
])
def test_bad_tune_input_is_one_line(tmp_path, args, needle):
    stderr = io.StringIO()
    with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
        code = cli.main(["tune", "ppo", "--out", str(tmp_path / "s"), *args])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "s").exists()  # nothing ran


def test_plan_honours_the_declared_runtime():
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert cli.main(["plan", "ppo", "--set", "runtime=inline"]) == 0
    assert stdout.getvalue().splitlines()[0] == "runtime: inline"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert cli.main(["plan", "ppo"]) == 0
    assert stdout.getvalue().splitlines()[0] == "runtime: process"  # the default, as train
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert cli.main(["plan", "ppo", "--set", "runtime=process", "--format", "dot"]) == 0
    assert stdout.getvalue().splitlines()[1].strip() == "// runtime: process"
    for args, needle in [
        (["--set", "runtime=rey"], "config key 'runtime' expects one of"),
        (["--set", "runtime=process", "--set", "runtime_options.start_methd=spawn"],
         "unknown process runtime option 'start_methd' (did you mean 'start_method'?)"),
    ]:
        stderr = io.StringIO()
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            assert cli.main(["plan", "ppo", *args]) == 2
        lines = stderr.getvalue().strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.ray
def test_plan_on_the_ray_runtime_validates_its_options_and_starts_nothing():
    pytest.importorskip("ray")
    import ray

    was_up = ray.is_initialized()
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert cli.main(["plan", "apex", "--set", "runtime=ray",
                         "--set", "runtime_options={address: auto, placement: spread}"]) == 0
    assert stdout.getvalue().splitlines()[0] == \
        "runtime: ray (address='auto', placement='spread')"
    assert ray.is_initialized() == was_up  # no Ray started or joined for describing
    stderr = io.StringIO()
    with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
        assert cli.main(["plan", "ppo", "--set", "runtime=ray",
                         "--set", "runtime_options.adress=auto"]) == 2
    assert "unknown ray runtime option 'adress' (did you mean 'address'?)" in stderr.getvalue()


@pytest.mark.parametrize("runtime, missing, package", [("process", "optuna", "Optuna"),
                                                       ("ray", "ray.tune", "Ray Tune")])
def test_a_missing_extra_is_one_line_naming_the_pip_install(tmp_path, monkeypatch, runtime,
                                                            missing, package):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))
    stderr = io.StringIO()
    with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
        code = cli.main(["tune", "ppo", "--runtime", runtime, "--grid", "lr=[1e-3,3e-4]",
                         "--stop-iters", "1", "--out", str(tmp_path / "s")])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and lines == [f'error: rldataflow tune needs {package}: pip install '
                                   f'"rldataflow[tune]"'], lines
    assert not (tmp_path / "s").exists()
