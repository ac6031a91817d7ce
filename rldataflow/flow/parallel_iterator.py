"""ParallelIterator: a lazy stream split into shards, each shard living on an actor.

Transforms (``for_each``, ``filter``, ``batch``, ...) are recorded, not run. At the first gather
each shard's chain is shipped to its actor once, where it is assembled into a LocalIterator; each
request then pulls the next item from that actor-side stream (which keeps its position) and
brings back the item together with the metrics the actor recorded.
"""

from __future__ import annotations

import itertools
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rldataflow.flow.errors import FlowError, OperatorError, creation_site, describe_exception
from rldataflow.flow.local_iterator import LocalIterator, fn_name, from_local_iterable
from rldataflow.flow.metrics import Metrics
from rldataflow.flow.provenance import note_source
from rldataflow.flow.signals import NOT_READY, WAKER, waiting_on_external
from rldataflow.runtime.base import ActorDiedError, ActorHandle, Future, Runtime

# A failure policy: (shard index, dead actor, error) -> replacement actor, or None to drop it.
FailurePolicy = Callable[[int, ActorHandle, ActorDiedError], "ActorHandle | None"]


@dataclass(frozen=True)
class _Step:
    kind: str  # for_each | filter | batch | flatten | combine | transform
    arg: Any
    name: str
    site: str


@dataclass
class _Shard:
    actor: ActorHandle
    source: str | Callable[[Any], Iterable[Any]]  # method called repeatedly, or instance->iterable
    steps: tuple[_Step, ...] = field(default_factory=tuple)
    source_label: str = ""


# ---------------------------------------------------------------------------------------------
# Actor side: these functions run inside the shard's actor (shipped by reference).
# ---------------------------------------------------------------------------------------------
_ACTOR_STREAMS: dict[tuple[int, str], LocalIterator[Any] | None] = {}
_ACTOR_FINALIZERS: set[int] = set()


def _repeat_method(instance: Any, method: str) -> Iterator[Any]:
    bound = getattr(instance, method)
    while True:
        yield bound()


def _shard_install(instance: Any, key: str, source: Any, steps: tuple[_Step, ...],
                   shard_label: str, source_label: str) -> bool:
    if isinstance(source, str):
        if not callable(getattr(instance, source, None)):
            raise FlowError(f"{type(instance).__name__} has no method {source!r} to use as a "
                            "shard source")
        iterable: Any = lambda: _repeat_method(instance, source)  # noqa: E731
    else:
        iterable = lambda: source(instance)  # noqa: E731
    metrics = Metrics()
    it = from_local_iterable(iterable, name=source_label, metrics=metrics, shard=shard_label,
                             site="<shard source>")
    for step in steps:
        it = _apply_step(it, step)
    _ACTOR_STREAMS[(id(instance), key)] = it
    try:
        if id(instance) not in _ACTOR_FINALIZERS:
            ident = id(instance)
            weakref.finalize(instance, _forget_instance, ident)
            _ACTOR_FINALIZERS.add(ident)
    except TypeError:  # not weak-referenceable (a dict, say): forgotten at process exit
        pass
    return True


def _forget_instance(ident: int) -> None:
    _ACTOR_FINALIZERS.discard(ident)
    for k in [k for k in _ACTOR_STREAMS if k[0] == ident]:
        del _ACTOR_STREAMS[k]


def _apply_step(it: LocalIterator[Any], step: _Step) -> LocalIterator[Any]:
    if step.kind == "batch":
        child = it.batch(step.arg)
    elif step.kind == "flatten":
        child = it.flatten()
    else:
        child = getattr(it, step.kind)(step.arg)
    child.site = step.site
    child.name = step.name
    child.shard = it.shard
    return child


