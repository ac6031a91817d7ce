"""How lazy iterators wait without spinning.

An operator that would block (an async gather with nothing back yet, a Dequeue on an empty
queue, a duplicate branch held back by its bound) yields :data:`NOT_READY` instead, so that a
union or Concurrently can go and pull another branch. When the whole plan is waiting, the
outermost ``next()`` sleeps on the process-wide :data:`WAKER`, which every future completion and
queue hand-off notifies. A generation counter closes the race between "nothing is ready" and
"something just became ready".
"""

from __future__ import annotations

import threading

from rldataflow.runtime.base import IO_DRIVERS


class _NotReady:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"

    def __reduce__(self):
        return "NOT_READY"


NOT_READY = _NotReady()


class Waker:
    """A condition variable with a generation counter: ``wait(gen)`` returns once it moved on."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.generation = 0
        self._sleepers = 0  # threads in _cond.wait (a notify skips the lock when there are none)

    def notify(self, *_ignored: object) -> None:
        # A lost increment between two notifiers still moves the generation on, and a sleeper
        # counts itself under the lock before it checks the generation: no wake-up is missed.
        self.generation += 1
        if self._sleepers:
            with self._cond:
                self._cond.notify_all()
        for driver in IO_DRIVERS:  # a thread may be reading replies instead of waiting here
            driver.interrupt()

    def wait(self, seen_generation: int, timeout: float | None = None) -> bool:
        """Block until the generation differs from ``seen_generation``; False on timeout.

        With one process runtime live, the waiting thread reads that runtime's replies itself
        while it waits (their callbacks move the generation on): one thread instead of a
        hand-off from a reader thread per reply.
        """
        drivers = list(IO_DRIVERS)
        if len(drivers) == 1:
            return drivers[0].drive(lambda: self.generation != seen_generation, timeout)
        for driver in drivers:  # their reader threads must read while this thread sleeps
            driver.release_io()
        with self._cond:
            self._sleepers += 1
            try:
                return self._cond.wait_for(lambda: self.generation != seen_generation, timeout)
            finally:
                self._sleepers -= 1


WAKER = Waker()


class _WaitState(threading.local):
    """Per-thread count of reasons to wait that something outside the plan will resolve."""

    def __init__(self) -> None:
        self.external = 0
        self.internal: list[str] = []
        #: how many times an input asked a round-robin union to end its turn (only ever grows)
        self.turn_passes = 0
        #: how many times a part of the plan moved in a way that can end another part's
        #: internal wait (a duplicate branch consuming a buffered item; only ever grows)
        self.plan_moves = 0


WAIT_STATE = _WaitState()


def waiting_on_external() -> None:
    """Called by a source that yields NOT_READY because of an actor, a queue or a thread."""
    WAIT_STATE.external += 1


def plan_moved() -> None:
    """Called by an operator whose step may end another operator's internal wait (a duplicate
    branch freeing room in its bounded buffer): a union that found every input waiting then
    pulls them again rather than reporting the plan as stuck."""
    WAIT_STATE.plan_moves += 1


def waiting_on_plan(reason: str, pass_turn: bool = False) -> None:
    """Called by an operator that yields NOT_READY until another part of the same plan moves.

    With ``pass_turn`` the operator has nothing to give *until the other inputs of a round-robin
    union run* (a replay buffer below ``learning_starts``, say): the union then ends this input's
    turn and moves on instead of waiting on it. Still deterministic: the reason is plan state.
    """
    WAIT_STATE.internal.append(reason)
    if pass_turn:
        WAIT_STATE.turn_passes += 1
