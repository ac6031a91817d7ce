"""Running several streams as one: ``union`` and ``Concurrently``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rldataflow.flow.errors import creation_site
from rldataflow.flow.local_iterator import LocalIterator
from rldataflow.flow.signals import NOT_READY, WAIT_STATE

STAR = "*"
#: A ``"*"`` turn ends after this many items even if its input is still ready, so an input that
#: is always ready (an inline gather, a local iterable) cannot starve the others.
STAR_MAX_ITEMS = 100


def _check_weights(weights: Sequence[int | str], n: int) -> list[int | str]:
    if len(weights) != n:
        raise ValueError(f"round_robin_weights has {len(weights)} entries for {n} inputs")
    out: list[int | str] = []
    for w in weights:
        if w == STAR:
            out.append(STAR)
        elif isinstance(w, int) and not isinstance(w, bool) and w >= 1:
            out.append(w)
        else:
            raise ValueError(f"round_robin_weights entries must be ints >= 1 or '*', got {w!r}")
    return out


def _round_robin(streams: list[Iterator[Any]], weights: list[int | str]) -> Iterator[Any]:
    """Deterministic turns: ``weights[i]`` items from input i, waiting for each in order.

    A ``"*"`` turn takes the items that are ready (at least one, at most ``STAR_MAX_ITEMS``).
    An input that waits with ``waiting_on_plan(..., pass_turn=True)`` ends its turn; if every
    live input does so in a row, NOT_READY goes up (nothing in the plan can move).

    Yields ``(input_index, item)`` pairs, or NOT_READY.
    """
    live = list(range(len(streams)))
    turn = 0
    passed_in_a_row = 0
    wait = WAIT_STATE
    while live:
        turn %= len(live)
        index = live[turn]
        weight = weights[index]
        pulled = 0
        while True:
            if pulled >= (STAR_MAX_ITEMS if weight == STAR else weight):
                break
            passes, external = wait.turn_passes, wait.external
            try:
                item = next(streams[index])
            except StopIteration:
                live.remove(index)
                turn -= 1
                break
            if item is NOT_READY:
                if weight == STAR and pulled >= 1:
                    break  # '*': take what is ready, then move on
                if wait.turn_passes > passes and wait.external == external:
                    passed_in_a_row += 1  # it waits for the other inputs: its turn ends
                    if passed_in_a_row >= len(live):
                        passed_in_a_row = 0
                        yield item
                    break
                yield item  # wait for this input: the order must not depend on timing
                continue
            pulled += 1
            passed_in_a_row = 0
            yield (index, item)
        turn += 1


def _as_ready(streams: list[Iterator[Any]]) -> Iterator[Any]:
    """Items from whichever input has one; yields NOT_READY only when none has.

    Turns rotate so a fast input cannot starve a slow one. Yields ``(input_index, item)``.
    If every input waits but one of them moved the plan meanwhile (consumed an item without
    emitting one, freeing a bounded duplicate another input waits on), they are pulled again:
    the earlier ones' waits may be over.
    """
    live = list(range(len(streams)))
    start = 0
    wait = WAIT_STATE
    while live:
        n = len(live)
        produced = False
        moves = wait.plan_moves
        for k in range(n):
            index = live[(start + k) % n]
            try:
                item = next(streams[index])
            except StopIteration:
                live.remove(index)
                produced = True  # the set of inputs changed: rescan from a fresh start
                start = 0
                break
            if item is NOT_READY:
                continue
            start = (live.index(index) + 1) % len(live)
            produced = True
            yield (index, item)
            break
        if not produced and wait.plan_moves == moves:
            yield NOT_READY


def union_streams(iterators: Sequence[LocalIterator[Any]], *, deterministic: bool,
                  round_robin_weights: Sequence[int | str] | None,
                  site: str, name: str | None = None,
                  keep: set[int] | None = None) -> LocalIterator[Any]:
    """Merge streams; with ``keep``, only the items of those input indexes are emitted."""
    if not iterators:
        raise ValueError("union needs at least one input")
    for it in iterators:
        if not isinstance(it, LocalIterator):
            raise TypeError(f"union inputs must be LocalIterators, got {type(it).__name__} "
                            "(gather a ParallelIterator first, or use ParallelIterator.union)")
    if round_robin_weights is not None and not deterministic:
        raise ValueError("round_robin_weights only apply to a deterministic (round-robin) union")
    weights = _check_weights(round_robin_weights or [1] * len(iterators), len(iterators))
    label = name or (f"union(round_robin, weights={list(weights)})" if deterministic
                     else "union(async)")
    for it in iterators:
        it._claim(label, site)
    # Every branch counts into one Metrics, also operators that captured a branch's object.
    metrics = iterators[0].metrics
    for it in iterators[1:]:
        metrics.unify(it.metrics)

    def make() -> Iterator[Any]:
        streams = [it._internal() for it in iterators]
        tagged = _round_robin(streams, weights) if deterministic else _as_ready(streams)
        for pair in tagged:
            if pair is NOT_READY:
                yield pair
            elif keep is None or pair[0] in keep:
                yield pair[1]

    return LocalIterator(make, metrics=metrics, name=label, site=site, parents=list(iterators))


def Concurrently(ops: Sequence[LocalIterator[Any]], *, mode: str = "round_robin",
                 output_indexes: Sequence[int] | None = None,
                 round_robin_weights: Sequence[int | str] | None = None) -> LocalIterator[Any]:
    """Run several sub-flows as one; output only the items of ``output_indexes``.

    ``mode="round_robin"`` pulls the inputs in turn (``round_robin_weights`` items each, ``"*"``
    for "as many as are ready"); ``mode="async"`` pulls whichever is ready, and sleeps (never
    spins) while none is. The items of inputs not listed in ``output_indexes`` are consumed for
    their side effects (storing to replay, say) and dropped.

    Example (the shape of DQN)::

        train_op = Concurrently([store_op, replay_op], mode="round_robin",
                                output_indexes=[1], round_robin_weights=[1, 4])
    """
    if mode not in ("round_robin", "async"):
        raise ValueError(f"Concurrently mode must be 'round_robin' or 'async', got {mode!r}")
    ops = list(ops)
    if not ops:
        raise ValueError("Concurrently needs at least one op")
    site = creation_site()
    if output_indexes is not None:
        bad = [i for i in output_indexes if not 0 <= i < len(ops)]
        if bad:
            raise ValueError(f"output_indexes {bad} out of range for {len(ops)} ops")
    wanted = set(range(len(ops)) if output_indexes is None else output_indexes)
    label = (f"Concurrently(mode={mode}"
             + (f", output_indexes={sorted(wanted)}" if output_indexes is not None else "")
             + (f", weights={list(round_robin_weights)}" if round_robin_weights else "") + ")")
    return union_streams(ops, deterministic=(mode == "round_robin"),
                         round_robin_weights=round_robin_weights, site=site, name=label,
                         keep=None if len(wanted) == len(ops) else wanted)