def _shard_next(instance: Any, key: str, max_items: int) -> tuple[list[Any], dict | None, bool]:
    """Pull up to ``max_items`` from the shard's stream: (items, metrics delta, exhausted)."""
    try:
        it = _ACTOR_STREAMS[(id(instance), key)]
    except KeyError:
        raise FlowError(f"shard stream {key} is not installed on this actor") from None
    if it is None:
        return [], None, True
    items: list[Any] = []
    exhausted = False
    try:
        for _ in range(max_items):
            items.append(next(it))
    except StopIteration:
        exhausted = True
        _ACTOR_STREAMS[(id(instance), key)] = None  # later requests answer "exhausted"
    return items, it.metrics.pop_delta(), exhausted


def _shard_uninstall(instance: Any, key: str) -> None:
    _ACTOR_STREAMS.pop((id(instance), key), None)


# ---------------------------------------------------------------------------------------------
# Driver side.
# ---------------------------------------------------------------------------------------------
class _LiveShard:
    """A shard being gathered: its spec, its position in the iterator, its installed key."""

    __slots__ = ("index", "spec", "key", "retired")

    def __init__(self, index: int, spec: _Shard, key: str) -> None:
        self.index = index
        self.spec = spec
        self.key = key
        self.retired = False

    @property
    def actor(self) -> ActorHandle:
        return self.spec.actor


