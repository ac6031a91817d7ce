"""Getting a learner's weights to the actors that sample with them: one mechanism, four policies.

Every plan ends a training step by sending weights somewhere. What differs is *to whom* and
*how often*, so :class:`SyncWeights` takes those as parameters:

* ``to="all"``: every remote worker (PPO, DQN, A2C after each step);
* ``to="source"``: only the actors the item came from (A3C's gradients, a batch's workers);
* ``every_steps=N``: a source actor gets weights once it has sampled ``N`` steps since its last
  ones (Ape-X's periodic parameter fetch);
* ``snapshot=fn``: the weights are ``fn() -> (weights, version)``, a snapshot a learner thread
  published, and an actor gets a version only once (IMPALA: the driver never reads weights
  while the learner changes them).

Without a snapshot the weights are the local worker's, sent by :meth:`WorkerSet.sync_weights`
(serialized once for all targets). The source of an item is read from the item
(:mod:`rldataflow.flow.provenance`): a batch's ``sources``, an ``(actor, item)`` envelope, or
``info["source"]`` of a ``(grads, info)`` pair.

Example::

    train_op.for_each(SyncWeights(workers))                               # all workers
    rollouts.for_each(StoreToReplayBuffer(actors=shards))
            .for_each(SyncWeights(workers, to="source", every_steps=400))  # Ape-X
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal

from rldataflow.flow import Metrics, Operator
from rldataflow.flow.provenance import source_actors
from rldataflow.runtime import ActorHandle, Runtime
from rldataflow.workers import WorkerSet

Snapshot = Callable[[], tuple[Any, int]]

#: bounded memory of what each actor was sent: forget replaced actors now and then
_MAX_TRACKED = 4096


def item_sources(item: Any) -> tuple[ActorHandle, ...]:
    """The actors an item came from, wherever it carries them (see the module docstring)."""
    sources = source_actors(item)
    if sources:
        return sources
    if isinstance(item, tuple) and len(item) == 2:
        head, tail = item
        if isinstance(head, ActorHandle):
            return (head,)
        if isinstance(tail, dict) and isinstance(tail.get("source"), ActorHandle):
            return (tail["source"],)
        return source_actors(head)
    return ()


class SyncWeights(Operator):
    """Send weights to workers after each item (see the module docstring); passes items on.

    ``workers`` gives the targets (``to="all"``) and, without ``snapshot``, the weights (its
    local worker's); with ``snapshot`` a ``runtime`` may replace ``workers`` (an aggregator
    pushing to its own group). Counts sends under ``counters[counter]`` (one per send of the
    local weights, one per actor for snapshots) and times them under ``timers[timer]`` (None:
    neither). Example::

        SyncWeights(workers, to="source", every_steps=400)
    """

    def __init__(self, workers: WorkerSet | None = None, *,
                 to: Literal["all", "source"] = "all", every_steps: int | None = None,
                 snapshot: Snapshot | None = None, runtime: Runtime | None = None,
                 counter: str | None = "num_weight_syncs", timer: str | None = "sync_weights",
                 name: str | None = None) -> None:
        if to not in ("all", "source"):
            raise ValueError(f"SyncWeights(to=...) must be 'all' or 'source', got {to!r}")
        if workers is None and (snapshot is None or runtime is None or to == "all"):
            raise ValueError("SyncWeights without workers needs to='source', a snapshot and "
                             "a runtime")
        if every_steps is not None and (to != "source" or every_steps < 1):
            raise ValueError("SyncWeights(every_steps=N) needs to='source' and N >= 1")
        self.workers = workers
        self.to = to
        self.every_steps = every_steps
        self.snapshot = snapshot
        self.runtime = runtime if runtime is not None else workers.runtime  # type: ignore
        self.counter = counter
        self.timer = timer
        self._name = name
        self.steps_since: defaultdict[int, int] = defaultdict(int)
        self.sent_version: dict[int, int] = {}
        self.initial_version = snapshot()[1] if snapshot is not None else -1

    @property
    def op_name(self) -> str:
        if self._name:
            return self._name
        parts = [self.to]
        if self.every_steps is not None:
            parts.append(f"every {self.every_steps} steps")
        if self.snapshot is not None:
            parts.append("snapshots")
        return f"SyncWeights({', '.join(parts)})"

    # -- choosing targets ------------------------------------------------------------------------
    def targets(self, item: Any) -> list[ActorHandle]:
        if self.to == "all":
            return list(self.workers.remote_workers())  # type: ignore[union-attr]
        actors = [a for a in item_sources(item) if a.runtime is self.runtime]
        if self.every_steps is None:
            return actors
        due = []
        steps = getattr(item, "count", 0)
        for actor in actors:
            self.steps_since[actor.actor_id] += steps
            if self.steps_since[actor.actor_id] >= self.every_steps:
                self.steps_since[actor.actor_id] = 0
                due.append(actor)
        return due

    # -- sending ---------------------------------------------------------------------------------
    def send(self, targets: Sequence[ActorHandle]) -> int:
        """Send the weights to ``targets``; returns how many actors got them."""
        if not targets:
            return 0
        if self.snapshot is None:
            self.workers.sync_weights(targets)  # type: ignore[union-attr]
            return len(targets)
        weights, version = self.snapshot()
        fresh = [a for a in targets
                 if self.sent_version.get(a.actor_id, self.initial_version) < version]
        if not fresh:
            return 0
        self.runtime.call_many(fresh, "set_weights", weights, version)
        if len(self.sent_version) > _MAX_TRACKED:
            self.sent_version.clear()
        for actor in fresh:
            self.sent_version[actor.actor_id] = version
        return len(fresh)

    def __call__(self, item: Any) -> Any:
        return self.sync(item, self.metrics)

    def sync(self, item: Any, metrics: Metrics) -> Any:
        """What a call does, counting into ``metrics`` (for operators that embed this one)."""
        targets = self.targets(item)
        if targets:
            if self.timer is None:
                sent = self.send(targets)
            else:
                with metrics.timers[self.timer]:
                    sent = self.send(targets)
            if sent and self.counter is not None:
                metrics.counters[self.counter] += 1 if self.snapshot is None else sent
        return item


def BroadcastWeights(workers: WorkerSet, to_source_only: bool = False) -> SyncWeights:
    """Send the local policy's weights to all remote workers (or, with ``to_source_only``, to
    the workers the item came from). Passes items through. Example::

        train_op.for_each(BroadcastWeights(workers))
    """
    to: Literal["all", "source"] = "source" if to_source_only else "all"
    return SyncWeights(workers, to=to, counter=None, timer=None,
                       name="BroadcastWeights(source)" if to_source_only
                       else "BroadcastWeights(all)")
