"""Replay: store experience in buffers (local or sharded across actors), replay it, and send the
learner's TD errors back as priorities to the rows (and the shard) they came from.

A replay buffer is either a local :class:`~rldataflow.data.ReplayBuffer` /
:class:`~rldataflow.data.PrioritizedReplayBuffer` in the driver, or a set of
:class:`ReplayActor` shards (Horgan et al. 2018, "Distributed Prioritized Experience Replay",
arXiv:1803.00933: a replay memory sharded across actors, inserts spread over the shards, each
learner batch drawn from one shard and its priorities written back to that shard).

Example (DQN's two flows)::

    buffer = PrioritizedReplayBuffer(50_000, alpha=0.6, seed=0)
    store_op = rollouts.for_each(StoreToReplayBuffer(local_buffer=buffer))
    replay_op = (Replay(local_buffer=buffer, batch_size=64, learning_starts=1000)
                 .for_each(TrainOneStep(workers))
                 .for_each(UpdatePriorities(local_buffer=buffer)))
    train_op = Concurrently([store_op, replay_op], mode="round_robin", output_indexes=[1])

Example (Ape-X's, with shards as actors)::

    shards = [rt.create_actor(ReplayActor, 50_000, batch_size=512) for _ in range(4)]
    store_op = rollouts.for_each(StoreToReplayBuffer(actors=shards))
    replay_op = Replay(actors=shards, num_async=4, learning_starts=50_000).zip_with_source_actor()
    # ... a learner returns (shard, (batch_with_td_error, stats)) -> UpdatePriorities()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from rldataflow.data import LinearSchedule, PrioritizedReplayBuffer, ReplayBuffer, SampleBatch
from rldataflow.data.frame_stack_buffer import (
    FrameStackReplayBuffer,
    PrioritizedFrameStackReplayBuffer,
)
from rldataflow.flow import NOT_READY, LocalIterator, Metrics, Operator, StreamOperator, from_actors
from rldataflow.flow.errors import creation_site
from rldataflow.flow.local_iterator import from_local_iterable
from rldataflow.flow.provenance import source_actor
from rldataflow.flow.signals import waiting_on_plan
from rldataflow.runtime.actor_pool import ActorPool
from rldataflow.runtime.base import ActorDiedError, ActorHandle, Future

__all__ = ["TD_ERROR", "Replay", "ReplayActor", "StoreToReplayBuffer", "ThrottleSampling",
           "UpdatePriorities"]

#: Column a learner writes into each replayed batch: the per-row TD error (float32), from which
#: :class:`UpdatePriorities` computes the new priorities ``|td_error|``.
TD_ERROR = "td_error"
#: Counter of rows handed to replay buffers by StoreToReplayBuffer (in this plan's Metrics).
ROWS_ADDED = "replay_rows_added"
#: Rows that were on their way to, or held by, a replay shard that died (lost with it).
ROWS_LOST = "replay_rows_lost"

#: Fire-and-forget calls to one shard kept unanswered at most; beyond that the oldest is awaited
#: (back-pressure on a shard that falls behind, and its errors surface instead of vanishing).
MAX_PENDING_CALLS = 8

BetaSpec = float | LinearSchedule | Callable[[float], float]


def make_replay_buffer(capacity: int, prioritized: bool, alpha: float = 0.6,
                       seed: int | None = None, frame_dedup: str = "auto") -> ReplayBuffer:
    """The replay buffer for these settings; with ``frame_dedup`` other than ``"off"`` it
    stores uint8 frame stacks frame by frame (and anything else plainly, under ``"auto"``)."""
    if frame_dedup == "off":
        return (PrioritizedReplayBuffer(capacity, alpha=alpha, seed=seed) if prioritized
                else ReplayBuffer(capacity, seed=seed))
    if prioritized:
        return PrioritizedFrameStackReplayBuffer(capacity, alpha=alpha, seed=seed,
                                                 dedup=frame_dedup)
    return FrameStackReplayBuffer(capacity, seed=seed, dedup=frame_dedup)


class ReplayActor:
    """One replay shard: a (prioritized) replay buffer living in an actor.

    Args:
        capacity: rows kept by this shard (the oldest are overwritten).
        batch_size: rows per :meth:`replay` call.
        prioritized: proportional prioritized replay (Schaul et al. 2016) or uniform.
        alpha: priority exponent (0.6 in Schaul et al. and Horgan et al.).
        beta: importance-weight exponent; a float (Ape-X keeps 0.4) or a
            :class:`LinearSchedule` over the rows this shard has received.
        learning_starts: :meth:`replay` returns None until the shard holds this many rows.
        seed: the buffer's random generator.
        frame_dedup: store each frame of uint8 frame-stacked obs once (``"auto"``, ``"on"``,
            ``"off"``; see :mod:`rldataflow.data.frame_stack_buffer`).

    The driver reads it as a stream with ``from_actors(shards, "replay")`` (what
    :func:`Replay` does). Example::

        shard = rt.create_actor(ReplayActor, 10_000, batch_size=64, seed=0)
        shard.call("add", batch)
        replayed = shard.call("replay").result()     # SampleBatch with batch_indexes, weights
        shard.call("update_priorities", replayed["batch_indexes"], td_errors)
    """

    def __init__(self, capacity: int, batch_size: int = 32, prioritized: bool = True,
                 alpha: float = 0.6, beta: float | LinearSchedule = 0.4,
                 learning_starts: int = 0, seed: int | None = None,
                 frame_dedup: str = "auto") -> None:
        self.buffer = make_replay_buffer(capacity, prioritized, alpha, seed, frame_dedup)
        self.batch_size = int(batch_size)
        self.beta = beta
        self.learning_starts = max(int(learning_starts), 1)
        self.num_replayed = 0
        self.num_priority_updates = 0

    def add(self, batch: SampleBatch) -> int:
        """Append a batch's rows; returns the shard's size."""
        self.buffer.add(batch)
        return len(self.buffer)

    def replay(self) -> SampleBatch | None:
        """A batch of ``batch_size`` rows (with ``batch_indexes``, and ``weights`` if
        prioritized), or None while the shard holds fewer than ``learning_starts`` rows."""
        if len(self.buffer) < self.learning_starts:
            return None
        self.num_replayed += self.batch_size
        return _sample(self.buffer, self.batch_size, _beta_at(self.beta, self.buffer.num_added))

    def update_priorities(self, batch_indexes: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of replayed rows to ``|td_errors|`` (no-op when uniform)."""
        _update(self.buffer, batch_indexes, td_errors)
        self.num_priority_updates += 1

    def size(self) -> int:
        return len(self.buffer)

    def priorities(self) -> np.ndarray | None:
        """The stored priorities (``p_i ** alpha``) of the filled rows; None when uniform."""
        if isinstance(self.buffer, PrioritizedReplayBuffer):
            return self.buffer.priorities()
        return None

    def stats(self) -> dict[str, float]:
        """Size, capacity and counters of the shard."""
        return {"size": len(self.buffer), "capacity": self.buffer.capacity,
                "num_added": self.buffer.num_added, "num_replayed": self.num_replayed,
                "num_priority_updates": self.num_priority_updates}

    def ping(self) -> str:
        return "ok"