class ParallelIterator:
    """A stream split into shards, each produced on an actor.

    Example::

        with get_runtime("process") as rt:
            it = from_range(8, num_shards=2, runtime=rt).for_each(lambda x: x * x)
            sorted(it.gather_async(num_async=2).take(8))   # [0, 1, 4, ..., 49]

    Transforms run on the actors; ``gather_sync``/``gather_async``/``batch_across_shards``
    bring the items to the driver as a :class:`LocalIterator`.
    """

    def __init__(self, shards: Sequence[_Shard], runtime: Runtime, *, name: str,
                 site: str | None = None, parents: Sequence[Any] = ()) -> None:
        if not shards:
            raise ValueError(f"{name}: a ParallelIterator needs at least one shard")
        self._shards = list(shards)
        self.runtime = runtime
        self.name = name
        self.site = site or creation_site()
        self.parents = list(parents)
        self._consumer: tuple[str, str] | None = None

    # -- structure ------------------------------------------------------------------------
    def num_shards(self) -> int:
        return len(self._shards)

    def actors(self) -> list[ActorHandle]:
        """The shards' actors (current ones: a replaced actor shows its replacement)."""
        return [s.actor for s in self._shards]

    def _claim(self, consumer: str, site: str) -> None:
        if self._consumer is not None:
            raise FlowError(
                f"{self.name} (created at {self.site}) already feeds {self._consumer[0]} (at "
                f"{self._consumer[1]}); a shard's stream has one position, so it cannot also "
                f"feed {consumer} (at {site}). Create a second ParallelIterator over the actors "
                "instead")
        self._consumer = (consumer, site)

    def _with_step(self, kind: str, arg: Any, name: str) -> ParallelIterator:
        site = creation_site()
        self._claim(name, site)
        step = _Step(kind, arg, name, site)
        shards = [_Shard(s.actor, s.source, s.steps + (step,), s.source_label)
                  for s in self._shards]
        return ParallelIterator(shards, self.runtime, name=name, site=site, parents=[self])

    # -- transforms (run on the actors) ------------------------------------------------------
    def for_each(self, fn: Callable[[Any], Any]) -> ParallelIterator:
        """Apply ``fn`` to each item, on the shard's actor. Example: ``par.for_each(str)``"""
        return self._with_step("for_each", fn, f"for_each({fn_name(fn)})")

    def filter(self, fn: Callable[[Any], bool]) -> ParallelIterator:
        """Keep items for which ``fn`` is true, on the actor. Example: ``par.filter(bool)``"""
        return self._with_step("filter", fn, f"filter({fn_name(fn)})")

    def batch(self, n: int) -> ParallelIterator:
        """Group each shard's items into lists of ``n``, on the actor."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        return self._with_step("batch", n, f"batch({n})")

    def flatten(self) -> ParallelIterator:
        """Flatten each shard's lists into items, on the actor."""
        return self._with_step("flatten", None, "flatten()")

    def combine(self, fn: Callable[[Any], Iterable[Any]]) -> ParallelIterator:
        """Flat-map on the actor: ``fn`` returns a list of outputs per item."""
        return self._with_step("combine", fn, f"combine({fn_name(fn)})")

    def transform(self, fn: Callable[[Iterator[Any]], Iterable[Any]]) -> ParallelIterator:
        """Apply a whole-stream function to each shard's stream, on the actor."""
        return self._with_step("transform", fn, f"transform({fn_name(fn)})")

    def union(self, *others: ParallelIterator) -> ParallelIterator:
        """One ParallelIterator with the shards of this and the others."""
        site = creation_site()
        for other in (self, *others):
            if other.runtime is not self.runtime:
                raise FlowError(f"cannot union {self.name} with {other.name}: they run on "
                                "different runtimes")
            other._claim("union", site)
        shards = [s for p in (self, *others) for s in p._shards]
        return ParallelIterator(shards, self.runtime, name="union", site=site,
                                parents=[self, *others])

    def select_shards(self, indexes: Sequence[int]) -> ParallelIterator:
        """A ParallelIterator over a subset of the shards (by position)."""
        site = creation_site()
        bad = [i for i in indexes if not 0 <= i < len(self._shards)]
        if bad:
            raise IndexError(f"select_shards: {bad} out of range for {len(self._shards)} shards")
        name = f"select_shards({list(indexes)})"
        self._claim(name, site)
        return ParallelIterator([self._shards[i] for i in indexes], self.runtime, name=name,
                                site=site, parents=[self])

    # -- gathering -------------------------------------------------------------------------------
    def gather_sync(self, on_failure: FailurePolicy | None = None,
                    with_source: bool = False) -> LocalIterator[Any]:
        """Lock-step: one item from each shard per round, yielded in shard order.

        The next round starts only when the consumer asks for it. Exhausted shards drop out.
        Provenance as for :meth:`gather_async`.
        Example: ``from_range(4, num_shards=2, runtime=rt).gather_sync().take(4) == [0, 2, 1, 3]``
        """
        return self._gather("gather_sync(with_source)" if with_source else "gather_sync()",
                            on_failure, lambda st: _sync_rounds(st, False), with_source)

    def batch_across_shards(self, on_failure: FailurePolicy | None = None) -> LocalIterator[Any]:
        """Lock-step like gather_sync, but each round is yielded as one list (shard order)."""
        return self._gather("batch_across_shards()", on_failure,
                            lambda st: _sync_rounds(st, True))

    def gather_async(self, num_async: int = 1, on_failure: FailurePolicy | None = None,
                     with_source: bool = False) -> LocalIterator[Any]:
        """Items as they become ready, at most ``num_async`` requests in flight per shard.

        When a result arrives, that shard's next request is sent *before* the item is yielded
        (so a weight update sent to the actor right after lands behind the ``num_async``
        requests queued there, the refill included: up to ``num_async`` more items from that
        actor predate the update, the policy lag RL plans must account for).

        ``on_failure(shard_index, actor, error)`` is called when a shard's actor dies; if it
        returns a replacement actor, the shard's chain is installed there and the lost
        requests are reissued to it. Delivery guarantee: items the dead actor had produced but
        not yet delivered are lost (at most once; the counter ``requests_lost`` counts the
        requests that were in flight to dead actors); the stream then continues with the
        replacement's items. Without a policy, the :class:`ActorDiedError` is raised; a policy
        returning None drops the shard.

        Items that carry provenance (:class:`~rldataflow.flow.provenance.Sourced`, e.g. sample
        batches) are stamped with the actor they came from; ``with_source=True`` yields
        ``(actor, item)`` envelopes instead, for items that cannot carry it.

        Example: ``sorted(from_range(4, 2, runtime=rt).gather_async().take(4)) == [0, 1, 2, 3]``
        """
        if num_async < 1:
            raise ValueError(f"num_async must be >= 1, got {num_async}")
        name = f"gather_async(num_async={num_async}{', with_source' if with_source else ''})"
        return self._gather(name, on_failure, lambda st: _async_stream(st, num_async),
                            with_source)

    def _gather(self, name: str, on_failure: FailurePolicy | None,
                body: Callable[[_GatherState], Iterator[Any]],
                with_source: bool = False) -> LocalIterator[Any]:
        site = creation_site()
        self._claim(name, site)
        node: LocalIterator[Any]

        def make() -> Iterator[Any]:
            state = _GatherState(self, node, on_failure, options["with_source"])
            state.install_all()
            return body(state)

        node = LocalIterator(make, metrics=Metrics(), name=name, site=site, parents=[self])
        options = node.gather_options = {"with_source": with_source}
        return node

    # -- introspection -------------------------------------------------------------------------
    def describe(self) -> str:
        from rldataflow.flow.describe import describe

        return describe(self)

    def __repr__(self) -> str:
        return f"ParallelIterator[{self.name}, {len(self._shards)} shards @ {self.site}]"


