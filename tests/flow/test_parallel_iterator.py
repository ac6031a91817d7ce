"""ParallelIterator: transforms run on the actors, gathers, unions, metrics merged back."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest

from rldataflow.flow import (
    FlowError,
    Operator,
    from_actors,
    from_items,
    from_iterators,
    from_range,
)
from rldataflow.flow.parallel_iterator import _shard_next
from rldataflow.runtime import get_runtime

DRIVER_PID = os.getpid()


def actor_pids(runtime, par):
    return [runtime.call(a, lambda instance: os.getpid()).result(timeout=60)
            for a in par.actors()]


class Block:
    """An actor owning a block of numbers; ``stream()`` iterates over it."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def stream(self):
        return iter(range(self.lo, self.hi))


# Each case: (build a remote chain on a stream of 6 numbers in 2 shards, expected gathered items
# with pids replaced by the shard index). Every chain ends by tagging items with os.getpid() on
# the actor, so the test sees where the chain ran.
def _for_each(p):
    return p.for_each(lambda x: (x * 10, os.getpid()))


def _filter(p):
    return p.filter(lambda x: x % 2 == 0).for_each(lambda x: (x, os.getpid()))


def _batch(p):
    return p.batch(2).for_each(lambda b: (b, os.getpid()))


def _flatten(p):
    return p.for_each(lambda x: [x, -x]).flatten().for_each(lambda x: (x, os.getpid()))


def _combine(p):
    return p.combine(lambda x: [(x, os.getpid())] * (x % 2 + 1))


def _transform(p):
    def running_sum(items):
        total = 0
        for x in items:
            total += x
            yield (total, os.getpid())

    return p.transform(running_sum)


CHAINS = {
    # shard 0 holds 0, 1, 2 and shard 1 holds 3, 4, 5; gather_sync alternates shards
    "for_each": (_for_each, [(0, 0), (30, 1), (10, 0), (40, 1), (20, 0), (50, 1)]),
    "filter": (_filter, [(0, 0), (4, 1), (2, 0)]),
    "batch": (_batch, [([0, 1], 0), ([3, 4], 1), ([2], 0), ([5], 1)]),
    "flatten": (_flatten, [(0, 0), (3, 1), (0, 0), (-3, 1), (1, 0), (4, 1), (-1, 0), (-4, 1),
                           (2, 0), (5, 1), (-2, 0), (-5, 1)]),
    "combine": (_combine, [(0, 0), (3, 1), (1, 0), (3, 1), (1, 0), (4, 1), (2, 0), (5, 1),
                           (5, 1)]),
    "transform": (_transform, [(0, 0), (3, 1), (1, 0), (7, 1), (3, 0), (12, 1)]),
}


def test_transforms_run_on_the_shards_actor(runtime):
    # one pair of actors serves every chain (each gather installs its own stream on them)
    actors = [runtime.create_actor(Block, 0, 3), runtime.create_actor(Block, 3, 6)]
    pids = [runtime.call(a, lambda instance: os.getpid()).result(timeout=60) for a in actors]
    if runtime.name == "inline":
        assert pids == [DRIVER_PID, DRIVER_PID]
    else:
        assert DRIVER_PID not in pids and pids[0] != pids[1]
    for chain, (build, expected) in CHAINS.items():
        par = build(from_actors(actors, lambda inst: inst.stream(), runtime=runtime))
        got = list(par.gather_sync())
        assert got == [(item, pids[shard]) for item, shard in expected], chain


def again(par):
    """A new ParallelIterator streaming the same shards' data again, on the same actors.

    (A ParallelIterator can be gathered once, but its actors can serve any number of them.
    Tests reuse actors this way because starting a Ray actor costs about half a second.)
    """
    return from_actors(par.actors(), lambda inst: inst.items(), runtime=par.runtime)


def test_sources_and_from_actors(runtime):
    par = from_items([1, 2, 3, 4, 5], num_shards=2, repeat=True, runtime=runtime)
    assert par.num_shards() == 2
    assert par.gather_sync().take(10) == [1, 2, 3, 4, 5, 2, 1, 4, 3, 2]
    par = from_iterators([lambda: iter("ab"), ["c", "d", "e"]], runtime=runtime)
    actors = par.actors()
    assert list(par.gather_sync()) == ["a", "c", "b", "d", "e"]
    # from_actors: a function instance -> iterable, or a method called once per item
    assert list(again(par).gather_sync()) == ["a", "c", "b", "d", "e"]
    by_method = from_actors(actors, "items", runtime=runtime).for_each(list)
    assert by_method.gather_sync().take(4) == [["a", "b"], ["c", "d", "e"]] * 2
    # a method that does not exist is reported when the shard is installed
    with pytest.raises(Exception, match="no method 'nope'"):
        next(from_actors(actors, "nope", runtime=runtime).gather_sync())