def _beta_at(beta: BetaSpec, t: float) -> float:
    return float(beta(t)) if callable(beta) else float(beta)


def _sample(buffer: ReplayBuffer, batch_size: int, beta: float) -> SampleBatch:
    if isinstance(buffer, PrioritizedReplayBuffer):
        return buffer.sample(batch_size, beta=beta)
    return buffer.sample(batch_size)


#: Added to ``|td_error|``: the buffers want priorities > 0 and a TD error can be exactly 0.
PRIORITY_EPS = 1e-6


def _update(buffer: ReplayBuffer, batch_indexes: Any, td_errors: Any) -> None:
    if isinstance(buffer, PrioritizedReplayBuffer):
        buffer.update_priorities(batch_indexes,
                                 np.abs(np.asarray(td_errors, np.float64)) + PRIORITY_EPS)


class _PendingCalls:
    """Fire-and-forget calls per actor, bounded: the oldest is awaited past ``limit``.

    ``on_death(actor, error)`` (if given) is told when an awaited call finds its actor dead;
    the actor's other pending calls are dropped with it (it cannot answer them)."""

    def __init__(self, limit: int = MAX_PENDING_CALLS,
                 on_death: Callable[[ActorHandle, ActorDiedError], None] | None = None) -> None:
        self.limit = limit
        self.on_death = on_death
        self.calls: dict[int, deque[Future]] = {}

    def add(self, actor: ActorHandle, fut: Future) -> None:
        pending = self.calls.setdefault(actor.actor_id, deque())
        pending.append(fut)
        try:
            while len(pending) > self.limit:
                pending.popleft().result()  # raises the actor's error, if any
            while pending and not actor.runtime.completes_on_demand and pending[0].done():
                pending.popleft().result()
        except ActorDiedError as error:
            if self.on_death is None:
                raise
            self.calls.pop(actor.actor_id, None)
            self.on_death(actor, error)


