"""``ActorPool``: actors made by one factory, kept at full strength by one failure policy.

Rollout and evaluation workers (:class:`~rldataflow.workers.WorkerSet`), an aggregator's
workers, the aggregators themselves and Ape-X's replay shards are all pools: a fixed number of
slots, each holding one actor. When a gather finds an actor dead it calls
:meth:`ActorPool.replace_dead` (the ``on_failure`` signature of ``gather_async`` /
``gather_sync``): the pool kills what is left of it, makes a new one for the same slot (the
factory learns how many times the slot has restarted, e.g. to move its seed), lets the owner
bring it up to date (``on_restart``: send the current weights), and the gather reissues the
lost requests to it. With restarts off, the death is raised as the one error naming the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from rldataflow.runtime.base import ALL_COMPLETED, ActorDiedError, ActorHandle, Runtime

__all__ = ["ActorFactory", "ActorPool"]

logger = logging.getLogger(__name__)

#: ``make(slot, restarts) -> actor``: the actor for a slot, ``restarts`` times restarted before
ActorFactory = Callable[[int, int], ActorHandle]


class ActorPool:
    """``size`` actors from ``make``, replaced in place when they die.

    Args:
        runtime: where the actors live.
        size: number of slots.
        make: ``make(slot, restarts) -> ActorHandle``.
        on_restart: ``on_restart(slot, actor)`` right after a replacement is made (e.g. send
            it the current weights); its errors propagate.
        restart_failed: replace dead actors (else :meth:`replace_dead` raises the death).
        ready_method: a method called on every new actor, so constructor errors surface at
            once naming the actor (None: do not wait).
        kind: what the actors are, for log lines ("rollout worker", "replay shard").

    Example::

        pool = ActorPool(runtime, 2, lambda slot, restarts: runtime.create_actor(
            ReplayActor, capacity=50_000, seed=slot + 1_000 * restarts))
        rows = from_actors(pool.actors, "sample").gather_async(on_failure=pool.replace_dead)
        ...
        pool.stop()
    """

    def __init__(self, runtime: Runtime, size: int, make: ActorFactory, *,
                 on_restart: Callable[[int, ActorHandle], Any] | None = None,
                 restart_failed: bool = True, ready_method: str | None = "ping",
                 kind: str = "actor") -> None:
        if size < 0:
            raise ValueError(f"ActorPool size must be >= 0, got {size}")
        self.runtime = runtime
        self.make = make
        self.on_restart = on_restart
        self.restart_failed = restart_failed
        self.ready_method = ready_method
        self.kind = kind
        self.num_restarts = 0
        self.restarts_of = [0] * size
        # actor_id of a replaced actor -> its slot: a second report of the same death (two
        # streams used that actor) gets the replacement, not a second restart
        self._replaced: dict[Any, int] = {}
        #: the live actors, by slot; replaced in place, so holders of this list see the new ones
        self.actors: list[ActorHandle] = []
        try:
            for slot in range(size):
                self.actors.append(make(slot, 0))
            self._wait_ready(self.actors)
        except BaseException:
            self.stop(graceful_method=None)
            raise

    def _wait_ready(self, actors: list[ActorHandle]) -> None:
        if self.ready_method is None or not actors:
            return
        futures = [a.call(self.ready_method) for a in actors]
        self.runtime.wait(futures, ALL_COMPLETED)
        for fut in futures:
            fut.result()  # a constructor error, raised naming the actor

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.actors)

    def __iter__(self) -> Iterator[ActorHandle]:
        return iter(list(self.actors))

    def __getitem__(self, slot: int) -> ActorHandle:
        return self.actors[slot]

    def slot_of(self, actor: ActorHandle) -> int:
        """The slot ``actor`` holds (KeyError if it is not, or no longer, in the pool)."""
        for i, a in enumerate(self.actors):
            if a is actor or a.actor_id == actor.actor_id:
                return i
        raise KeyError(f"{actor!r} is not in this pool of {self.kind}s")

    # -- the failure policy ----------------------------------------------------------------------
    def replace_dead(self, shard_index: int, actor: ActorHandle,
                     error: ActorDiedError) -> ActorHandle:
        """Replace the dead ``actor`` (the ``on_failure`` callback of gathers); returns the
        new actor. The same death reported again (by another stream that used the actor)
        returns the same replacement. Raises ``error`` when restarts are off or the actor was
        never in the pool."""
        if not self.restart_failed:
            raise error
        if actor.actor_id in self._replaced:
            return self.actors[self._replaced[actor.actor_id]]
        try:
            slot = self.slot_of(actor)
        except KeyError:
            raise error from None
        self._replaced[actor.actor_id] = slot
        self.restarts_of[slot] += 1
        self.num_restarts += 1
        logger.warning("%s; restarting the %s (restart #%d)", error, self.kind,
                       self.num_restarts)
        self.runtime.kill(actor)
        replacement = self.make(slot, self.restarts_of[slot])
        self.actors[slot] = replacement
        if self.on_restart is not None:
            self.on_restart(slot, replacement)
        return replacement

    def health_check(self, timeout: float = 10.0) -> list[int]:
        """Slots whose actor is dead or does not answer ``ready_method`` within ``timeout``."""
        method = self.ready_method or "ping"
        futures = [a.call(method) for a in self.actors]
        self.runtime.wait(futures, ALL_COMPLETED, timeout=timeout)
        bad = []
        for i, fut in enumerate(futures):
            try:
                if not fut.done():
                    bad.append(i)
                else:
                    fut.result()
            except Exception:
                bad.append(i)
        return bad

    def recreate_dead(self, timeout: float = 10.0) -> int:
        """Replace every actor that fails :meth:`health_check`; returns how many."""
        bad = self.health_check(timeout)
        for slot in bad:
            actor = self.actors[slot]
            self.replace_dead(slot, actor, ActorDiedError(actor.name, actor.class_name,
                                                          "failed its health check"))
        return len(bad)

    def stop(self, graceful_method: str | None = None, timeout: float = 5.0) -> None:
        """Kill every actor (after asking each to run ``graceful_method``, waiting at most
        ``timeout`` seconds for all of them)."""
        actors, self.actors[:] = list(self.actors), []
        if graceful_method is not None and actors:
            futures = [a.call(graceful_method) for a in actors]
            self.runtime.wait(futures, ALL_COMPLETED, timeout=timeout)
        for actor in actors:
            self.runtime.kill(actor)

    def __repr__(self) -> str:
        return (f"ActorPool({len(self.actors)} {self.kind}s on {self.runtime.name}, "
                f"{self.num_restarts} restarts)")
