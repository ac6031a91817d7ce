"""Tree aggregation: aggregator actors that each own a group of rollout workers and hand the
driver whole train batches (the IMPALA paper's tier between many actors and one learner).

Without it, every sample batch of every worker crosses into the driver, which unpickles and
concatenates them while its learner thread trains: with many workers the driver becomes the
bottleneck. With ``num_aggregators`` aggregators, each one gathers asynchronously from its own
workers, pushes the newest weights to each worker as its batch arrives, concatenates the batches
to ``min_batch_size`` rows and answers the driver's ``next_batch()`` with one train batch::

    driver:      from_actors(aggregators, "next_batch").gather_async() -> ... -> learner
    aggregator:  from_actors(its workers, "sample").gather_async(num_async)
                   -> PushWeights -> ConcatBatches(min_batch_size)

Each aggregator starts its workers on a runtime of its own kind inside its process: on the
``process`` runtime its workers are child processes of the aggregator (data flows worker ->
aggregator -> driver, never through the driver twice); on ``ray`` they are Ray actors of the same
cluster, placed by Ray; on ``inline`` everything stays in the driver (for debugging).
A dead worker is replaced by its aggregator (next seed in line, the aggregator's newest
weights); a dead aggregator is replaced by the driver, with a fresh group of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from rldataflow.data import SampleBatch
from rldataflow.data.dataset import DatasetOutput
from rldataflow.flow import LocalIterator, from_actors
from rldataflow.ops.batching import ConcatBatches
from rldataflow.ops.dataset import WriteToDataset
from rldataflow.ops.rollouts import RecordSampled
from rldataflow.ops.weights import SyncWeights
from rldataflow.runtime import ActorDiedError, ActorHandle, Runtime
from rldataflow.runtime.actor_pool import ActorPool
from rldataflow.workers.worker_set import RESTART_SEED_STRIDE

logger = logging.getLogger(__name__)

WeightsFn = Callable[[], tuple[Any, int]]


def split_worker_indexes(num_workers: int, num_groups: int) -> list[list[int]]:
    """Worker indexes ``1..num_workers`` in ``num_groups`` contiguous, near-equal groups.

    Example: ``split_worker_indexes(5, 2) == [[1, 2, 3], [4, 5]]``
    """
    if num_groups < 1 or num_groups > num_workers:
        raise ValueError(f"need 1 <= num_groups <= num_workers, got {num_groups} groups for "
                         f"{num_workers} workers")
    bounds = [num_workers * g // num_groups for g in range(num_groups + 1)]
    return [list(range(bounds[g] + 1, bounds[g + 1] + 1)) for g in range(num_groups)]


def worker_pool(runtime: Runtime, worker_cls: type, worker_kwargs: dict[str, Any],
                worker_indexes: Sequence[int], restart_failed: bool = True,
                on_restart: Callable[[int, ActorHandle], Any] | None = None) -> ActorPool:
    """Rollout workers with the given global indexes (no local worker), as an ActorPool: a
    replacement gets its index's next seed in line, like a WorkerSet's."""
    indexes = list(worker_indexes)

    def make(slot: int, restarts: int) -> ActorHandle:
        kwargs = dict(worker_kwargs)
        kwargs["seed"] = int(kwargs.get("seed", 0)) + restarts * RESTART_SEED_STRIDE
        index = indexes[slot]
        return runtime.create_actor(worker_cls, **kwargs, worker_index=index,
                                    name=f"{worker_cls.__name__}-{index}")

    return ActorPool(runtime, len(indexes), make, on_restart=on_restart,
                     restart_failed=restart_failed, kind="rollout worker")


class AggregationWorker:
    """The aggregator actor: owns a pool of rollout workers (:func:`worker_pool`) and serves
    whole train batches.

    Args:
        runtime_name: kind of runtime to start the workers on (``"process"``, ``"ray"``,
            ``"inline"``), created inside this actor.
        runtime_options: options of that runtime.
        worker_cls / worker_kwargs: how to build each rollout worker.
        worker_indexes: the global indexes of this group's workers (they decide the seeds).
        num_async: sample requests in flight per worker.
        min_batch_size: rows per batch returned by :meth:`next_batch`.
    """

    def __init__(self, runtime_name: str, runtime_options: dict[str, Any], worker_cls: type,
                 worker_kwargs: dict[str, Any], worker_indexes: Sequence[int], num_async: int,
                 min_batch_size: int, restart_failed: bool = True,
                 output: DatasetOutput | None = None) -> None:
        from rldataflow.startup import make_runtime

        self.runtime = make_runtime(runtime_name, runtime_options)
        try:
            self.indexes = list(worker_indexes)
            self.group = worker_pool(self.runtime, worker_cls, worker_kwargs, self.indexes,
                                     restart_failed, on_restart=self._bring_up_to_date)
        except BaseException:
            self.runtime.shutdown()
            raise
        self.num_async = num_async
        self.min_batch_size = min_batch_size
        self.output = output
        self._weights: Any = None
        self._version = -1
        # after each batch, the worker it came from gets this aggregator's newest weights
        self._push = SyncWeights(to="source", snapshot=lambda: (self._weights, self._version),
                                 runtime=self.runtime, counter=None, timer=None,
                                 name="PushWeights(source)")
        self._sent = self._push.sent_version  # version each worker has (by actor id)
        self._stream: LocalIterator[SampleBatch] | None = None

    def _bring_up_to_date(self, slot: int, actor: ActorHandle) -> None:
        """A restarted worker gets this aggregator's newest weights before it samples."""
        if self._weights is not None:
            actor.call("set_weights", self._weights, self._version)
        self._sent[actor.actor_id] = self._version

    def next_batch(self) -> SampleBatch:
        """One batch of at least ``min_batch_size`` rows from this group's workers."""
        if self._stream is None:
            par = from_actors(self.group.actors, "sample", runtime=self.runtime,
                              name=f"workers {self.indexes}")
            if self.output is not None:  # written by each worker, in its own process
                par = par.for_each(WriteToDataset(self.output))
            self._stream = (par.gather_async(num_async=self.num_async,
                                             on_failure=self.group.replace_dead)
                            .for_each(self._push)
                            .for_each(ConcatBatches(self.min_batch_size)))
        batch = next(self._stream)
        batch.info["aggregator_worker_restarts"] = self.group.num_restarts
        return batch

    def set_weights(self, weights: Any, version: int, push_now: bool = False) -> None:
        """Keep the newest weights; each worker gets them after its next batch arrives (or at
        once with ``push_now``)."""
        if version <= self._version:
            return
        self._weights, self._version = weights, int(version)
        if push_now:
            futures = [self.runtime.call(a, "set_weights", weights, version)
                       for a in self.group.actors]
            for actor, fut in zip(self.group.actors, futures, strict=True):
                fut.result()
                self._sent[actor.actor_id] = self._version

    def worker_pids(self) -> list[int]:
        """Process ids of this group's workers (none on the inline runtime; for fault
        injection and tooling)."""
        pids = [self.runtime.pid(a) for a in self.group.actors]
        return [p for p in pids if p is not None]

    def ping(self) -> str:
        return "ok"

    def stop(self) -> None:
        self.group.stop()
        self.runtime.shutdown()


