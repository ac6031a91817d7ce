"""Tree aggregation: aggregator actors own groups of workers and serve whole train batches, on
the inline, process and ray runtimes; weights reach every worker; dead workers and dead
aggregators are replaced while the stream goes on."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest

from rldataflow.data import SampleBatch as SB
from rldataflow.flow import OperatorError
from rldataflow.ops import AggregatorSet
from rldataflow.ops.aggregation import split_worker_indexes
from rldataflow.runtime import ActorDiedError
from rldataflow.workers import RolloutWorker

FRAGMENT = 10
ENVS = 2
KW = dict(env="CartPole-v1", num_envs=ENVS, rollout_fragment_length=FRAGMENT, seed=3)


def _weights_of(version: int) -> tuple[dict, int]:
    worker = RolloutWorker(**KW)  # same spaces and model shapes as the remote workers
    weights = {k: np.full_like(v, 0.01 * version) for k, v in worker.get_weights().items()}
    worker.stop()
    return weights, version


def _stamp(policy, batch):
    batch["sampled_by"] = np.full(batch.count, policy.weights_version, np.int64)
    return batch


def _factory(obs_space, action_space):
    from rldataflow.policies import TorchPolicy

    return TorchPolicy(obs_space, action_space, postprocess_fn=_stamp, seed=0)


def _aggregators(runtime, num_aggregators=2, num_workers=4, min_batch_size=40, version=1):
    current = {"weights": _weights_of(version)}
    aggs = AggregatorSet(runtime, num_aggregators, RolloutWorker,
                         dict(KW, policy_factory=_factory), num_workers=num_workers, num_async=2,
                         min_batch_size=min_batch_size, weights_fn=lambda: current["weights"])
    return aggs, current


def test_split_worker_indexes():
    assert split_worker_indexes(5, 2) == [[1, 2], [3, 4, 5]]
    assert split_worker_indexes(8, 4) == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert split_worker_indexes(3, 3) == [[1], [2], [3]]
    with pytest.raises(ValueError, match="num_groups"):
        split_worker_indexes(2, 3)


@pytest.mark.parametrize("runtime_name", [
    "inline", "process", pytest.param("ray", marks=pytest.mark.ray)])
def test_aggregators_serve_train_batches_from_their_workers(runtime_name, request):
    if runtime_name == "ray":
        request.getfixturevalue("ray_runtime")
    from rldataflow.runtime import get_runtime

    with get_runtime(runtime_name) as rt:
        aggs, current = _aggregators(rt)
        try:
            stream = aggs.gather()
            batches, seen = [], set()
            deadline = time.monotonic() + 60
            while seen != {1, 2, 3, 4} and time.monotonic() < deadline:
                b = next(stream)
                batches.append(b)
                assert b.count >= 40 and b.count % (ENVS * FRAGMENT) == 0
                # the initial weights (version 1) were pushed before any sampling
                assert (b["sampled_by"] >= 1).all()
                # episode ids carry the worker's global index (so its seed is the same as
                # in a WorkerSet)
                seen |= set((b[SB.EPS_ID] >> 40).tolist())
            assert seen == {1, 2, 3, 4}  # all four workers contribute
            assert stream.metrics.counters["env_steps_sampled"] == sum(b.count for b in batches)
            # new weights: each worker gets them after its next batch, so they show up soon
            weights, version = _weights_of(7)
            for actor in aggs.actors:
                actor.call("set_weights", weights, version)
            seen = set()
            deadline = time.monotonic() + 60
            while seen != {1, 2, 3, 4} and time.monotonic() < deadline:
                b = next(stream)
                seen |= set((b[SB.EPS_ID][b["sampled_by"] == 7] >> 40).tolist())
            assert seen == {1, 2, 3, 4}
        finally:
            aggs.stop()


def test_process_aggregator_workers_are_its_children():
    """The tree: workers are processes of their aggregator, not of the driver."""
    from rldataflow.runtime import get_runtime

    with get_runtime("process") as rt:
        aggs, _ = _aggregators(rt, num_aggregators=2, num_workers=2)
        try:
            for actor in aggs.actors:
                agg_pid = rt.pid(actor)
                pids = actor.call("worker_pids").result()
                assert len(pids) == 1
                assert psutil.Process(pids[0]).ppid() != os.getpid()
                chain = {p.pid for p in psutil.Process(pids[0]).parents()}
                assert agg_pid in chain
        finally:
            aggs.stop()


def test_dead_worker_and_dead_aggregator_are_replaced():
    from rldataflow.runtime import get_runtime

    with get_runtime("process") as rt:
        aggs, _ = _aggregators(rt, num_aggregators=2, num_workers=4)
        try:
            stream = aggs.gather()
            next(stream)
            # a worker dies inside aggregator 0: the aggregator restarts it
            victim = aggs.actors[0].call("worker_pids").result()[0]
            os.kill(victim, signal.SIGKILL)
            restarts = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                b = next(stream)
                restarts = max(restarts, b.info.get("aggregator_worker_restarts", 0))
                if restarts:
                    break
            assert restarts == 1
            # an aggregator dies: the driver starts a new one with fresh workers
            old = aggs.actors[1]
            os.kill(rt.pid(old), signal.SIGKILL)
            for _ in range(10):
                assert next(stream).count >= 40
            assert aggs.num_restarts == 1 and aggs.actors[1] is not old
            assert (next(stream)["sampled_by"] >= 1).all()  # restarted group got the weights
        finally:
            aggs.stop()


@pytest.mark.parametrize("victim", ["aggregator", "worker"])
def test_without_restarts_a_death_is_one_error_naming_the_dead_actor(victim):
    """The aggregators follow the one failure policy (``restart_failed``): off, the death of
    an aggregator, or of a worker it owns, ends the stream with the error naming that actor."""
    from rldataflow.runtime import get_runtime

    with get_runtime("process") as rt:
        aggs = AggregatorSet(rt, 2, RolloutWorker, dict(KW, policy_factory=_factory),
                             num_workers=2, num_async=2, min_batch_size=40,
                             weights_fn=lambda: _weights_of(1), restart_failed=False)
        try:
            stream = aggs.gather()
            next(stream)
            if victim == "aggregator":
                os.kill(rt.pid(aggs.actors[1]), signal.SIGKILL)
                name = "AggregationWorker-1"
            else:
                os.kill(aggs.actors[0].call("worker_pids").result()[0], signal.SIGKILL)
                name = "RolloutWorker-1"
            # (a worker's death reaches the driver inside the aggregator's own stream error)
            with pytest.raises((ActorDiedError, OperatorError), match=name) as err:
                for _ in range(200):
                    next(stream)
            assert "SIGKILL" in str(err.value) and "\n" not in str(err.value)
            assert aggs.num_restarts == 0
        finally:
            aggs.stop()