def test_union_select_shards_and_every_gather_drop_exhausted_shards(runtime):
    p1 = from_iterators([["a0", "a1", "a2", "a3"], []], runtime=runtime)
    p2 = from_iterators([["c0"]], runtime=runtime)
    actors = p1.actors() + p2.actors()
    u = p1.union(p2)
    assert u.num_shards() == 3 and u.actors() == actors
    assert "union" in u.describe()
    # gather_sync: round-robin in shard order, exhausted shards drop out
    it = u.gather_sync()
    assert list(it) == ["a0", "c0", "a1", "a2", "a3"]
    with pytest.raises(StopIteration):
        next(it)
    # select_shards
    sel = again(u).select_shards([2, 0])
    assert sel.num_shards() == 2 and sel.actors() == [actors[2], actors[0]]
    assert list(sel.for_each(lambda x: x.upper()).gather_sync()) == ["C0", "A0", "A1", "A2", "A3"]
    with pytest.raises(IndexError, match="out of range"):
        again(u).select_shards([3])
    # batch_across_shards: one list per round
    assert list(again(u).batch_across_shards()) == [["a0", "c0"], ["a1"], ["a2"], ["a3"]]
    # gather_async: every item once, per-shard order kept, ends when all shards are exhausted
    it = again(u).gather_async(num_async=3)
    out = list(it)
    assert sorted(out) == ["a0", "a1", "a2", "a3", "c0"]
    if runtime.name != "ray":  # (Ray does not promise to report a shard's replies in order)
        assert [x for x in out if x[0] == "a"] == ["a0", "a1", "a2", "a3"]
    with pytest.raises(StopIteration):
        next(it)


def test_one_actor_may_serve_two_shards_of_one_gather(runtime):
    actor = runtime.create_actor(Block, 0, 3)
    p1 = from_actors([actor], lambda inst: inst.stream(), runtime=runtime)
    p2 = from_actors([actor], lambda inst: inst.stream(), runtime=runtime).for_each(lambda x: -x)
    assert list(p1.union(p2).gather_sync()) == [0, 0, 1, -1, 2, -2]


def test_union_of_two_runtimes_is_an_error():
    with get_runtime("inline") as rt1, get_runtime("inline") as rt2:
        with pytest.raises(FlowError, match="different runtimes"):
            from_range(2, 1, runtime=rt1).union(from_range(2, 1, runtime=rt2))


class Sampler:
    def __init__(self, tag):
        self.tag = tag
        self.n = 0

    def sample(self):
        self.n += 1
        return f"{self.tag}{self.n}"


def test_gather_sync_is_lock_step_without_prefetch(runtime):
    actors = [runtime.create_actor(Sampler, t) for t in "ab"]
    it = from_actors(actors, "sample", runtime=runtime).gather_sync()
    assert it.take(3) == ["a1", "b1", "a2"]
    # one round is in hand (b2 is held); no third round was requested
    counts = [runtime.call(a, lambda inst: inst.n).result(timeout=60) for a in actors]
    assert counts == [2, 2]


def _spy_on_requests(runtime):
    """Wrap runtime.call to record, per actor, the most item requests ever unanswered at once."""
    lock = threading.Lock()
    open_now: Counter = Counter()
    most: Counter = Counter()
    issued: Counter = Counter()
    real_call = getattr(runtime, "_unspied_call", runtime.call)
    runtime._unspied_call = real_call

    def call(actor, method, *args, **kwargs):
        fut = real_call(actor, method, *args, **kwargs)
        if method is _shard_next:
            with lock:
                open_now[actor.name] += 1
                issued[actor.name] += 1
                most[actor.name] = max(most[actor.name], open_now[actor.name])

            def done(_f, name=actor.name):
                with lock:
                    open_now[name] -= 1

            fut.add_done_callback(done)
        return fut

    runtime.call = call
    return most, issued


