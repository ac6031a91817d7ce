"""Experience sources: batches (or gradients) from the rollout workers as a stream."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

from rldataflow.data import SampleBatch
from rldataflow.flow import LocalIterator, Operator, ParallelIterator, ScatterCalls, from_actors
from rldataflow.flow.local_iterator import from_local_iterable
from rldataflow.ops.dataset import WriteToDataset
from rldataflow.runtime import ActorHandle
from rldataflow.workers import WorkerSet
from rldataflow.workers.multi_agent_worker import POLICY_RETURNS_PREFIX

ROLLOUT_MODES = ("bulk_sync", "async", "raw")

#: Metrics window of policy ``pid``'s agent sub-episode returns: ``POLICY_RETURN_WINDOW + pid``
#: (filled from multi-agent batches' ``stats[POLICY_RETURNS_PREFIX + pid]``).
POLICY_RETURN_WINDOW = "policy_episode_return/"


class RecordSampled(Operator):
    """Count sampled env steps and keep the finished episodes' returns and lengths."""

    op_name = "RecordSampled"

    def __call__(self, batch: Any) -> Any:
        record_sampled(self.metrics, batch.count, batch.stats)
        return batch


def record_sampled(metrics: Any, count: int, stats: dict[str, Any]) -> None:
    metrics.counters["env_steps_sampled"] += count
    returns = stats.get("episode_returns", ())
    if len(returns):
        metrics.record_many("episode_return", returns)
        metrics.record_many("episode_len", stats.get("episode_lengths", ()))
        metrics.counters["episodes_total"] += len(returns)
    for key, values in stats.items():
        if key.startswith(POLICY_RETURNS_PREFIX) and len(values):
            metrics.record_many(POLICY_RETURN_WINDOW + key[len(POLICY_RETURNS_PREFIX):], values)


def ParallelRollouts(workers: WorkerSet, mode: str = "bulk_sync",
                     num_async: int = 1) -> LocalIterator[SampleBatch] | ParallelIterator:
    """A stream of experience batches from the workers.

    ``bulk_sync``: one batch from every remote worker per step, concatenated (lock-step).
    ``async``: batches as each worker finishes one, ``num_async`` requests in flight per worker.
    ``raw``: the underlying ParallelIterator (one shard per worker), for custom gathering.
    With no remote workers the local worker samples. Dead workers are replaced through the
    WorkerSet (see :meth:`WorkerSet.replace_dead_worker`). When the workers have an ``output``
    (the ``output`` config key), each worker also writes its batches there
    (:class:`~rldataflow.ops.dataset.WriteToDataset` on its shard, in its own process), also in
    ``raw`` mode. Example::

        rollouts = ParallelRollouts(workers, mode="bulk_sync")
        batch = next(rollouts)      # num_workers * num_envs * fragment rows
    """
    if mode not in ROLLOUT_MODES:
        raise ValueError(f"ParallelRollouts mode must be one of {ROLLOUT_MODES}, got {mode!r}")
    if not workers.remote_workers():
        if mode == "raw":
            raise ValueError("ParallelRollouts(mode='raw') needs remote workers")
        local = workers.local_worker()
        source = from_local_iterable(lambda: (local.sample() for _ in itertools.count()),
                                     name="ParallelRollouts(local worker)")
        if workers.output is not None:
            source = source.for_each(WriteToDataset(workers.output))
        return source.for_each(RecordSampled())
    par = from_actors(workers.remote_workers(), "sample", runtime=workers.runtime,
                      name=f"ParallelRollouts({workers.num_remote_workers} workers)")
    if workers.output is not None:
        par = par.for_each(WriteToDataset(workers.output))
    if mode == "raw":
        return par
    if mode == "bulk_sync":
        rounds = par.batch_across_shards(on_failure=workers.replace_dead_worker)
        return rounds.for_each(SampleBatch.concat_samples).for_each(RecordSampled())
    return par.gather_async(num_async=num_async,
                            on_failure=workers.replace_dead_worker).for_each(RecordSampled())


class _RecordGradients(Operator):
    op_name = "RecordGradients"

    def __call__(self, item: Any) -> Any:
        if isinstance(item[0], ActorHandle):  # (worker, (grads, info)) from the gather
            source, (grads, info) = item
            info = {**info, "source": source}
        else:
            grads, info = item
        record_sampled(self.metrics, info["count"], info.get("stats", {}))
        return grads, info


def _gradients_stream(worker: Any, output: Any) -> Iterator[Any]:
    """On a worker: ``sample_and_compute_gradients(output)`` forever."""
    while True:
        yield worker.sample_and_compute_gradients(output)


def AsyncGradients(workers: WorkerSet, num_async: int = 1) -> LocalIterator[Any]:
    """``(grads, info)`` computed by each worker on its own fresh batch, as they are ready.

    Pair with ``ApplyGradients(workers, update_all=False)`` for A3C: the weights go back only
    to the worker whose gradients were applied. Example::

        train_op = AsyncGradients(workers).for_each(ApplyGradients(workers, update_all=False))
    """
    output = workers.output  # the batches stay on the workers, which write them there
    if not workers.remote_workers():
        local = workers.local_worker()
        source = from_local_iterable(
            lambda: (local.sample_and_compute_gradients(output) for _ in itertools.count()),
            name="AsyncGradients(local worker)")
        return source.for_each(_RecordGradients())
    method = ("sample_and_compute_gradients" if output is None
              else functools.partial(_gradients_stream, output=output))
    par = from_actors(workers.remote_workers(), method, runtime=workers.runtime,
                      name=f"AsyncGradients({workers.num_remote_workers} workers)")
    return par.gather_async(num_async=num_async, on_failure=workers.replace_dead_worker,
                            with_source=True).for_each(_RecordGradients())


def ScatterToWorkers(inputs: LocalIterator[list[Any]], workers: WorkerSet,
                     fn: Any) -> LocalIterator[list[Any]]:
    """``[fn(worker, x) for x in xs]`` for each list ``xs`` of ``inputs``, run on the workers.

    The items of a list are spread over the remote workers (item ``j`` to worker
    ``j % num_workers``, all in flight at once) by :class:`~rldataflow.flow.ScatterCalls`; a
    dead worker is replaced by the WorkerSet (current weights) and its calls reissued. With no
    remote workers the local worker runs them in turn. ``fn`` must be importable (a module-level
    function) to reach worker processes. Example (MAML: one task per worker)::

        results = ScatterToWorkers(task_batches, workers, adapt_to_task)  # [result per task]
    """
    name = getattr(fn, "__name__", repr(fn))
    if not workers.remote_workers():
        local = workers.local_worker()

        def run_locally(xs: list[Any]) -> list[Any]:
            return [fn(local, x) for x in xs]

        run_locally.__name__ = run_locally.__qualname__ = f"ScatterToWorkers({name}, local worker)"
        return inputs.for_each(run_locally)
    return inputs.for_each(ScatterCalls(
        workers.remote_workers, fn, runtime=workers.runtime,
        on_failure=workers.replace_dead_worker,
        name=f"ScatterToWorkers({name}, {workers.num_remote_workers} workers)"))
