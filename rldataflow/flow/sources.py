"""Where ParallelIterators come from: items, ranges, iterators, or existing actors."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rldataflow.flow.errors import creation_site
from rldataflow.flow.local_iterator import fn_name
from rldataflow.flow.parallel_iterator import ParallelIterator, _Shard
from rldataflow.runtime import Runtime, get_runtime
from rldataflow.runtime.base import ActorHandle

_default_runtime: Runtime | None = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The process runtime used when a source is given no ``runtime=`` (shut down at exit)."""
    global _default_runtime
    with _default_lock:
        if _default_runtime is None:
            _default_runtime = get_runtime("process")
            atexit.register(_default_runtime.shutdown)
        return _default_runtime


class IterableSource:
    """A tiny actor that owns an iterable (or a function making one) as a shard's source."""

    def __init__(self, make: Callable[[], Iterable[Any]] | Iterable[Any]) -> None:
        self._make = make

    def items(self) -> Iterable[Any]:
        return self._make() if callable(self._make) else self._make


def _iterable_items(instance: IterableSource) -> Iterable[Any]:
    return instance.items()


def _make_shards(runtime: Runtime, makers: Sequence[Any], label: str) -> list[_Shard]:
    shards = []
    for maker in makers:
        actor = runtime.create_actor(IterableSource, maker, name=f"{label}-shard")
        shards.append(_Shard(actor, _iterable_items, (), label))
    return shards


def from_items(items: Sequence[Any], num_shards: int = 2, repeat: bool = False, *,
               runtime: Runtime | None = None) -> ParallelIterator:
    """A ParallelIterator over a list, split round-robin into ``num_shards`` shards.

    Example: ``from_items([1, 2, 3, 4], num_shards=2, runtime=rt).gather_sync().take(4)``
    gives ``[1, 2, 3, 4]`` (shard 0 holds 1, 3; shard 1 holds 2, 4).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    runtime = runtime or default_runtime()
    items = list(items)
    parts = [items[i::num_shards] for i in range(num_shards)]
    makers = [_repeating(p) if repeat else p for p in parts]
    return ParallelIterator(_make_shards(runtime, makers, "from_items"), runtime,
                            name=f"from_items({len(items)} items, {num_shards} shards"
                                 + (", repeat" if repeat else "") + ")",
                            site=creation_site())


def _repeating(items: list[Any]) -> Callable[[], Iterable[Any]]:
    def gen() -> Iterable[Any]:
        while True:
            yield from items

    return gen


def from_range(n: int, num_shards: int = 2, repeat: bool = False, *,
               runtime: Runtime | None = None) -> ParallelIterator:
    """A ParallelIterator over ``range(n)``, in contiguous blocks per shard.

    Example: ``from_range(4, num_shards=2, runtime=rt).gather_sync().take(4) == [0, 2, 1, 3]``
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    runtime = runtime or default_runtime()
    bounds = [(n * i // num_shards, n * (i + 1) // num_shards) for i in range(num_shards)]
    makers = [_range_maker(lo, hi, repeat) for lo, hi in bounds]
    return ParallelIterator(_make_shards(runtime, makers, "from_range"), runtime,
                            name=f"from_range({n}, {num_shards} shards"
                                 + (", repeat" if repeat else "") + ")",
                            site=creation_site())


def _range_maker(lo: int, hi: int, repeat: bool) -> Callable[[], Iterable[int]]:
    def gen() -> Iterable[int]:
        while True:
            yield from range(lo, hi)
            if not repeat:
                return

    return gen


def from_iterators(generators: Sequence[Iterable[Any] | Callable[[], Iterable[Any]]], *,
                   runtime: Runtime | None = None, name: str = "from_iterators"
                   ) -> ParallelIterator:
    """One shard per iterable, or per zero-argument function returning one (run on the actor).

    Example: ``from_iterators([lambda: iter("ab"), lambda: iter("cd")], runtime=rt)``
    """
    if not generators:
        raise ValueError("from_iterators needs at least one iterator")
    runtime = runtime or default_runtime()
    return ParallelIterator(_make_shards(runtime, list(generators), name), runtime,
                            name=f"{name}({len(generators)} shards)", site=creation_site())


def from_actors(actors: Sequence[ActorHandle],
                source: str | Callable[[Any], Iterable[Any]] = "par_iter_source", *,
                runtime: Runtime | None = None, name: str | None = None) -> ParallelIterator:
    """A ParallelIterator whose shards are existing actors.

    ``source`` is a method name, called again for each item (``"sample"`` on rollout workers
    gives an endless stream of batches), or a function ``instance -> iterable`` run on the
    actor. Example: ``from_actors(workers, "sample", runtime=rt).gather_async(num_async=2)``
    """
    actors = list(actors)
    if not actors:
        raise ValueError("from_actors needs at least one actor")
    runtime = runtime or actors[0].runtime
    label = f"{source}()" if isinstance(source, str) else fn_name(source)
    shards = [_Shard(a, source, (), label) for a in actors]
    return ParallelIterator(shards, runtime,
                            name=name or f"from_actors({len(actors)} x {label})",
                            site=creation_site())