class StoreToReplayBuffer(Operator):
    """Add each batch to a local buffer, or to replay shards (round-robin over ``actors``).

    Passes the batch on. Adds to shards are asynchronous (at most ``MAX_PENDING_CALLS``
    unanswered per shard; calls on an actor run in order, so a later ``replay`` on that shard
    sees the rows). Counts ``replay_rows_added``. Given an :class:`ActorPool` of shards, a
    dead shard is handed to the pool's failure policy (replaced, empty, or the run fails
    naming it); the rows it held or was sent are counted in ``replay_rows_lost``. Example::

        store_op = rollouts.for_each(StoreToReplayBuffer(local_buffer=buffer))
        store_op = rollouts.for_each(StoreToReplayBuffer(actors=replay_shard_pool))
    """

    def __init__(self, local_buffer: ReplayBuffer | None = None,
                 actors: Sequence[ActorHandle] | ActorPool | None = None) -> None:
        if (local_buffer is None) == (not actors):
            raise ValueError("StoreToReplayBuffer needs exactly one of local_buffer= or actors=")
        self.local_buffer = local_buffer
        self.pool = actors if isinstance(actors, ActorPool) else None
        # a pool replaces dead actors in place in its own list: keep that list, not a copy
        self.actors = self.pool.actors if self.pool is not None else list(actors or [])
        self._next = 0
        self._rows_sent: dict[Any, int] = {}
        self._slot_actor: dict[int, Any] = {}
        self._pending = _PendingCalls(on_death=self._shard_died if self.pool else None)

    @property
    def op_name(self) -> str:
        if self.local_buffer is not None:
            return "StoreToReplayBuffer(local)"
        return f"StoreToReplayBuffer({len(self.actors)} shards)"

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        if self.local_buffer is not None:
            with self.metrics.timers["replay_add"]:
                self.local_buffer.add(batch)
        else:
            slot = self._next % len(self.actors)
            actor = self.actors[slot]
            self._next += 1
            previous = self._slot_actor.get(slot)
            if previous is not None and previous != actor.actor_id:
                # the pool replaced this slot's shard (another stream saw it die first)
                self._forget(previous)
            self._slot_actor[slot] = actor.actor_id
            self._rows_sent[actor.actor_id] = self._rows_sent.get(actor.actor_id, 0) + batch.count
            try:
                call = actor.call("add", batch)
            except ActorDiedError as error:
                if self.pool is None:
                    raise
                self._shard_died(actor, error)
            else:
                self._pending.add(actor, call)
        self.metrics.counters[ROWS_ADDED] += batch.count
        return batch

    def _shard_died(self, actor: ActorHandle, error: ActorDiedError) -> None:
        assert self.pool is not None
        self.pool.replace_dead(-1, actor, error)  # (a pool finds the slot itself)
        self._forget(actor.actor_id)

    def _forget(self, actor_id: Any) -> None:
        # A shard's rows die with it (those sent to it, at most its capacity, are gone).
        self.metrics.counters[ROWS_LOST] += self._rows_sent.pop(actor_id, 0)
        self._pending.calls.pop(actor_id, None)


def Replay(*, local_buffer: ReplayBuffer | None = None,
           actors: Sequence[ActorHandle] | ActorPool | None = None, batch_size: int = 32,
           beta: BetaSpec = 0.4, learning_starts: int = 0,
           num_async: int = 4,
           training_intensity: float | None = None) -> LocalIterator[SampleBatch]:
    """A stream of replayed batches, from a local buffer or from replay shards.

    Local buffer: ``batch_size`` rows per item (plus ``batch_indexes``, and ``weights`` when
    prioritized, ``beta`` evaluated at the plan's ``env_steps_sampled`` if it is a schedule).
    While the buffer holds fewer than ``learning_starts`` rows the stream waits on the plan and
    passes its turn, so in a round-robin ``Concurrently`` the store flow runs meanwhile.
    ``training_intensity`` caps the replayed rows at that many per row the buffer has received
    (``buffer.num_added``, this buffer's own count): past it the stream passes its turn the
    same way until more rows are stored. Round-robin weights alone set replayed rows per
    *stored item*; where the rows per item vary (one policy's share of a multi-agent batch),
    the cap keeps the ratio per row.

    Actors (:class:`ReplayActor` shards, whose own ``batch_size``/``beta`` apply): batches as
    they are ready, ``num_async`` requests in flight per shard. Nothing is requested before
    StoreToReplayBuffer in the same plan has stored ``learning_starts`` rows (the plan's
    ``replay_rows_added`` counter), so an empty shard is not polled. Pair with
    ``.zip_with_source_actor()`` to know which shard each batch came from. Given an
    :class:`ActorPool`, a dead shard goes to the pool's failure policy; a replacement starts
    empty and answers "not yet" (skipped) until it holds its own ``learning_starts`` rows.

    Example: ``Replay(local_buffer=buffer, batch_size=64, learning_starts=1000)``
    """
    if (local_buffer is None) == (not actors):
        raise ValueError("Replay needs exactly one of local_buffer= or actors=")
    site = creation_site()
    if training_intensity is not None and training_intensity <= 0:
        raise ValueError(f"training_intensity must be > 0, got {training_intensity}")
    if local_buffer is not None:
        return _local_replay(local_buffer, batch_size, beta, learning_starts, site,
                             training_intensity)
    if training_intensity is not None:
        raise ValueError("Replay(training_intensity=) needs local_buffer= (throttle shards with "
                         "ThrottleSampling)")
    return _actor_replay(actors or [], num_async, learning_starts, site)


