"""Ape-X: per-actor exploration, the three concurrent flows on the inline and process runtimes,
the learner thread's lifecycle and death, checkpoints, the command line, and learning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rldataflow
from rldataflow.algorithms import apex
from rldataflow.algorithms.apex import worker_epsilon
from rldataflow.flow import OperatorError
from rldataflow.trainer import Algorithm
from rldataflow.utils.checkpoint import load_checkpoint
from rldataflow.utils.config import ConfigError

QUICK = dict(num_workers=2, num_envs_per_worker=2, rollout_fragment_length=10,
             learning_starts=200, buffer_size=2000, min_steps_per_iteration=300,
             min_time_s_per_iteration=0.0, train_batch_size=32, training_intensity=1.0,
             max_weight_sync_delay=100)


def test_worker_epsilon_formula():
    # Horgan et al. 2018: eps_i = 0.4 ** (1 + 7 i / (N - 1))
    assert worker_epsilon(0, 8) == pytest.approx(0.4)
    assert worker_epsilon(7, 8) == pytest.approx(0.4 ** 8)
    assert worker_epsilon(3, 8) == pytest.approx(0.4 ** 4)
    assert worker_epsilon(0, 1) == pytest.approx(0.4)
    eps = [worker_epsilon(i, 16) for i in range(16)]
    assert eps == sorted(eps, reverse=True)


@pytest.mark.parametrize("per, expected", [
    ("worker", [[0.4], [0.4 ** 8]]),
    ("env", [[worker_epsilon(i, 4) for i in (0, 1)], [worker_epsilon(i, 4) for i in (2, 3)]]),
])
def test_each_actor_gets_its_epsilon(per, expected):
    with rldataflow.build("apex", env="CartPole-v1", runtime="inline", seed=0,
                          exploration_per=per, **QUICK) as algo:
        got = [np.atleast_1d(a.call("epsilon").result()).tolist()
               for a in algo.workers.remote_workers()]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-9)


def check_running(algo, iterations: int = 2):
    results = [algo.train() for _ in range(iterations)]
    last = results[-1]
    counters = last["counters"]
    assert last["env_steps_trained"] > 0
    assert counters["replay_rows_added"] == last["env_steps_sampled"]
    assert counters["num_priority_updates"] == counters["num_grad_updates"]
    assert counters["num_weight_syncs"] > 0
    assert 0 < last["learner_utilization"] <= 1
    return results


def test_plan_runs_on_the_inline_runtime():
    with rldataflow.build("apex", env="CartPole-v1", runtime="inline", seed=0, **QUICK) as algo:
        assert "Concurrently(mode=async, output_indexes=[2])" in algo.plan.describe()
        check_running(algo)
        learner = algo.plan.learner
        assert learner.is_alive()
    assert not learner.is_alive()  # stop() stopped the learner thread


def test_plan_runs_on_the_process_runtime_and_priorities_reach_the_shards():
    with rldataflow.build("apex", env="CartPole-v1", runtime="process", seed=0,
                          **QUICK) as algo:
        results = check_running(algo, 3)
        shards = algo.plan.replay_shards
        stats = [s.call("stats").result() for s in shards]
        # inserts were spread over both shards; each got priority updates from the learner
        assert all(s["num_added"] > 0 and s["num_priority_updates"] > 0 for s in stats)
        assert sum(s["num_added"] for s in stats) == results[-1]["env_steps_sampled"]
        # training_intensity 1: sampling waited for the learner
        last = results[-1]
        assert last["env_steps_trained"] >= 0.5 * (last["env_steps_sampled"] - 200)
        versions = algo.workers.foreach_worker(lambda w: w.weights_version, local=False)
        assert all(v > 0 for v in versions)  # workers got the learner's weights
    assert not algo.plan.learner.is_alive()


def test_learner_death_is_one_error_naming_the_thread():
    with rldataflow.build("apex", env="CartPole-v1", runtime="inline", seed=0, **QUICK) as algo:
        policy = algo.workers.local_worker().policy

        def broken(batch, **kwargs):
            raise RuntimeError("the learner broke")

        policy.learn_on_batch = broken
        with pytest.raises(OperatorError, match="thread 'apex-learner' stopped.*the learner broke"):
            for _ in range(20):
                algo.train()


def test_save_and_restore(tmp_path):
    with rldataflow.build("apex", env="CartPole-v1", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")  # the learner thread goes on: compare with the checkpoint
    state = load_checkpoint(tmp_path / "ckpt")[0]
    saved = state["worker"]["policy"] if "worker" in state else state["policy"]
    assert saved["num_grad_updates"] > 0
    restored = Algorithm.restore(tmp_path / "ckpt")
    try:
        policy = restored.workers.local_worker().policy
        for k, v in policy.model.state_dict().items():
            assert (v == saved["weights"][k]).all()
        for k, v in policy.target_model.state_dict().items():
            assert (v == saved["target_weights"][k]).all()
        assert restored.metrics.counters["replay_rows_added"] == 0
        assert restored.train()["iteration"] == 2
    finally:
        restored.stop()
    assert not restored.plan.learner.is_alive()


def test_config_checks():
    with pytest.raises(ConfigError, match="num_workers"):
        rldataflow.build("apex", num_workers=0, runtime="inline")
    with pytest.raises(ConfigError, match="exploration_per"):
        rldataflow.build("apex", exploration_per="agent", runtime="inline")
    cfg = apex.Config()
    assert (cfg.exploration_epsilon, cfg.exploration_alpha) == (0.4, 7.0)
    assert (cfg.prioritized_replay_alpha, cfg.prioritized_replay_beta) == (0.6, 0.4)


def test_cli_trains_and_shows_the_plan(tmp_path):
    base = [sys.executable, "-m", "rldataflow"]
    proc = subprocess.run(
        [*base, "train", "apex", "--env", "CartPole-v1", "--stop-iters", "1",
         "--out", str(tmp_path / "run"), "--set", "learning_starts=500",
         "--set", "min_steps_per_iteration=1000", "--set", "min_time_s_per_iteration=0"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "checkpoint_000001").exists()
    proc = subprocess.run([*base, "plan", "apex"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("StoreToReplayBuffer(2 shards)", "Enqueue", "Dequeue", "UpdatePriorities",
                 "SyncWeightsToSource"):
        assert name in proc.stdout


@pytest.mark.learning
def test_apex_learns_cartpole():
    """Process runtime, 2 workers, 2 replay shards: mean return >= 300 within 400k env steps."""
    start = time.perf_counter()
    with rldataflow.build("apex", env="CartPole-v1", runtime="process", num_workers=2,
                          num_replay_shards=2, seed=0) as algo:
        result = algo.train()
        while result["episode_return_mean"] < 300 and result["env_steps_sampled"] < 400_000:
            result = algo.train()
    wall = time.perf_counter() - start
    print(f"Ape-X CartPole: return {result['episode_return_mean']:.1f} after "
          f"{result['env_steps_sampled']} env steps, {wall:.0f}s")
    assert result["episode_return_mean"] >= 300, result["episode_return_mean"]
    assert result["env_steps_sampled"] <= 400_000 + 10_000


def _kill_replay_shard(algo, slot: int) -> None:
    shard = algo.plan.replay_shards[slot]
    os.kill(algo.workers.runtime.pid(shard), signal.SIGKILL)


def test_a_killed_replay_shard_is_replaced_empty_and_training_goes_on():
    with rldataflow.build("apex", env="CartPole-v1", runtime="process", seed=0,
                          **QUICK) as algo:
        check_running(algo, 2)
        old = algo.plan.replay_shards[0]
        before = algo.train()
        _kill_replay_shard(algo, 0)
        results = [algo.train() for _ in range(4)]
        assert algo.plan.shards.num_restarts == 1
        new = algo.plan.replay_shards[0]
        assert new.actor_id != old.actor_id
        # the replacement started empty and was refilled; the learner trains from it again
        for _ in range(20):  # (once it holds its own learning_starts rows)
            stats = new.call("stats").result()
            if stats["num_replayed"] > 0:
                break
            results.append(algo.train())
        assert 0 < stats["num_added"] < results[-1]["env_steps_sampled"]
        assert stats["num_replayed"] > 0
        counters = [before["counters"]] + [r["counters"] for r in results]
        for key in ("env_steps_sampled", "env_steps_trained", "num_grad_updates",
                    "replay_rows_added"):
            values = [c[key] for c in counters]
            assert values == sorted(values), key  # monotone through the death
        assert results[-1]["env_steps_trained"] > before["env_steps_trained"]
        lost = results[-1]["counters"]["replay_rows_lost"]
        assert 0 < lost <= before["env_steps_sampled"]


def test_a_killed_replay_shard_without_restarts_is_one_error_naming_it():
    with rldataflow.build("apex", env="CartPole-v1", runtime="process", seed=0,
                          restart_failed_workers=False, **QUICK) as algo:
        check_running(algo, 2)
        _kill_replay_shard(algo, 1)
        with pytest.raises(Exception, match="ReplayActor-1") as err:
            for _ in range(10):
                algo.train()
        assert "SIGKILL" in str(err.value)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_on_ray_a_sigkilled_worker_and_shard_are_replaced_and_the_plan_goes_on(ray_runtime):
    """Ray notices a SIGKILLed actor through its pending calls (no polling, no timeout):
    the pool replaces it and the plan moves on within a few iterations."""
    with rldataflow.build("apex", env="CartPole-v1", runtime="ray", seed=0,
                          **QUICK) as algo:
        check_running(algo, 2)
        rt = algo.workers.runtime
        previous = algo.train()
        for kind, victim in (("worker", algo.workers.remote_workers()[0]),
                             ("shard", algo.plan.replay_shards[0])):
            restarts_before = algo.workers.num_restarts + algo.plan.shards.num_restarts
            os.kill(rt.pid(victim), signal.SIGKILL)
            for _ in range(4):  # a few iterations, each at least QUICK's min time
                result = algo.train()
                if (algo.workers.num_restarts + algo.plan.shards.num_restarts
                        > restarts_before):
                    break
            assert (algo.workers.num_restarts + algo.plan.shards.num_restarts
                    == restarts_before + 1), f"the killed {kind} was not replaced"
            result = algo.train()
            assert result["env_steps_sampled"] > previous["env_steps_sampled"], kind
            assert result["env_steps_trained"] >= previous["env_steps_trained"], kind
            previous = result
        assert algo.workers.remote_workers()[0].is_alive()
        assert algo.plan.replay_shards[0].is_alive()