def test_gather_async_keeps_at_most_num_async_requests_in_flight_per_shard(runtime):
    def slow(x):
        time.sleep(0.01)
        return x

    par = from_range(12, num_shards=2, runtime=runtime)
    names = [a.name for a in par.actors()]
    for num_async in (1, 3):
        most, issued = _spy_on_requests(runtime)
        it = par.for_each(slow).gather_async(num_async=num_async)
        first = next(it)
        assert first in (0, 6)
        rest = list(it)
        assert sorted([first, *rest]) == list(range(12))
        for name in names:
            assert most[name] == num_async, (most, num_async)
            # 6 items, then one "exhausted" answer per request still in flight
            assert issued[name] == 6 + num_async
        par = again(par)


def test_gather_async_inline_runs_the_oldest_request_first():
    with get_runtime("inline") as rt:
        out = from_range(8, num_shards=2, runtime=rt).gather_async(num_async=2).take(8)
    assert out == [0, 1, 4, 5, 2, 3, 6, 7]


def test_second_gather_of_one_parallel_iterator_is_an_error():
    with get_runtime("inline") as rt:
        par = from_range(4, 2, runtime=rt)
        par.gather_sync()
        for again in (lambda: par.gather_async(), lambda: par.batch_across_shards(),
                      lambda: par.for_each(str)):
            with pytest.raises(FlowError, match="already feeds gather_sync"):
                again()
        with pytest.raises(ValueError, match="num_async"):
            from_range(4, 2, runtime=rt).gather_async(num_async=0)
        with pytest.raises(ValueError, match="batch size"):
            from_range(4, 2, runtime=rt).batch(0)
        with pytest.raises(ValueError, match="num_shards"):
            from_range(4, 0, runtime=rt)


class CountOnActor(Operator):
    def __call__(self, item):
        self.metrics.counters["seen_on_actor"] += 1
        self.metrics.counters[f"pid_{os.getpid()}"] += 1
        with self.metrics.timers["on_actor"]:
            pass
        self.metrics.record("values", item)
        return item


def test_actor_side_metrics_are_merged_into_the_gathered_iterator(runtime):
    par = from_range(10, num_shards=2, runtime=runtime)
    pids = actor_pids(runtime, par)
    for gather in ("sync", "async"):
        chain = par.for_each(CountOnActor())
        it = chain.gather_sync() if gather == "sync" else chain.gather_async(num_async=2)
        it = it.for_each(lambda x: x)
        assert sorted(it) == list(range(10))
        counters = it.metrics.counters
        assert counters["seen_on_actor"] == 10, gather
        assert sum(counters[f"pid_{p}"] for p in set(pids)) == 10
        if runtime.name != "inline":
            assert counters[f"pid_{pids[0]}"] == 5 and counters[f"pid_{pids[1]}"] == 5
        assert it.metrics.timers["on_actor"].count == 10
        assert sorted(it.metrics.window("values")) == list(range(10))
        par = again(par)
    text = it.describe()
    assert f"{runtime.name} runtime" in text and "2 shards" in text
    assert "for_each(CountOnActor)" in text and "gather_async(num_async=2)" in text
    assert "test_parallel_iterator.py:" in text


def test_gather_async_does_not_busy_poll_while_actors_are_slow(driver_cpu):
    def slow(x):
        time.sleep(0.2)
        return x

    with get_runtime("process") as rt:
        it = from_range(10_000, num_shards=2, repeat=True, runtime=rt).for_each(slow) \
            .gather_async(num_async=1)
        it.take(2)  # actors started, chains installed
        with driver_cpu:
            got = it.take(8)
    assert len(got) == 8 and driver_cpu.wall > 0.6
    assert driver_cpu.plan_share < 0.05, str(driver_cpu)



class Versioned:
    """A sampler whose items carry the version of the weights it had when it made them."""

    def __init__(self):
        self.version = 0

    def sample(self):
        time.sleep(0.005)
        return self.version

    def set_version(self, version):
        self.version = version


def test_gather_async_policy_lag_is_num_async_items(runtime):
    # refill-before-yield: an update sent right after an item lands behind num_async requests
    actor = runtime.create_actor(Versioned)
    for num_async in (1, 2, 3):
        it = from_actors([actor], "sample", runtime=runtime).gather_async(num_async=num_async)
        it = it.zip_with_source_actor()
        it.take(3)
        source, _ = next(it)
        runtime.call(source, "set_version", num_async)
        versions = [v for _, v in it.take(num_async + 2)]
        assert versions == [num_async - 1] * num_async + [num_async] * 2, num_async
