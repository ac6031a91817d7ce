"""LocalIterator: the per-item operators, unions, duplicate, single-consumer rule, Operators."""

from __future__ import annotations

import itertools

import pytest

from rldataflow.flow import (
    NOT_READY,
    Concurrently,
    FlowError,
    LocalIterator,
    Metrics,
    Operator,
    StreamOperator,
    from_local_iterable,
    from_range,
)
from rldataflow.flow.concurrency import STAR_MAX_ITEMS
from rldataflow.flow.signals import waiting_on_external


def src(items, name="src"):
    return from_local_iterable(list(items), name=name)


def counting(n=None):
    """An iterable whose pulls are counted (``box[0]``), endless when ``n`` is None."""
    box = [0]

    def gen():
        for i in itertools.count() if n is None else range(n):
            box[0] += 1
            yield i

    return gen, box


# -- per-item operators ----------------------------------------------------------------------
def test_for_each_filter_batch_flatten_combine():
    assert list(src(range(5)).for_each(lambda x: x * 10)) == [0, 10, 20, 30, 40]
    assert list(src(range(7)).filter(lambda x: x % 3 == 0)) == [0, 3, 6]
    assert list(src(range(5)).batch(2)) == [[0, 1], [2, 3], [4]]
    assert list(src(range(4)).batch(4)) == [[0, 1, 2, 3]]
    assert list(src([[1, 2], [], [3]]).flatten()) == [1, 2, 3]
    assert list(src(range(4)).combine(lambda x: [x] * (x % 3))) == [1, 2, 2]
    assert list(src([]).for_each(str)) == []


def test_batch_and_duplicate_reject_bad_sizes():
    with pytest.raises(ValueError, match="batch size"):
        src(range(3)).batch(0)
    with pytest.raises(ValueError, match="n >= 1"):
        src(range(3)).duplicate(0)
    with pytest.raises(ValueError, match="max_buffered"):
        src(range(3)).duplicate(2, max_buffered=0)


def test_transform_sees_a_plain_iterator_and_ends_with_its_input():
    def running_sum(items):
        total = 0
        for x in items:
            assert x is not NOT_READY
            total += x
            yield total

    assert list(src(range(5)).transform(running_sum)) == [0, 1, 3, 6, 10]
    # a transform that drops the rest, and one over an empty stream
    assert list(src(range(100)).transform(lambda it: itertools.islice(it, 3))) == [0, 1, 2]
    assert list(src([]).transform(lambda it: (x for x in it))) == []


def test_laziness_nothing_runs_before_next():
    gen, pulls = counting()
    it = from_local_iterable(gen).for_each(lambda x: x + 1).filter(lambda x: True).batch(2)
    assert pulls[0] == 0
    assert next(it) == [1, 2]
    assert pulls[0] == 2


def test_take_and_show(capsys):
    it = src(range(10))
    assert it.take(3) == [0, 1, 2]
    assert it.take(2) == [3, 4]  # the stream keeps its position
    assert src(range(2)).take(5) == [0, 1]
    src(["a", "b", "c"]).show(2)
    assert capsys.readouterr().out == "a\nb\n"


