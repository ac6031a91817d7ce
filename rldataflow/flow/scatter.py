"""``ScatterCalls``: driver-to-actor requests that carry a per-item argument.

The gathers of :class:`~rldataflow.flow.ParallelIterator` pull from streams that live on the
actors; nothing travels *to* an actor with a request. Some plans must send each actor its own
input every round (MAML's one task per worker, a search's one configuration per evaluator).
``ScatterCalls`` is that operator: each upstream item is a list of arguments, spread over the
actors, and the results come back as one list in the order of the arguments (a lock-step
round, like ``batch_across_shards``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rldataflow.flow.errors import OperatorError, creation_site, describe_exception
from rldataflow.flow.metrics import Metrics
from rldataflow.flow.operator import StreamOperator
from rldataflow.flow.parallel_iterator import FailurePolicy
from rldataflow.flow.signals import NOT_READY, WAKER, waiting_on_external
from rldataflow.runtime.base import ActorDiedError, ActorHandle, Future, MethodSpec, Runtime

__all__ = ["ScatterCalls"]


class ScatterCalls(StreamOperator):
    """For each upstream list ``args``, call ``method(args[j])`` on actor ``j % len(actors)``
    and emit the list of results, in the order of ``args``.

    All calls of a round are in flight at once; an actor given several arguments runs them in
    order (an actor's calls are serialized), so a round of ``n`` arguments on ``k`` actors
    takes about ``ceil(n / k)`` calls' time. The next round is sent only when the consumer
    asks for it, so a weights broadcast made between rounds reaches every actor before its next
    call. While a round is incomplete the operator yields ``NOT_READY`` (no busy-polling: it
    waits on the futures' completion, like the gathers).

    Args:
        actors: a function returning the current actors (called once per round, so actors
            replaced since the last round are used), e.g. ``workers.remote_workers``.
        method: an actor method name, or a function ``fn(instance, arg)`` run on the actor.
        runtime: the runtime the actors live on.
        on_failure: ``on_failure(index, actor, error) -> replacement or None``, as for the
            gathers (e.g. ``WorkerSet.replace_dead_worker``): the dead actor's calls of the
            round are reissued to the replacement. Without one (or when it returns None) the
            :class:`ActorDiedError` is raised.
        name: the operator's name in ``describe()``.

    Example::

        def square(instance, x):          # runs on the actor
            return x * x

        rounds = from_local_iterable(lambda: iter([[1, 2, 3], [4]]))
        out = rounds.for_each(ScatterCalls(lambda: actors, square, runtime=rt))
        out.take(2)                        # [[1, 4, 9], [16]]
    """

    def __init__(self, actors: Callable[[], Sequence[ActorHandle]], method: MethodSpec, *,
                 runtime: Runtime, on_failure: FailurePolicy | None = None,
                 name: str | None = None) -> None:
        if not callable(actors):
            raise TypeError("ScatterCalls(actors=...) must be a function returning the actors "
                            f"(e.g. workers.remote_workers), got {type(actors).__name__}")
        self.actors = actors
        self.method = method
        self.runtime = runtime
        self.on_failure = on_failure
        self._name = name
        self.site = creation_site()

    @property
    def op_name(self) -> str:
        if self._name:
            return self._name
        method = self.method if isinstance(self.method, str) else getattr(
            self.method, "__name__", repr(self.method))
        return f"ScatterCalls({method})"

    def _fail(self, index: int, what: str, exc: BaseException) -> OperatorError:
        return OperatorError(self.op_name, self.site, str(index),
                             f"{what}: {describe_exception(exc)}")

    def _replace(self, slots: list[ActorHandle], slot: int, dead: ActorHandle,
                 error: ActorDiedError) -> ActorHandle:
        if slots[slot] is not dead:  # an earlier call of this round already replaced it
            return slots[slot]
        replacement = self.on_failure(slot, dead, error) if self.on_failure else None
        if replacement is None:
            error.add_note(f"raised while {self.op_name} (created at {self.site}) waited on "
                           f"actor {slot}; pass on_failure= to replace dead actors")
            raise error
        slots[slot] = replacement
        return replacement

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        for args in upstream:
            if args is NOT_READY:
                yield args
                continue
            args = list(args)
            slots = list(self.actors())
            if not slots and args:
                raise self._fail(0, "no actors to call", ValueError("actors() returned none"))
            owner = [j % len(slots) for j in range(len(args))] if slots else []

            sent_to: dict[int, ActorHandle] = {}  # the actor each call went to

            def send(j: int, slots: list = slots, owner: list = owner, args: list = args,
                     sent_to: dict = sent_to) -> Future:
                sent_to[j] = slots[owner[j]]
                fut = self.runtime.call(sent_to[j], self.method, args[j])
                fut.add_done_callback(WAKER.notify)
                return fut

            pending = {j: send(j) for j in range(len(args))}
            results: dict[int, Any] = {}
            while len(results) < len(args):
                waiting = False
                for j, fut in list(pending.items()):
                    if not fut.done():
                        waiting = True
                        continue
                    del pending[j]
                    try:
                        results[j] = fut.result()
                    except ActorDiedError as err:
                        self._replace(slots, owner[j], sent_to[j], err)
                        metrics.counters["scatter_calls_reissued"] += 1
                        pending[j] = send(j)
                        waiting = True
                    except OperatorError:
                        raise
                    except Exception as exc:
                        raise self._fail(owner[j], f"argument {j}", exc) from exc
                if waiting and len(results) < len(args):
                    waiting_on_external()
                    yield NOT_READY
            yield [results[j] for j in range(len(args))]