class _GatherState:
    """What a gather keeps while running: live shards, the runtime, the failure policy."""

    def __init__(self, par: ParallelIterator, node: LocalIterator[Any],
                 on_failure: FailurePolicy | None, with_source: bool = False) -> None:
        self.par = par
        self.with_source = with_source
        self.node = node
        self.runtime = par.runtime
        self.on_failure = on_failure
        self.key = uuid.uuid4().hex[:12]
        # one key per shard: the same actor may serve two shards of one gather (a union)
        self.shards = [_LiveShard(i, spec, f"{self.key}:{i}")
                       for i, spec in enumerate(par._shards)]

    def label(self, shard: _LiveShard) -> str:
        return f"{shard.index} ({shard.actor.name})"

    def install_all(self) -> None:
        futures = [self._install(s) for s in self.shards]
        for shard, fut in zip(self.shards, futures, strict=False):
            try:
                self._result(shard, fut, installing=True)
            except ActorDiedError as err:  # died before the gather started: same policy
                self.handle_death(shard, err)
        self.shards = [s for s in self.shards if not s.retired]

    def _install(self, shard: _LiveShard) -> Future:
        spec = shard.spec
        return self.runtime.call(spec.actor, _shard_install, shard.key, spec.source, spec.steps,
                                 self.label(shard), spec.source_label)

    def request(self, shard: _LiveShard) -> Future:
        fut = self.runtime.call(shard.actor, _shard_next, shard.key, 1)
        return fut

    def _result(self, shard: _LiveShard, fut: Future, installing: bool = False) -> Any:
        try:
            return fut.result()
        except ActorDiedError:
            raise
        except OperatorError:
            raise
        except FlowError as exc:
            raise OperatorError(self.node.name, self.node.site, self.label(shard),
                                describe_exception(exc)) from exc
        except Exception as exc:
            what = "installing the shard's operators" if installing else "pulling an item"
            raise OperatorError(self.node.name, self.node.site, self.label(shard),
                                f"{what}: {describe_exception(exc)}") from exc

    def handle_death(self, shard: _LiveShard, error: ActorDiedError) -> bool:
        """Apply the failure policy; True if the shard goes on with a replacement actor."""
        if self.on_failure is None:
            note = (f"raised while {self.node.name} (created at {self.node.site}) gathered shard "
                    f"{shard.index}; pass on_failure= to replace dead actors")
            if hasattr(error, "add_note"):
                error.add_note(note)
            raise error
        try:
            replacement = self.on_failure(shard.index, shard.actor, error)
        except ActorDiedError:
            raise  # the policy declined to replace the actor: its death is the error
        except Exception as exc:
            raise OperatorError(self.node.name, self.node.site, self.label(shard),
                                f"the on_failure policy failed: {describe_exception(exc)}"
                                ) from exc
        if replacement is None:
            shard.retired = True
            self.node.metrics.counters["shards_dropped"] += 1
            return False
        shard.spec.actor = replacement
        shard.key = uuid.uuid4().hex[:12]
        self.node.metrics.counters["shards_restarted"] += 1
        self._result(shard, self._install(shard), installing=True)
        return True

    def deliver(self, shard: _LiveShard, result: tuple[list[Any], dict | None, bool]
                ) -> tuple[list[Any], bool]:
        items, delta, exhausted = result
        metrics = self.node.metrics
        if delta is not None:
            metrics.merge(delta)
        actor = shard.actor
        if self.with_source:
            return [(actor, item) for item in items], exhausted
        for item in items:
            note_source(item, actor)
        return items, exhausted


