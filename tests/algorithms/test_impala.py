"""IMPALA: the plan's shape, policy lag in the results, weights to every source worker,
replay, aggregation, failures, checkpoints, determinism without the learner thread, learning."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import rldataflow
from rldataflow.algorithms import impala
from rldataflow.flow import OperatorError
from rldataflow.trainer import Algorithm
from rldataflow.utils.checkpoint import load_checkpoint
from rldataflow.utils.config import ConfigError

SMALL = dict(env="CartPole-v1", num_workers=2, num_envs_per_worker=2,
             rollout_fragment_length=16, train_batch_size=64, minibatch_size=32, seed=0)


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_config_checks():
    with pytest.raises(ConfigError, match="num_aggregation_workers"):
        rldataflow.build("impala", num_workers=2, num_aggregation_workers=3)
    with pytest.raises(ConfigError, match="broadcast_interval"):
        rldataflow.build("impala", broadcast_interval=0)
    with pytest.raises(ConfigError, match="did you mean 'replay_proportion'"):
        rldataflow.build("impala", replay_proportio=0.5)


def test_plan_shape_with_and_without_learner_thread():
    with rldataflow.build("impala", runtime="inline", **SMALL) as algo:
        text = algo.plan.describe()
        for part in ("Concurrently(mode=async, output_indexes=[1])", "Enqueue", "Dequeue",
                     "BroadcastLearnerWeights(sources, interval=1)", "ConcatBatches(64)",
                     "NoteSource", "gather_async(num_async=2)", "RecordLearnerResult"):
            assert part in text, part
        assert impala.parts_of(algo).learner.thread.is_alive()
        thread = impala.parts_of(algo).learner.thread
    assert not thread.is_alive()  # stop() ends the learner thread
    with rldataflow.build("impala", runtime="inline", learner_thread=False,
                          replay_proportion=0.5, **SMALL) as algo:
        text = algo.plan.describe()
        assert "LearnInline" in text and "MixInReplay(proportion=0.5" in text
        assert "Concurrently" not in text and "Enqueue" not in text


def test_inline_without_learner_thread_is_reproducible():
    """With learning in-line (learner_thread=False) the inline runtime is bit-reproducible.
    (With the learner thread it is not: which batch meets which weights depends on timing.)"""

    def run():
        with rldataflow.build("impala", runtime="inline", learner_thread=False,
                              min_steps_per_iteration=256, **SMALL) as algo:
            results = [algo.train() for _ in range(3)]
            return results, algo.workers.local_worker().policy.get_weights()

    (a, wa), (b, wb) = run(), run()
    keys = ("env_steps_sampled", "env_steps_trained", "episode_return_mean", "policy_lag_mean",
            "policy_lag_max", "policy_sgd_lag_mean")
    for ra, rb in zip(a, b, strict=True):
        assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}
        assert ra["learner"] == rb["learner"]
    assert _weights_equal(wa, wb)
    assert a[-1]["env_steps_trained"] >= 3 * 256


def test_process_run_reports_lag_and_sends_weights_to_every_source():
    """Train batches of 64 rows concatenate one 32-row batch of each worker: both workers must
    get new weights (not only the source of the last batch)."""
    with rldataflow.build("impala", runtime="process", min_steps_per_iteration=1000,
                          **dict(SMALL, num_envs_per_worker=1, rollout_fragment_length=32)
                          ) as algo:
        results = [algo.train() for _ in range(3)]
        r = results[-1]
        assert r["env_steps_trained"] > 0 and r["env_steps_sampled"] >= 3000
        assert 0 <= r["policy_lag_mean"] <= r["policy_lag_max"]
        assert 0 <= r["policy_sgd_lag_mean"] <= r["policy_sgd_lag_max"]
        assert r["policy_sgd_lag_max"] >= r["policy_lag_max"]
        assert 0 < r["learner_utilization"] <= 1
        assert r["counters"]["num_weight_broadcasts"] > 0
        learner_version = algo.workers.local_worker().policy.weights_version
        versions = algo.workers.foreach_worker(lambda w: w.policy.weights_version, local=False)
        assert all(0 < v <= learner_version for v in versions), (versions, learner_version)
        assert r["learner"]["num_grad_updates"] == 3 * 2  # 3 epochs x 64 / 32 rows


def test_broadcast_interval_limits_weight_snapshots():
    with rldataflow.build("impala", runtime="inline", learner_thread=False,
                          broadcast_interval=3, min_steps_per_iteration=1024, **SMALL) as algo:
        algo.train()
        learner = impala.parts_of(algo).learner
        assert learner.num_updates >= 9
        assert np.diff(learner._updates_at).tolist() == [3] * (len(learner._updates_at) - 1)
        published = set(learner._versions)
        versions = algo.workers.foreach_worker(lambda w: w.policy.weights_version, local=False)
        assert all(v in published for v in versions) and max(versions) > 0


@pytest.mark.parametrize("num_async", [1, 2, 3])
def test_policy_lag_is_measured_exactly(num_async):
    """One worker, one sample batch per train batch, learning in-line: the worker's next
    ``num_async`` requests are queued before the new weights (refill before yield), so in the
    steady state every batch is learned ``num_async`` updates after its weights were sent."""
    with rldataflow.build("impala", runtime="inline", learner_thread=False, num_workers=1,
                          num_envs_per_worker=2, rollout_fragment_length=16,
                          train_batch_size=32, minibatch_size=32, num_async=num_async,
                          min_steps_per_iteration=32 * 10, seed=0) as algo:
        r = algo.train()
        lags = algo.metrics.window("policy_lag_mean")
        assert lags == [float(min(i, num_async)) for i in range(10)]
        assert r["policy_lag_max"] == num_async
        assert r["policy_sgd_lag_max"] == 3 * num_async  # 3 passes: 3 optimizer steps/update


def test_dead_worker_is_replaced_and_training_goes_on():
    import os
    import signal

    with rldataflow.build("impala", runtime="process", min_steps_per_iteration=500,
                          **SMALL) as algo:
        algo.train()
        victim = algo.workers.remote_workers()[0]
        os.kill(algo.runtime.pid(victim), signal.SIGKILL)
        restarts = 0
        deadline = time.monotonic() + 60
        while not restarts and time.monotonic() < deadline:
            r = algo.train()
            restarts = r["worker_restarts"]
        assert restarts == 1
        before = r["env_steps_trained"]
        assert algo.train()["env_steps_trained"] > before


def test_replay_mixes_old_batches_in():
    with rldataflow.build("impala", runtime="inline", learner_thread=False,
                          replay_proportion=1.0, replay_buffer_num_slots=4,
                          min_steps_per_iteration=512, **SMALL) as algo:
        r = algo.train()
        replayed = r["counters"]["env_steps_replayed"]
        assert replayed > 0
        # every sampled row is learned once, and replayed rows on top (the last train batch of
        # the iteration may still be filling)
        assert r["env_steps_trained"] <= r["env_steps_sampled"] + replayed
        assert r["env_steps_trained"] >= r["env_steps_sampled"] + replayed - 64


def test_learner_error_is_raised_naming_the_thread():
    with rldataflow.build("impala", runtime="inline", **SMALL) as algo:
        def boom(policy, batch):
            raise RuntimeError("loss exploded")

        algo.workers.local_worker().policy.loss_fn = boom
        start = time.perf_counter()
        with pytest.raises(OperatorError, match="impala-learner.*loss exploded"):
            algo.train()
        assert time.perf_counter() - start < 10


def test_checkpoint_roundtrip(tmp_path):
    with rldataflow.build("impala", runtime="inline", min_steps_per_iteration=256,
                          **SMALL) as algo:
        algo.train()
        # the learner thread may go on learning from its queue meanwhile: save() reads the
        # policy under the learner's lock, so the checkpoint holds one consistent update
        path = algo.save(tmp_path / "ckpt")
    state, _ = load_checkpoint(path)
    policy_state = state["worker"]["policy"] if "worker" in state else state["policy"]
    weights = {k: v.numpy() for k, v in policy_state["weights"].items()}
    with Algorithm.restore(path, runtime=None) as restored:
        assert _weights_equal(restored.workers.local_worker().policy.get_weights(), weights)
        learner = impala.parts_of(restored).learner
        assert learner.num_updates == state["extra"]["num_learner_updates"] > 0
        assert _weights_equal(learner.snapshot[0], weights)  # what workers are sent next
        assert restored.train()["env_steps_trained"] > 0


@pytest.mark.parametrize("runtime_name", ["process", pytest.param("ray", marks=pytest.mark.ray)])
def test_aggregation_tier_trains(runtime_name, request):
    if runtime_name == "ray":
        request.getfixturevalue("ray_runtime")
    with rldataflow.build("impala", runtime=runtime_name, num_aggregation_workers=2,
                          min_steps_per_iteration=500, **dict(SMALL, num_workers=4)) as algo:
        assert algo.workers.num_remote_workers == 0  # the workers belong to the aggregators
        text = algo.plan.describe()
        assert "aggregators(2 x 2/2 workers)" in text
        results = [algo.train() for _ in range(2)]
        assert results[-1]["env_steps_trained"] > 0
        assert not math.isnan(results[-1]["episode_return_mean"])
        assert results[-1]["counters"]["num_weight_broadcasts"] > 0


@pytest.mark.learning
def test_impala_cartpole_learns():
    """Mean return >= 400 within 500k env steps (2 workers, process runtime)."""
    start = time.perf_counter()
    with rldataflow.build("impala", env="CartPole-v1", runtime="process", num_workers=2,
                          seed=0, min_steps_per_iteration=10_000) as algo:
        best = -math.inf
        while True:
            r = algo.train()
            best = max(best, r["episode_return_mean"])
            if best >= 400 or r["env_steps_sampled"] >= 500_000:
                break
    print(f"IMPALA CartPole: {best:.1f} after {r['env_steps_sampled']} steps, "
          f"{time.perf_counter() - start:.1f}s, lag {r['policy_lag_mean']:.2f}")
    assert best >= 400, f"best mean return {best:.1f} after {r['env_steps_sampled']} steps"