def test_zip_with_source_actor_after_gather_async(runtime):
    par = from_range(8, num_shards=2, runtime=runtime)
    actors = par.actors()
    pairs = par.gather_async(num_async=2).zip_with_source_actor().take(8)
    assert sorted(x for _, x in pairs) == list(range(8))
    for actor, x in pairs:
        assert actor is actors[x // 4], (actor, x)  # shard 0 holds 0..3, shard 1 holds 4..7


def test_zip_with_source_actor_after_gather_sync(runtime):
    par = from_range(6, num_shards=3, runtime=runtime)
    actors = par.actors()
    pairs = list(par.gather_sync().zip_with_source_actor())
    assert [x for _, x in pairs] == [0, 2, 4, 1, 3, 5]
    assert [a for a, _ in pairs] == [actors[x // 2] for _, x in pairs]


# -- unions ------------------------------------------------------------------------------------
def test_union_deterministic_round_robin_with_weights():
    a = src(["a0", "a1", "a2", "a3", "a4"], "a")
    b = src(["b0", "b1", "b2"], "b")
    c = src(["c0", "c1", "c2", "c3"], "c")
    out = list(a.union(b, c, deterministic=True, round_robin_weights=[2, 1, 3]))
    assert out == ["a0", "a1", "b0", "c0", "c1", "c2",
                   "a2", "a3", "b1", "c3",
                   "a4", "b2"]


def test_union_star_takes_what_is_ready_then_moves_on():
    def bursty():
        # bursts of 3, 1, 2 ready items, "not ready" in between
        for burst in ([0, 1, 2], [3], [4, 5]):
            yield from burst
            waiting_on_external()
            yield NOT_READY

    star = LocalIterator(bursty, name="bursty")
    other = src(["x", "y", "z", "w"], "other")
    out = list(star.union(other, deterministic=True, round_robin_weights=["*", 1]))
    assert out == [0, 1, 2, "x", 3, "y", 4, 5, "z", "w"]


def test_union_star_on_an_always_ready_input_does_not_starve_the_others():
    a = from_local_iterable(itertools.count(), name="always")
    b = from_local_iterable(itertools.repeat("b"), name="b")
    out = a.union(b, deterministic=True, round_robin_weights=["*", 1]).take(2 * STAR_MAX_ITEMS + 2)
    assert out[STAR_MAX_ITEMS] == "b" and out[-1] == "b"
    assert out.count("b") == 2


def test_union_async_interleaves_fairly_and_keeps_every_item():
    a = src(range(0, 4), "a")
    b = src(range(10, 12), "b")
    out = list(a.union(b))
    assert out == [0, 10, 1, 11, 2, 3]


def test_union_rejects_bad_arguments():
    with pytest.raises(ValueError, match="round_robin_weights has"):
        src([1]).union(src([2]), deterministic=True, round_robin_weights=[1])
    with pytest.raises(ValueError, match="ints >= 1"):
        src([1]).union(src([2]), deterministic=True, round_robin_weights=[1, 0])
    with pytest.raises(ValueError, match="deterministic"):
        src([1]).union(src([2]), round_robin_weights=[1, 1])
    with pytest.raises(TypeError, match="LocalIterators"):
        src([1]).union([2])


def test_union_shares_one_metrics_also_for_operators_that_captured_a_branch():
    class Count(Operator):
        def __call__(self, item):
            self.metrics.counters[self.key] += 1
            return item

        def __init__(self, key):
            self.key = key

    a = src(range(3)).for_each(Count("a"))
    b = src(range(2)).for_each(Count("b"))
    a_metrics, b_metrics = a.metrics, b.metrics
    u = a.union(b, deterministic=True)
    assert list(u) == [0, 0, 1, 1, 2]
    assert u.metrics.counters["a"] == 3 and u.metrics.counters["b"] == 2
    assert a_metrics.is_shared_with(b_metrics) and a_metrics.counters["b"] == 2


# -- duplicate ---------------------------------------------------------------------------------
def test_duplicate_each_branch_sees_every_item():
    a, b, c = src(range(5)).duplicate(3)
    assert next(a) == 0 and next(a) == 1
    assert list(b) == [0, 1, 2, 3, 4]
    assert list(a) == [2, 3, 4]
    assert list(c) == [0, 1, 2, 3, 4]


def test_duplicate_branch_running_ahead_yields_not_ready_at_the_bound():
    gen, pulls = counting()
    a, b = from_local_iterable(gen).duplicate(2, max_buffered=3)
    raw_a = a._internal()
    assert [next(raw_a) for _ in range(3)] == [0, 1, 2]
    # b holds 3 unread items: a must wait, and the source is not pulled further
    assert next(raw_a) is NOT_READY
    assert next(raw_a) is NOT_READY
    assert pulls[0] == 3
    assert next(b) == 0  # b catches up by one: a may go one further
    assert next(raw_a) == 3
    assert next(raw_a) is NOT_READY
    assert pulls[0] == 4
    assert b.take(4) == [1, 2, 3, 4]
    assert pulls[0] == 5  # b ran ahead of a by one item, which a now holds


def test_duplicate_with_only_one_branch_read_raises_instead_of_hanging():
    a, _b = src(range(100)).duplicate(2, max_buffered=4)
    assert a.take(4) == [0, 1, 2, 3]
    with pytest.raises(FlowError, match="cannot make progress") as info:
        next(a)
    assert "duplicate branch 1" in str(info.value) and "4 unconsumed" in str(info.value)


def test_duplicate_branches_in_a_round_robin_union():
    a, b = src(range(50)).duplicate(2, max_buffered=2)
    out = list(a.for_each(lambda x: ("a", x)).union(b.for_each(lambda x: ("b", x)),
                                                     deterministic=True))
    assert out == [(t, x) for x in range(50) for t in "ab"]


def test_duplicate_branches_read_at_different_rates_hit_the_bound_not_memory():
    # a takes 2 items per turn, b 1: b's backlog would grow without limit; the bound stops it
    a, b = src(range(50)).duplicate(2, max_buffered=2)
    u = a.union(b, deterministic=True, round_robin_weights=[2, 1])
    assert u.take(4) == [0, 1, 0, 2]  # turn 2: a gets one item, then b's buffer is full
    with pytest.raises(FlowError, match="duplicate branch 1 .* holds 2 unconsumed"):
        next(u)


def test_async_union_pulls_again_when_a_waiting_branch_freed_the_duplicate_bound():
    # a fills b's buffer (2) and waits; in the same scan b consumes those 2 and 2 more without
    # emitting (batch(6)), then waits on a's full buffer: a can go on, the plan is not stuck
    a, b = src(range(60)).duplicate(2, max_buffered=2)
    u = Concurrently([a.batch(4).for_each(lambda x: ("a", x)),
                      b.batch(6).for_each(lambda x: ("b", x))], mode="async")
    out = u.take(6)
    assert [x for t, x in out if t == "a"][:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [x for t, x in out if t == "b"][:1] == [[0, 1, 2, 3, 4, 5]]


# -- one consumer per node -----------------------------------------------------------------
def test_one_node_consumed_twice_names_both_sites():
    it = src(range(3), "source_node")
    it.for_each(str)
    line_first = _lineno() - 1
    with pytest.raises(FlowError) as info:
        it.filter(bool)
    line_second = _lineno() - 1
    msg = str(info.value)
    assert "source_node" in msg and "for_each(str)" in msg and "filter(bool)" in msg
    assert f"test_local_iterator.py:{line_first}" in msg
    assert f"test_local_iterator.py:{line_second}" in msg
    assert "duplicate" in msg


def test_a_node_pulled_directly_cannot_then_feed_an_operator():
    it = src(range(3))
    assert next(it) == 0
    with pytest.raises(FlowError, match="already feeds next"):
        it.for_each(str)


def test_union_input_used_twice_is_an_error():
    a, b = src([1]), src([2])
    a.union(b)
    with pytest.raises(FlowError, match="already feeds union"):
        a.for_each(str)


def _lineno() -> int:
    import sys

    return sys._getframe(1).f_lineno


# -- Operator / StreamOperator ---------------------------------------------------------------
class CountItems(Operator):
    def __call__(self, item):
        self.metrics.counters["items"] += 1
        with self.metrics.timers["op"]:
            pass
        return item


def test_operator_gets_the_plans_metrics():
    op = CountItems()
    it = src(range(5)).for_each(op)
    assert list(it) == list(range(5))
    assert op.metrics is it.metrics
    assert it.metrics.counters["items"] == 5
    assert it.metrics.timers["op"].count == 5
    assert "for_each(CountItems)" == it.name


def test_one_operator_in_two_plans_counts_into_each_plans_metrics():
    op = CountItems()
    p1 = src(range(3)).for_each(op)
    p2 = src(range(5)).for_each(op).filter(lambda x: True)
    pulls = [p1, p2, p2, p1, p2, p2, p1, p2]
    for p in pulls:
        next(p)
    assert p1.metrics.counters["items"] == 3
    assert p2.metrics.counters["items"] == 5
    assert not p1.metrics.is_shared_with(p2.metrics)


def test_operator_in_combine_gets_metrics():
    class Twice(Operator):
        def __call__(self, item):
            self.metrics.counters["in"] += 1
            return [item, item]

    it = src(range(3)).combine(Twice())
    assert list(it) == [0, 0, 1, 1, 2, 2]
    assert it.metrics.counters["in"] == 3


class Pairs(StreamOperator):
    def apply(self, upstream, metrics):
        held = None
        for item in upstream:
            if item is NOT_READY:
                yield item
            elif held is None:
                held = item
            else:
                metrics.counters["pairs"] += 1
                yield (held, item)
                held = None


def test_stream_operator_reused_in_two_places_keeps_separate_state():
    op = Pairs()
    p1 = src("abcdef").for_each(op)
    p2 = src(range(6)).transform(op)
    assert next(p1) == ("a", "b")
    assert next(p2) == (0, 1)
    assert next(p1) == ("c", "d")
    assert next(p2) == (2, 3)
    assert list(p2) == [(4, 5)]
    assert list(p1) == [("e", "f")]
    assert p1.metrics.counters["pairs"] == 3 and p2.metrics.counters["pairs"] == 3
    assert p1.name == "for_each(Pairs)" and p2.name == "transform(Pairs)"


def test_metrics_object_given_explicitly_is_used():
    m = Metrics()
    it = from_local_iterable(range(2), metrics=m).for_each(CountItems())
    list(it)
    assert m.counters["items"] == 2