def _sync_rounds(state: _GatherState, as_list: bool) -> Iterator[Any]:
    live = list(state.shards)
    while live:
        pending = {id(s): state.request(s) for s in live}
        for fut in pending.values():
            fut.add_done_callback(WAKER.notify)
        results: dict[int, tuple[list[Any], dict | None, bool]] = {}
        while len(results) < len(live):
            waiting = False
            for shard in list(live):
                if id(shard) in results:
                    continue
                fut = pending[id(shard)]
                if not fut.done():
                    waiting = True
                    continue
                try:
                    results[id(shard)] = state._result(shard, fut)
                except ActorDiedError as err:
                    state.node.metrics.counters["requests_lost"] += 1
                    if state.handle_death(shard, err):
                        pending[id(shard)] = fut = state.request(shard)
                        fut.add_done_callback(WAKER.notify)
                        waiting = True
                    else:
                        live.remove(shard)
            if waiting and len(results) < len(live):
                waiting_on_external()
                yield NOT_READY
        round_items: list[Any] = []
        for shard in list(live):
            items, exhausted = state.deliver(shard, results[id(shard)])
            if exhausted:
                live.remove(shard)
            if as_list:
                round_items.extend(items)
            else:
                yield from items
        if as_list and round_items:
            yield round_items


def _async_stream(state: _GatherState, num_async: int) -> Iterator[Any]:
    runtime = state.runtime
    ready: deque[tuple[_LiveShard, Future]] = deque()
    inflight: dict[int, int] = {}  # shard id -> number of requests in flight
    all_inflight: dict[Future, _LiveShard] = {}
    on_demand = runtime.completes_on_demand
    order = itertools.count()
    issued: dict[Future, int] = {}

    def launch(shard: _LiveShard) -> None:
        fut = state.request(shard)
        inflight[id(shard)] = inflight.get(id(shard), 0) + 1
        all_inflight[fut] = shard
        issued[fut] = next(order)

        def on_done(f: Future, shard: _LiveShard = shard) -> None:
            ready.append((shard, f))
            WAKER.notify()

        fut.add_done_callback(on_done)

    for shard in state.shards:
        for _ in range(num_async):
            launch(shard)

    live = {id(s) for s in state.shards}
    while live:
        if not ready:
            if on_demand and all_inflight:
                # inline runtime: run the oldest request now (deterministic order)
                oldest = min(all_inflight, key=issued.__getitem__)
                oldest.done()
                continue
            waiting_on_external()
            yield NOT_READY
            continue
        shard, fut = ready.popleft()
        all_inflight.pop(fut, None)
        issued.pop(fut, None)
        if fut.actor is not shard.actor or shard.retired:
            continue  # a reply from an actor already replaced or dropped
        inflight[id(shard)] -= 1
        try:
            result = state._result(shard, fut)
        except ActorDiedError as err:
            # the other requests to the dead actor will fail too: forget them
            for other, owner in list(all_inflight.items()):
                if owner is shard:
                    all_inflight.pop(other)
                    issued.pop(other, None)
            lost, inflight[id(shard)] = inflight[id(shard)] + 1, 0
            state.node.metrics.counters["requests_lost"] += lost
            if state.handle_death(shard, err):
                for _ in range(num_async):
                    launch(shard)
            else:
                live.discard(id(shard))
            continue
        items, exhausted = state.deliver(shard, result)
        if exhausted:
            if inflight[id(shard)] == 0:
                live.discard(id(shard))
        else:
            launch(shard)  # refill before yielding, so the actor never idles
        yield from items
