"""RL operators: rollouts in each mode, concatenation, standardization, training, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from rldataflow.data import SampleBatch
from rldataflow.flow import from_local_iterable
from rldataflow.ops import (
    ApplyGradients,
    AsyncGradients,
    AverageGradients,
    ComputeGradients,
    ConcatBatches,
    ParallelRollouts,
    StandardizeFields,
    StandardMetricsReporting,
    TrainOneStep,
)
from rldataflow.runtime import get_runtime
from rldataflow.workers import WorkerSet

KW = dict(env="CartPole-v1", num_envs=2, rollout_fragment_length=10, seed=1)


@pytest.fixture(params=["inline", "process"])
def workers(request):
    # Every op on the two local runtimes; the ray runtime gets its own end-to-end test below
    # (a Ray actor importing torch costs seconds, too many for one per op).
    with get_runtime(request.param) as rt:
        ws = WorkerSet(rt, 2, KW)
        yield ws
        ws.stop()


@pytest.mark.ray
def test_rollouts_train_and_report_on_ray(ray_runtime):
    with get_runtime("ray") as rt:
        ws = WorkerSet(rt, 2, KW)
        train = ParallelRollouts(ws, mode="async", num_async=2).for_each(TrainOneStep(ws))
        result = next(StandardMetricsReporting(train, ws, min_steps=60))
        assert result["env_steps_trained"] >= 60
        grads = AsyncGradients(ws).for_each(ApplyGradients(ws, update_all=False))
        assert next(grads)["count"] == 20
        ws.stop()


def test_bulk_sync_concatenates_one_batch_per_worker(workers):
    batch = next(ParallelRollouts(workers, mode="bulk_sync"))
    assert batch.count == 2 * 2 * 10


def test_async_rollouts_count_steps(workers):
    it = ParallelRollouts(workers, mode="async", num_async=2)
    counts = [next(it).count for _ in range(4)]
    assert counts == [20] * 4
    assert it.metrics.counters["env_steps_sampled"] == 80


def test_raw_mode_is_the_parallel_iterator(workers):
    par = ParallelRollouts(workers, mode="raw")
    assert par.num_shards() == 2
    assert next(par.gather_sync()).count == 20


def test_local_worker_samples_without_remote_workers():
    with get_runtime("inline") as rt:
        ws = WorkerSet(rt, 0, KW)
        assert next(ParallelRollouts(ws)).count == 20


def test_bad_mode_is_rejected(workers):
    with pytest.raises(ValueError, match="bulk_sync"):
        ParallelRollouts(workers, mode="bulk")


def test_concat_batches_reaches_min_size():
    batches = [SampleBatch({"x": np.arange(n)}) for n in (3, 4, 5, 2, 9)]
    out = from_local_iterable(batches).for_each(ConcatBatches(7)).take(5)
    assert [b.count for b in out] == [7, 7, 9]
    assert np.array_equal(out[0]["x"], np.r_[np.arange(3), np.arange(4)])


def test_standardize_fields():
    batch = SampleBatch({"advantages": np.array([1.0, 2.0, 3.0, 6.0])})
    out = StandardizeFields(["advantages"])(batch)
    assert abs(out["advantages"].mean()) < 1e-6
    assert abs(out["advantages"].std() - 1) < 1e-5
    with pytest.raises(KeyError, match="nope"):
        StandardizeFields(["nope"])(batch)


def test_train_one_step_counts_and_broadcasts(workers):
    train = ParallelRollouts(workers).for_each(TrainOneStep(workers, num_epochs=2,
                                                             minibatch_size=10))
    batch, stats = next(train)
    assert stats["num_grad_updates"] == 2 * 4
    counters = train.metrics.counters
    assert counters["env_steps_trained"] == batch.count == 40
    local = workers.local_worker().get_weights()
    remote = workers.remote_workers()[1].call("get_weights").result()
    assert all(np.array_equal(local[k], remote[k]) for k in local)


def test_average_gradients_divides():
    g1 = ([np.ones(3, np.float32)], {"count": 2})
    g2 = ([3 * np.ones(3, np.float32)], {"count": 5})
    grads, info = AverageGradients()([g1, g2])
    assert np.allclose(grads[0], 2.0)
    assert info["count"] == 7


def test_microbatch_gradients_path(workers):
    before = workers.local_worker().policy.num_grad_updates
    op = (ParallelRollouts(workers).for_each(ConcatBatches(20))
          .for_each(ComputeGradients(workers)).batch(2)
          .for_each(AverageGradients()).for_each(ApplyGradients(workers)))
    info = next(op)
    assert info["count"] == 80
    assert workers.local_worker().policy.num_grad_updates == before + 1


def test_async_gradients_update_source_worker_only(workers):
    op = AsyncGradients(workers).for_each(ApplyGradients(workers, update_all=False))
    info = next(op)
    assert info["count"] == 20
    assert op.metrics.counters["env_steps_trained"] == 20
    source = info["source"]
    local = workers.local_worker().get_weights()
    synced = source.call("get_weights").result()
    assert all(np.array_equal(local[k], synced[k]) for k in local)


def test_reporting_has_standard_keys(workers):
    train = ParallelRollouts(workers).for_each(TrainOneStep(workers))
    result = next(StandardMetricsReporting(train, workers, min_steps=100))
    for key in ("episode_return_mean", "episode_len_mean", "env_steps_sampled",
                "env_steps_trained", "throughput", "learner", "worker_restarts", "timers"):
        assert key in result
    assert result["env_steps_sampled"] >= 100