def _local_replay(buffer: ReplayBuffer, batch_size: int, beta: BetaSpec,
                  learning_starts: int, site: str,
                  training_intensity: float | None = None) -> LocalIterator[SampleBatch]:
    node: LocalIterator[SampleBatch]
    threshold = max(int(learning_starts), 1)

    def items() -> Iterator[Any]:
        replayed = 0  # rows this stream has replayed from ``buffer``
        while True:
            if len(buffer) < threshold:
                waiting_on_plan(f"replay buffer has {len(buffer)} < learning_starts="
                                f"{threshold} rows", pass_turn=True)
                yield NOT_READY
                continue
            if (training_intensity is not None
                    and replayed + batch_size > training_intensity * buffer.num_added):
                waiting_on_plan(f"replayed {replayed} rows of {buffer.num_added} stored: "
                                f"training_intensity={training_intensity:g} reached",
                                pass_turn=True)
                yield NOT_READY
                continue
            metrics = node.metrics
            b = _beta_at(beta, metrics.counters["env_steps_sampled"])
            with metrics.timers["replay_sample"]:
                batch = _sample(buffer, batch_size, b)
            metrics.counters["replay_rows_sampled"] += batch.count
            replayed += batch.count
            yield batch

    node = from_local_iterable(items, name=f"Replay(local, batch_size={batch_size})", site=site)
    return node


def _actor_replay(actors: Sequence[ActorHandle] | ActorPool, num_async: int,
                  learning_starts: int, site: str) -> LocalIterator[SampleBatch]:
    on_failure = actors.replace_dead if isinstance(actors, ActorPool) else None
    shards = list(actors)
    gathered = (from_actors(shards, "replay", name=f"Replay({len(shards)} shards)")
                .gather_async(num_async=num_async, on_failure=on_failure))
    node = gathered.for_each(_ShardReplayGate(learning_starts))
    node.site = site
    return node


class _ShardReplayGate(StreamOperator):
    """Pulls nothing from the shards (so sends them no request) until ``learning_starts`` rows
    were stored; then passes replayed batches on, dropping a shard's "not yet" (None)."""

    def __init__(self, learning_starts: int) -> None:
        self.learning_starts = learning_starts

    @property
    def op_name(self) -> str:
        return f"ReplayGate(learning_starts={self.learning_starts})"

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        while metrics.counters[ROWS_ADDED] < self.learning_starts:
            waiting_on_plan(f"replay shards hold {int(metrics.counters[ROWS_ADDED])} < "
                            f"learning_starts={self.learning_starts} rows", pass_turn=True)
            yield NOT_READY
        for batch in upstream:
            if batch is None:
                continue  # a shard still below its own learning_starts
            if batch is not NOT_READY:
                metrics.counters["replay_rows_sampled"] += batch.count
            yield batch


def _unpack(item: Any) -> tuple[ActorHandle | None, SampleBatch]:
    actor = None
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], ActorHandle):
        actor, item = item
    if isinstance(item, tuple):
        item = item[0]
    if not isinstance(item, SampleBatch):
        raise TypeError("UpdatePriorities takes a SampleBatch, (batch, stats) or "
                        f"(actor, batch or (batch, stats)); got {type(item).__name__}")
    return actor, item


