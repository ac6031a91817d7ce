"""Tuned example configs: every one is a valid config, the CLI runs them by path or by name
with their own stop conditions, and the regression benchmark reports against their targets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rldataflow.trainer import make_config
from rldataflow.tuned import tuned_configs, tuned_path

CLI = [sys.executable, "-m", "rldataflow"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", sorted(tuned_configs()))
def test_every_tuned_config_is_valid_and_has_a_budget(name):
    data = yaml.safe_load(tuned_path(name).read_text())
    algo = data.pop("algorithm")
    stop = data.pop("stop")
    data.pop("expected", None)
    assert stop.get("steps") and "return" in stop, f"{name}: a tuned config states its budget"
    make_config(algo, data, from_cli=True)  # raises ConfigError on any bad key or value
    assert name.startswith(f"{algo}-")


def test_train_runs_a_tuned_config_by_name_with_its_stop_conditions(tmp_path):
    out = tmp_path / "run"
    # The flag overrides the file's budget; the file's target return still applies.
    proc = run("train", "--config", "ppo-cartpole", "--stop-iters", "2", "--out", str(out),
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "reached 2 iterations" in proc.stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["env"] == "CartPole-v1"


@pytest.mark.parametrize("stop, needle", [
    ("stop: {retrun: 10}", "unknown stop condition 'retrun'"),
    ("stop: {steps: many}", "stop condition 'steps' must be a number"),
    ("stop: 5", "`stop` must be a mapping"),
])
def test_bad_stop_section_is_one_line_naming_it(tmp_path, stop, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(f"algorithm: ppo\nenv: CartPole-v1\n{stop}\n")
    proc = run("train", "--config", str(path), "--quiet")
    assert proc.returncode != 0
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_tuned_lists_the_configs():
    proc = run("tuned")
    assert proc.returncode == 0, proc.stderr
    for name in tuned_configs():
        assert name in proc.stdout


@pytest.mark.learning
def test_regression_benchmark_reports_a_reached_target(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "regression.py"), "--only", "ppo-cartpole",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "regression.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ppo-cartpole"))
    assert row.rstrip().endswith("reached |")
    assert (tmp_path / "regression.png").stat().st_size > 0