class AggregatorSet:
    """The driver's side of the aggregation tier: ``num_aggregators`` aggregator actors.

    Example::

        aggs = AggregatorSet(workers.runtime, 2, RolloutWorker, worker_kwargs, num_workers=8,
                             num_async=2, min_batch_size=512, weights_fn=learner_weights)
        batches = aggs.gather()            # train batches, as ready, counted as sampled
        ...
        aggs.stop()

    ``weights_fn() -> (weights, version)`` gives the weights a (re)started aggregator pushes to
    its workers at once, so no worker samples with its random initial weights.
    """

    def __init__(self, runtime: Runtime, num_aggregators: int, worker_cls: type,
                 worker_kwargs: dict[str, Any], num_workers: int, num_async: int,
                 min_batch_size: int, weights_fn: WeightsFn,
                 runtime_options: dict[str, Any] | None = None,
                 restart_failed: bool = True, output: DatasetOutput | None = None) -> None:
        self.runtime = runtime
        self.groups = split_worker_indexes(num_workers, num_aggregators)
        self.weights_fn = weights_fn
        self.restart_failed = restart_failed
        self._ctor = dict(runtime_name=runtime.name, runtime_options=dict(runtime_options or {}),
                          worker_cls=worker_cls, worker_kwargs=dict(worker_kwargs),
                          num_async=num_async, min_batch_size=min_batch_size,
                          restart_failed=restart_failed, output=output)
        self.pool = ActorPool(runtime, len(self.groups), self._create,
                              on_restart=self._send_weights, restart_failed=restart_failed,
                              ready_method=None, kind="aggregator")
        #: the aggregators, by group (the pool's list: replaced in place on restarts)
        self.actors: list[ActorHandle] = self.pool.actors
        try:
            weights, version = weights_fn()
            futures = [a.call("set_weights", weights, version, push_now=True)
                       for a in self.actors]
            for fut in futures:
                fut.result()
        except BaseException:
            self.stop()
            raise

    def _create(self, group: int, restarts: int) -> ActorHandle:
        return self.runtime.create_actor(AggregationWorker, worker_indexes=self.groups[group],
                                         name=f"AggregationWorker-{group}", **self._ctor)

    def _send_weights(self, group: int, actor: ActorHandle) -> None:
        """A restarted aggregator pushes the learner's weights to its workers at once."""
        weights, version = self.weights_fn()
        actor.call("set_weights", weights, version, push_now=True).result()

    @property
    def num_restarts(self) -> int:
        return self.pool.num_restarts

    def gather(self, num_async: int = 1) -> LocalIterator[SampleBatch]:
        """Train batches from the aggregators as they are ready (counted as sampled)."""
        par = from_actors(self.actors, "next_batch", runtime=self.runtime,
                          name=f"aggregators({len(self.actors)} x "
                               f"{'/'.join(str(len(g)) for g in self.groups)} workers)")
        return par.gather_async(num_async=num_async,
                                on_failure=self.replace_dead).for_each(RecordSampled())

    def replace_dead(self, shard_index: int, actor: ActorHandle,
                     error: ActorDiedError) -> ActorHandle:
        """Failure policy: start a new aggregator (and workers) for the dead one's group."""
        return self.pool.replace_dead(shard_index, actor, error)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the aggregators (each stops its workers); kill those that do not finish."""
        self.pool.stop(graceful_method="stop", timeout=timeout)