class UpdatePriorities(Operator):
    """Write ``|td_error|`` of each learned batch back as the priorities of its rows.

    The item is what a train step emits: a batch with ``batch_indexes`` and ``td_error``
    columns, or ``(batch, stats)``; for shards, ``(shard, ...)`` as made by
    ``zip_with_source_actor()`` (else the shard the batch records as its source,
    ``source_actor(batch)``). Shard updates are asynchronous. Passes the item on. Example::

        replay_op.for_each(TrainOneStep(workers)).for_each(UpdatePriorities(local_buffer=buf))
    """

    def __init__(self, local_buffer: ReplayBuffer | None = None) -> None:
        self.local_buffer = local_buffer
        # A shard that died took its rows along: their priorities have nowhere to go. (Its
        # death is the store and replay streams' to handle, by the pool's failure policy.)
        self._pending = _PendingCalls(on_death=lambda actor, error: self._dropped())

    def _dropped(self) -> None:
        self.metrics.counters["priority_updates_dropped"] += 1

    @property
    def op_name(self) -> str:
        return "UpdatePriorities(local)" if self.local_buffer is not None else \
            "UpdatePriorities(source shard)"

    def __call__(self, item: Any) -> Any:
        actor, batch = _unpack(item)
        if TD_ERROR not in batch:
            raise KeyError(f"the learned batch has no {TD_ERROR!r} column; the policy's "
                           "learn_on_batch must write it")
        indexes, td = batch["batch_indexes"], batch[TD_ERROR]
        if self.local_buffer is not None and actor is None:
            _update(self.local_buffer, indexes, td)
        else:
            actor = actor or source_actor(batch)
            if actor is None:
                raise ValueError("UpdatePriorities without a local buffer needs the source shard "
                                 "of each batch (use zip_with_source_actor())")
            try:
                self._pending.add(actor, actor.call("update_priorities", indexes, td))
            except ActorDiedError:
                self._dropped()
                return item
        self.metrics.counters["num_priority_updates"] += 1
        return item


class ThrottleSampling(StreamOperator):
    """Hold the sample stream back while learning lags behind it.

    Place it right after the rollouts: the next batch is pulled only while
    ``env_steps_trained >= training_intensity * (env_steps_sampled - regranted -
    warmup_steps)``, counting the plan's counters from where this stream started;
    ``regranted`` gives each death of a replay shard (``replay_rows_lost`` grows) its lost rows
    again, at most ``warmup_steps`` of them, to refill its empty replacement. Replayed rows
    per sampled row then stay near ``training_intensity`` whatever the relative speed of
    actors and learner. Meanwhile it waits on the plan (the learner flow of an async
    ``Concurrently`` moves); the workers finish the requests already in flight and idle.
    Example::

        rollouts = ParallelRollouts(workers, mode="async").for_each(ThrottleSampling(4, 5000))
    """

    def __init__(self, training_intensity: float, warmup_steps: int = 0) -> None:
        if training_intensity <= 0:
            raise ValueError(f"training_intensity must be > 0, got {training_intensity}")
        self.training_intensity = float(training_intensity)
        self.warmup_steps = int(warmup_steps)

    @property
    def op_name(self) -> str:
        return f"ThrottleSampling(training_intensity={self.training_intensity:g})"

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        # Counted from where this stream starts (a restored run's counters do not start at 0,
        # but its replay buffers do).
        start = metrics.counters
        sampled0, trained0 = start["env_steps_sampled"], start["env_steps_trained"]
        lost_seen, regranted = start[ROWS_LOST], 0
        while True:
            counters = metrics.counters
            trained = counters["env_steps_trained"] - trained0
            # A replay shard that died was replaced empty and must refill before it serves:
            # its lost rows (at most warmup_steps per death, the warm-up again) do not count as
            # sampled. Else a plan whose shards all restarted deadlocks: the learner waits for
            # rows, sampling waits for the learner.
            if counters[ROWS_LOST] > lost_seen:
                delta = counters[ROWS_LOST] - lost_seen
                regranted += min(delta, self.warmup_steps) if self.warmup_steps else delta
                lost_seen = counters[ROWS_LOST]
            sampled = counters["env_steps_sampled"] - sampled0 - regranted
            if sampled > trained / self.training_intensity + self.warmup_steps:
                waiting_on_plan(f"sampling waits for training ({int(counters['env_steps_trained'])}"
                                f" rows trained, {int(counters['env_steps_sampled'])} sampled)",
                                pass_turn=True)
                yield NOT_READY
                continue
            try:
                item = next(upstream)
            except StopIteration:
                return
            yield item
