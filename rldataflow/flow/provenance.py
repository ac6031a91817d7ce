"""Where an item came from, carried by the item itself.

RLlib Flow kept "the actor the last item came from" in shared state that gathers wrote and
operators read; it was only right when nothing buffered or concatenated in between, and
wrong across threads. Here an item that can carry provenance (a :class:`Sourced`, e.g. a
``SampleBatch``) is stamped by the gather that pulled it from an actor; merging items (a
concatenation) unions their sources; an operator asks the item. Items that cannot carry it
(tuples, numbers) travel in an envelope instead: ``gather_async(with_source=True)`` yields
``(actor, item)`` pairs.

Sources are driver-side facts: they are not pickled with the item (an actor handle must not
travel to another process inside a batch).

Example::

    batch = next(ParallelRollouts(workers, mode="async"))
    source_actor(batch)            # the worker that sampled it
    merged = concat_samples([a, b])
    source_actors(merged)          # both workers, in order
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Sourced:
    """Mixin of items that carry the actors they came from in ``sources`` (oldest first)."""

    sources: tuple[Any, ...] = ()

    def set_sources(self, sources: Iterable[Any]) -> None:
        self.sources = tuple(sources)


def note_source(item: Any, actor: Any) -> Any:
    """Stamp ``item`` as coming from ``actor`` (a gather does this); returns the item."""
    if isinstance(item, Sourced):
        item.sources = (actor,)
    return item


def source_actors(item: Any) -> tuple[Any, ...]:
    """The actors ``item`` came from (empty if it was made in the driver or carries none)."""
    if isinstance(item, Sourced):
        return item.sources
    return ()


def source_actor(item: Any) -> Any:
    """The (last) actor ``item`` came from, or None."""
    sources = source_actors(item)
    return sources[-1] if sources else None


def merged_sources(items: Iterable[Any]) -> tuple[Any, ...]:
    """The sources of items merged into one: each actor once, in first-seen order."""
    seen: dict[int, Any] = {}
    for item in items:
        for actor in source_actors(item):
            seen.setdefault(id(actor), actor)
    return tuple(seen.values())
