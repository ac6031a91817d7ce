"""Stream semantics as properties (hypothesis), mostly on the inline runtime; determinism."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rldataflow.flow import (
    NOT_READY,
    Concurrently,
    LocalIterator,
    from_iterators,
    from_local_iterable,
    from_range,
)
from rldataflow.flow.concurrency import STAR_MAX_ITEMS
from rldataflow.flow.signals import waiting_on_external
from rldataflow.runtime import get_runtime

INLINE = settings(max_examples=60, deadline=None)
PROCESS = settings(max_examples=4, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

shard_sizes = st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=5)


def shard_data(sizes):
    return [[(i, k) for k in range(n)] for i, n in enumerate(sizes)]


def reference_round_robin(shards):
    return [s[r] for r in range(max(map(len, shards))) for s in shards if r < len(s)]


@pytest.fixture(scope="module")
def process_rt():
    with get_runtime("process") as rt:
        yield rt


def release(rt, par):
    if rt.name != "inline":
        for actor in par.actors():
            rt.kill(actor)


# -- gathers -----------------------------------------------------------------------------------
def check_gather_sync(rt, sizes):
    shards = shard_data(sizes)
    par = from_iterators(shards, runtime=rt)
    try:
        assert list(par.gather_sync()) == reference_round_robin(shards)
    finally:
        release(rt, par)


def check_gather_async(rt, sizes, num_async):
    shards = shard_data(sizes)
    par = from_iterators(shards, runtime=rt)
    try:
        out = list(par.gather_async(num_async=num_async))
    finally:
        release(rt, par)
    assert sorted(out) == sorted(x for s in shards for x in s)  # a permutation of all items
    for i, s in enumerate(shards):  # each shard's own order is kept
        assert [x for x in out if x[0] == i] == s


@INLINE
@given(sizes=shard_sizes)
def test_gather_sync_is_round_robin_over_shards_inline(sizes):
    with get_runtime("inline") as rt:
        check_gather_sync(rt, sizes)


@INLINE
@given(sizes=shard_sizes, num_async=st.integers(1, 4))
def test_gather_async_yields_a_permutation_of_all_items_inline(sizes, num_async):
    with get_runtime("inline") as rt:
        check_gather_async(rt, sizes, num_async)


@PROCESS
@given(sizes=st.lists(st.integers(0, 5), min_size=1, max_size=3))
def test_gather_sync_is_round_robin_over_shards_process(process_rt, sizes):
    check_gather_sync(process_rt, sizes)


@PROCESS
@given(sizes=st.lists(st.integers(0, 5), min_size=1, max_size=3), num_async=st.integers(1, 3))
def test_gather_async_yields_a_permutation_of_all_items_process(process_rt, sizes, num_async):
    check_gather_async(process_rt, sizes, num_async)


@INLINE
@given(sizes=shard_sizes)
def test_batch_across_shards_groups_each_round(sizes):
    shards = shard_data(sizes)
    with get_runtime("inline") as rt:
        rounds = list(from_iterators(shards, runtime=rt).batch_across_shards())
    expected = [[s[r] for s in shards if r < len(s)] for r in range(max(map(len, shards)))]
    assert rounds == [r for r in expected if r]


# -- batch / flatten -------------------------------------------------------------------------
@INLINE
@given(items=st.lists(st.integers()), n=st.integers(1, 6))
def test_batch_then_flatten_round_trips_locally(items, n):
    batches = list(from_local_iterable(items).batch(n))
    assert all(len(b) == n for b in batches[:-1]) and all(1 <= len(b) <= n for b in batches)
    assert list(from_local_iterable(items).batch(n).flatten()) == items


@INLINE
@given(sizes=shard_sizes, n=st.integers(1, 4))
def test_batch_then_flatten_round_trips_on_shards(sizes, n):
    shards = shard_data(sizes)
    with get_runtime("inline") as rt:
        out = list(from_iterators(shards, runtime=rt).batch(n).flatten().gather_async())
    for i, s in enumerate(shards):
        assert [x for x in out if x[0] == i] == s


# -- weighted round-robin unions ---------------------------------------------------------------
def tagged_count(tag):
    return from_local_iterable(lambda: ((tag, k) for k in itertools.count()), name=f"src{tag}")


@INLINE
@given(weights=st.lists(st.integers(1, 5), min_size=2, max_size=4), cycles=st.integers(1, 4))
def test_weighted_union_honours_its_ratios_exactly(weights, cycles):
    inputs = [tagged_count(i) for i in range(len(weights))]
    out = inputs[0].union(*inputs[1:], deterministic=True,
                          round_robin_weights=weights).take(sum(weights) * cycles)
    expected = [(i, c * w + k) for c in range(cycles) for i, w in enumerate(weights)
                for k in range(w)]
    assert out == expected


@INLINE
@given(weights=st.lists(st.integers(1, 4), min_size=1, max_size=3), cycles=st.integers(1, 3))
def test_weighted_concurrently_over_repeating_gathers(weights, cycles):
    with get_runtime("inline") as rt:
        # each input: a repeating 2-shard gather; its own stream order is round-robin itself
        inputs = [from_range(2, 2, repeat=True, runtime=rt).for_each(lambda x, i=i: (i, x))
                  .gather_sync() for i in range(len(weights))]
        out = Concurrently(inputs, round_robin_weights=weights).take(sum(weights) * cycles)
    pos = [0] * len(weights)
    expected = []
    for _ in range(cycles):
        for i, w in enumerate(weights):
            for _ in range(w):
                expected.append((i, pos[i] % 2))
                pos[i] += 1
    assert out == expected


def bursty(tag, bursts):
    """A stream that has ``bursts[j]`` items ready, then is 'not ready' once, and so on."""

    def gen():
        k = 0
        for b in bursts:
            for _ in range(b):
                yield (tag, k)
                k += 1
            waiting_on_external()
            yield NOT_READY

    return LocalIterator(gen, name=f"bursty{tag}")


@INLINE
@given(bursts=st.lists(st.integers(1, 8), min_size=1, max_size=6),
       weight=st.integers(1, 3))
def test_star_weight_takes_each_ready_burst(bursts, weight):
    other = from_local_iterable(lambda: (("o", k) for k in itertools.count()))
    union = bursty("s", bursts).union(other, deterministic=True,
                                      round_robin_weights=["*", weight])
    out = union.take(sum(bursts) + weight * len(bursts))
    expected, k, o = [], 0, 0
    for b in bursts:
        expected += [("s", k + j) for j in range(b)]
        k += b
        expected += [("o", o + j) for j in range(weight)]
        o += weight
    assert out == expected


def test_star_weight_on_an_always_ready_input_is_capped():
    out = tagged_count(0).union(tagged_count(1), deterministic=True,
                                round_robin_weights=["*", 2]).take(3 * (STAR_MAX_ITEMS + 2))
    tags = [t for t, _ in out]
    assert tags == ([0] * STAR_MAX_ITEMS + [1, 1]) * 3


# -- duplicate is bounded ------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 4), bound=st.integers(1, 5), length=st.none() | st.integers(0, 30),
       pulls=st.lists(st.integers(0, 3), min_size=1, max_size=120))
def test_duplicate_never_buffers_more_than_its_bound(n, bound, length, pulls):
    produced = [0]

    def source():
        for k in itertools.count() if length is None else range(length):
            produced[0] += 1
            yield k

    branches = from_local_iterable(source).duplicate(n, max_buffered=bound)
    raws = [b._internal() for b in branches]
    received = [0] * n
    finished = [False] * n
    for p in pulls:
        j = p % n
        before = list(received)
        try:
            item = next(raws[j])
        except StopIteration:
            finished[j] = True
            assert length is not None and received[j] == length
            continue
        assert not finished[j]
        if item is NOT_READY:
            # only when another branch holds `bound` unread items
            assert any(produced[0] - before[k] >= bound for k in range(n) if k != j)
            assert received == before
        else:
            assert item == received[j]  # every branch sees every item, in order
            received[j] += 1
        # nothing is buffered for a branch beyond the bound
        assert produced[0] == max(received)
        assert all(produced[0] - r <= bound for r in received)


# -- determinism -------------------------------------------------------------------------------
def _plan(rt, seed):
    rng = random.Random(seed)
    sizes = [rng.randint(0, 12) for _ in range(3)]
    par = from_iterators([list(range(100 * i, 100 * i + s)) for i, s in enumerate(sizes)],
                         runtime=rt)
    fast = par.for_each(lambda x: x * 2).gather_async(num_async=3)
    slow = from_range(20, num_shards=2, runtime=rt).batch(3).gather_sync().flatten()
    a, b = fast.duplicate(2)
    return Concurrently([a.batch(2), b, slow.union(
        from_range(5, 1, runtime=rt).gather_async(num_async=2))], mode="async",
        output_indexes=[0, 2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_plan_on_the_inline_runtime_gives_identical_output_twice(seed):
    outputs = []
    for _ in range(2):
        with get_runtime("inline") as rt:
            outputs.append(list(_plan(rt, seed)))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 20
