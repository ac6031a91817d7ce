"""What SAC's tests check for SAC, for DDPG and TD3 too: a checkpoint brings back the actor, the
critics, their targets, the optimizers and the uniform start-up phase's count exactly; a killed
rollout worker is replaced and training goes on; ``rldataflow plan`` prints the shared plan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import rldataflow
from rldataflow.trainer import Algorithm

QUICK = dict(learning_starts=64, train_batch_size=32, min_steps_per_iteration=100,
             hiddens=(16, 16), initial_random_steps=150)


@pytest.mark.parametrize("name", ["sac", "ddpg", "td3"])
def test_checkpoint_round_trip(name, tmp_path, assert_same_state):
    with rldataflow.build(name, runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
        state = algo.workers.local_worker().policy.get_state()
    assert 0 < state["random_steps_left"] < 150  # saved mid-way through the uniform phase
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        got = restored.workers.local_worker().policy.get_state()
        targets = {"sac": {"critic"}}.get(name, {"actor", "critic"})
        optimizers = {"sac": {"actor", "critic", "alpha"}}.get(name, {"actor", "critic"})
        assert set(got["targets"]) == targets and set(got["optimizers"]) == optimizers
        assert_same_state(state, got)
        assert restored.train()["iteration"] == 2
    finally:
        restored.stop()


@pytest.mark.parametrize("name", ["ddpg", "td3"])
def test_dead_worker_is_replaced_and_training_goes_on(name):
    with rldataflow.build(name, runtime="process", num_workers=2, seed=0, **QUICK) as algo:
        algo.train()
        victim = algo.workers.remote_workers()[0]
        os.kill(algo.runtime.pid(victim), signal.SIGKILL)
        restarts, deadline = 0, time.monotonic() + 60
        while not restarts and time.monotonic() < deadline:
            r = algo.train()
            restarts = r["worker_restarts"]
        assert restarts == 1
        before = r["env_steps_trained"]
        assert algo.train()["env_steps_trained"] > before
        assert algo.workers.remote_workers()[0] is not victim


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_cli_plan(name):
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", name],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "StoreToReplayBuffer(local)" in proc.stdout and "TrainOneStep" in proc.stdout
