"""WorkerSet: weights to all workers, health checks, and surviving a worker's death."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from rldataflow.flow.provenance import source_actor
from rldataflow.ops import ParallelRollouts
from rldataflow.runtime import get_runtime
from rldataflow.workers import WorkerSet

WORKER_KWARGS = dict(env="CartPole-v1", num_envs=2, rollout_fragment_length=16, seed=3)


def _pid(actor) -> int:
    return actor.call("apply", lambda worker: os.getpid()).result()


def test_sync_weights_reaches_every_worker(runtime):
    workers = WorkerSet(runtime, 2, WORKER_KWARGS)
    local = workers.local_worker().policy
    weights = {k: np.full_like(v, 0.5) for k, v in local.get_weights().items()}
    local.set_weights(weights, version=7)
    workers.sync_weights(wait=True)
    for actor in workers.remote_workers():
        remote = actor.call("get_weights").result()
        assert all(np.allclose(remote[k], 0.5) for k in remote)
        assert actor.call("apply", lambda w: w.policy.weights_version).result() == 7
    workers.stop()


def test_health_check_finds_killed_worker(remote_runtime):
    workers = WorkerSet(remote_runtime, 2, WORKER_KWARGS)
    assert workers.health_check() == []
    remote_runtime.kill(workers.remote_workers()[1])
    assert workers.health_check(timeout=5) == [1]
    assert workers.recreate_dead_workers() == 1
    assert workers.health_check() == []
    assert workers.num_restarts == 1
    workers.stop()


@pytest.mark.parametrize("mode", ["bulk_sync", "async"])
def test_sigkilled_worker_is_replaced_and_sampling_goes_on(mode):
    with get_runtime("process") as rt:
        workers = WorkerSet(rt, 2, dict(WORKER_KWARGS, rollout_fragment_length=64))
        rollouts = ParallelRollouts(workers, mode=mode, num_async=2)
        next(rollouts)
        victim = workers.remote_workers()[0]
        os.kill(_pid(victim), signal.SIGKILL)
        start = time.perf_counter()
        steps_before = rollouts.metrics.counters["env_steps_sampled"]
        # results the victim sent before dying may still arrive first; then it is replaced
        while workers.num_restarts == 0 and time.perf_counter() - start < 30:
            assert next(rollouts).count > 0
        new = workers.remote_workers()[0]
        if mode == "bulk_sync":
            # every round again holds one batch from each of the two workers
            assert next(rollouts).count == 2 * 2 * 64
        else:
            sources = set()
            while new not in sources and time.perf_counter() - start < 60:
                batch = next(rollouts)
                assert batch.count > 0
                sources.add(source_actor(batch))
            assert new in sources, "the replacement worker never delivered a batch"
        assert workers.num_restarts == 1
        assert rollouts.metrics.counters["shards_restarted"] == 1
        assert rollouts.metrics.counters["env_steps_sampled"] > steps_before
        assert new is not victim and new.is_alive()
        # the replacement samples with the driver's current weights
        local_w = workers.local_worker().get_weights()
        remote_w = new.call("get_weights").result()
        assert all(np.array_equal(local_w[k], remote_w[k]) for k in local_w)
        workers.stop()


def test_dead_worker_without_restart_names_the_actor():
    from rldataflow.runtime import ActorDiedError

    with get_runtime("process") as rt:
        workers = WorkerSet(rt, 1, WORKER_KWARGS, restart_failed=False)
        rollouts = ParallelRollouts(workers, mode="async")
        next(rollouts)
        victim = workers.remote_workers()[0]
        os.kill(_pid(victim), signal.SIGKILL)
        with pytest.raises(ActorDiedError, match="RolloutWorker-1"):
            for _ in range(10):
                next(rollouts)
        workers.stop()


def test_bad_env_fails_at_construction_with_env_named(runtime):
    from rldataflow.envs import EnvError

    with pytest.raises(EnvError, match="CartPol-v1"):
        WorkerSet(runtime, 1, dict(WORKER_KWARGS, env="CartPol-v1"))


def test_both_worker_kinds_follow_the_worker_protocol():
    from rldataflow.workers import MultiAgentRolloutWorker, RolloutWorker, Worker

    single = RolloutWorker("CartPole-v1", num_envs=1, rollout_fragment_length=8, seed=0)
    assert isinstance(single, Worker)
    assert single.weights_versions() == {"default_policy": single.weights_version}
    assert single.policy_ids() == ["default_policy"] and single.get_policy() is single.policy
    assert all(callable(getattr(MultiAgentRolloutWorker, name, None)) for name in
               ("sample", "get_weights", "set_weights", "evaluate", "apply", "ping", "stop",
                "policy_ids", "weights_versions"))
    single.stop()
