"""Ape-X DDPG: per-actor noise scales, the shared Ape-X plan on the inline and process runtimes
with priorities reaching the shards, checkpoints, the command line, a killed rollout worker,
and learning Pendulum."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rldataflow
from rldataflow.algorithms.apex_ddpg import worker_noise_scales
from rldataflow.trainer import Algorithm
from rldataflow.utils.checkpoint import load_checkpoint
from rldataflow.utils.config import ConfigError

QUICK = dict(num_workers=2, num_envs_per_worker=2, rollout_fragment_length=10,
             learning_starts=200, buffer_size=2000, min_steps_per_iteration=300,
             min_time_s_per_iteration=0.0, train_batch_size=32, training_intensity=1.0,
             max_weight_sync_delay=100, hiddens=(16, 16))


def test_noise_scale_formula():
    # sigma_i = sigma ** (1 + alpha i / (N - 1)), the continuous analogue of Ape-X's eps_i
    np.testing.assert_allclose(worker_noise_scales(0, 2, 2, 0.4, 3.0), [0.4, 0.4 ** 2])
    np.testing.assert_allclose(worker_noise_scales(1, 2, 2, 0.4, 3.0), [0.4 ** 3, 0.4 ** 4])
    assert worker_noise_scales(1, 2, 2, 0.4, 3.0, per="worker") == pytest.approx(0.4 ** 4)
    assert worker_noise_scales(0, 1, 1, 0.3, 3.0, per="worker") == pytest.approx(0.3)


@pytest.mark.parametrize("per, expected", [
    ("worker", [[0.4], [0.4 ** 4]]),
    ("env", [[0.4, 0.4 ** 2], [0.4 ** 3, 0.4 ** 4]]),
])
def test_each_actor_gets_its_noise_scale(per, expected):
    with rldataflow.build("apex_ddpg", runtime="inline", seed=0, exploration_per=per,
                          **QUICK) as algo:
        got = [np.atleast_1d(a.call("noise_scale").result()).tolist()
               for a in algo.workers.remote_workers()]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-9)
        # the driver's (learner's) policy is no actor: it keeps the config's scale
        assert algo.workers.local_worker().policy.noise_scale == pytest.approx(0.4)


def check_running(algo, iterations: int = 2):
    results = [algo.train() for _ in range(iterations)]
    last = results[-1]
    counters = last["counters"]
    assert last["env_steps_trained"] > 0
    assert counters["replay_rows_added"] == last["env_steps_sampled"]
    assert counters["num_priority_updates"] == counters["num_grad_updates"] > 0
    assert counters["num_weight_syncs"] > 0
    assert np.isfinite(last["learner"]["critic_loss"])
    return results


def test_plan_runs_inline_and_stop_ends_the_learner():
    with rldataflow.build("apex_ddpg", runtime="inline", seed=0, **QUICK) as algo:
        text = algo.plan.describe()
        assert "Concurrently(mode=async, output_indexes=[2])" in text
        assert "UpdateTargetNetwork" not in text  # DDPG's learner moves its targets by tau
        check_running(algo)
        learner = algo.plan.learner
    assert not learner.is_alive()


def test_process_runtime_priorities_reach_the_shards():
    with rldataflow.build("apex_ddpg", runtime="process", seed=0, **QUICK) as algo:
        results = check_running(algo, 3)
        stats = [s.call("stats").result() for s in algo.plan.replay_shards]
        assert all(s["num_added"] > 0 and s["num_priority_updates"] > 0 for s in stats)
        assert sum(s["num_added"] for s in stats) == results[-1]["env_steps_sampled"]
        versions = algo.workers.foreach_worker(lambda w: w.weights_version, local=False)
        assert all(v > 0 for v in versions)


def test_save_and_restore(tmp_path, assert_same_state):
    with rldataflow.build("apex_ddpg", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")  # the learner thread goes on: compare with the checkpoint
    state = load_checkpoint(tmp_path / "ckpt")[0]
    saved = state["worker"]["policy"] if "worker" in state else state["policy"]
    assert saved["learner_num_updates"] > 0
    restored = Algorithm.restore(tmp_path / "ckpt")
    try:
        got = restored.workers.local_worker().policy.get_state()
        assert set(got["optimizers"]) == {"actor", "critic"}
        assert set(got["targets"]) == {"actor", "critic"}
        assert_same_state(saved["weights"], got["weights"])
        assert_same_state(saved["targets"], got["targets"])
        assert_same_state(saved["optimizers"], got["optimizers"])
        assert restored.metrics.counters["replay_rows_added"] == 0
        assert restored.train()["iteration"] == 2
    finally:
        restored.stop()


def test_a_killed_rollout_worker_is_replaced_and_training_goes_on():
    with rldataflow.build("apex_ddpg", runtime="process", seed=0, exploration_per="worker",
                          **QUICK) as algo:
        algo.train()
        victim = algo.workers.remote_workers()[1]
        os.kill(algo.runtime.pid(victim), signal.SIGKILL)
        restarts, deadline = 0, time.monotonic() + 60
        while not restarts and time.monotonic() < deadline:
            r = algo.train()
            restarts = r["worker_restarts"]
        assert restarts == 1
        before = r["env_steps_trained"]
        assert algo.train()["env_steps_trained"] > before
        new = algo.workers.remote_workers()[1]
        assert new is not victim
        assert new.call("noise_scale").result() == pytest.approx(0.4 ** 4)  # its slot's sigma


def test_config_checks():
    with pytest.raises(ConfigError, match="num_workers"):
        rldataflow.build("apex_ddpg", num_workers=0, runtime="inline")
    with pytest.raises(ConfigError, match="exploration_scale"):
        rldataflow.build("apex_ddpg", exploration_scale=1.5, runtime="inline")
    with pytest.raises(ConfigError, match="continuous"):
        rldataflow.build("apex_ddpg", env="CartPole-v1", runtime="inline")


def test_cli_plan():
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "apex_ddpg"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("StoreToReplayBuffer(2 shards)", "Enqueue", "Dequeue", "UpdatePriorities",
                 "SyncWeightsToSource", "ApexDDPGWorker"):
        assert name in proc.stdout


@pytest.mark.learning
@pytest.mark.timeout(300)
def test_apex_ddpg_learns_pendulum(record_property):
    """Process runtime, 2 workers, 2 shards, defaults: the last-10-episode mean return reaches
    -300 within 150k env steps (seed 0: ~16k steps, ~30 s on a loaded 2-core machine)."""
    start = time.perf_counter()
    with rldataflow.build("apex_ddpg", env="Pendulum-v1", runtime="process", seed=0) as algo:
        while True:
            r = algo.train()
            last10 = algo.metrics.window("episode_return")[-10:]
            mean10 = float(np.mean(last10)) if len(last10) == 10 else -math.inf
            if mean10 >= -300 or r["env_steps_sampled"] >= 150_000:
                break
    wall = time.perf_counter() - start
    steps = r["env_steps_sampled"]
    print(f"\napex_ddpg Pendulum-v1: last-10 mean {mean10:.1f} after {steps} env steps, "
          f"{wall:.1f} s")
    record_property("env_steps", steps)
    record_property("wall_time_s", round(wall, 1))
    assert mean10 >= -300, f"apex_ddpg: last-10 mean {mean10:.1f} after {steps} steps"
