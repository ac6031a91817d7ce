"""Concurrently / union: exact round-robin order, async mode, shared metrics, no spinning."""

from __future__ import annotations

import time

import pytest

from rldataflow.flow import (
    Concurrently,
    FlowError,
    Metrics,
    Operator,
    from_local_iterable,
    from_range,
)
from rldataflow.runtime import get_runtime


def logged(items, tag, log):
    """A local stream whose items are logged (tag, item) as they are pulled."""

    def record(x):
        log.append((tag, x))
        return x

    return from_local_iterable(list(items), name=f"src_{tag}").for_each(record)


def test_round_robin_with_output_indexes_and_weights_exact_order():
    log = []
    store = logged(range(4), "store", log)  # e.g. storing to a replay buffer
    train = logged(range(100, 110), "train", log)
    out = list(Concurrently([store, train], mode="round_robin", output_indexes=[1],
                            round_robin_weights=[1, 3]))
    # only the outputs of input 1 come out, but input 0 ran in its turns
    assert out == list(range(100, 110))
    assert log == [("store", 0), ("train", 100), ("train", 101), ("train", 102),
                   ("store", 1), ("train", 103), ("train", 104), ("train", 105),
                   ("store", 2), ("train", 106), ("train", 107), ("train", 108),
                   ("store", 3), ("train", 109)]


def test_round_robin_default_weights_and_several_outputs():
    a = from_local_iterable(["a0", "a1", "a2"])
    b = from_local_iterable(["b0"])
    c = from_local_iterable(["c0", "c1"])
    assert list(Concurrently([a, b, c])) == ["a0", "b0", "c0", "a1", "c1", "a2"]
    a = from_local_iterable(["a0", "a1", "a2"])
    b = from_local_iterable(["b0"])
    c = from_local_iterable(["c0", "c1"])
    out = Concurrently([a, b, c], output_indexes=[0, 2], round_robin_weights=[2, 1, "*"])
    assert list(out) == ["a0", "a1", "c0", "c1", "a2"]


def test_async_mode_outputs_whatever_is_ready_and_filters_outputs():
    log = []
    a = logged(range(3), "a", log)
    b = logged(range(10, 15), "b", log)
    out = list(Concurrently([a, b], mode="async", output_indexes=[1]))
    assert out == list(range(10, 15))
    assert sorted(x for t, x in log if t == "a") == [0, 1, 2]  # consumed for side effects
    # always-ready inputs are served in turn, so none is starved
    assert [t for t, _ in log][:6] == ["a", "b", "a", "b", "a", "b"]


def test_concurrently_over_gathers_on_each_runtime(runtime):
    fast = from_range(6, num_shards=1, runtime=runtime).gather_async(num_async=2)
    lockstep = from_range(4, num_shards=1, runtime=runtime).for_each(lambda x: -x).gather_sync()
    out = list(Concurrently([fast, lockstep], mode="async"))
    assert sorted(out) == [-3, -2, -1, 0, 0, 1, 2, 3, 4, 5]
    assert [x for x in out if x < 0] == [-1, -2, -3]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mode": "fastest"}, ValueError, "mode must be"),
    ({"output_indexes": [2]}, ValueError, "out of range"),
    ({"output_indexes": [-1]}, ValueError, "out of range"),
    ({"round_robin_weights": [1]}, ValueError, "2 inputs"),
    ({"round_robin_weights": [1, 0]}, ValueError, "ints >= 1"),
    ({"round_robin_weights": [1, "x"]}, ValueError, "ints >= 1"),
    ({"round_robin_weights": [1, True]}, ValueError, "ints >= 1"),
    ({"mode": "async", "round_robin_weights": [1, 1]}, ValueError, "deterministic"),
])
def test_concurrently_rejects_bad_arguments(kwargs, error, match):
    ops = [from_local_iterable([1]), from_local_iterable([2])]
    with pytest.raises(error, match=match):
        Concurrently(ops, **kwargs)


def test_concurrently_rejects_empty_or_non_local_inputs():
    with pytest.raises(ValueError, match="at least one"):
        Concurrently([])
    with pytest.raises(TypeError, match="LocalIterators"):
        Concurrently([from_local_iterable([1]), [2]])
    with get_runtime("inline") as rt:
        with pytest.raises(TypeError, match="gather a ParallelIterator first"):
            Concurrently([from_range(2, 1, runtime=rt)])


def test_the_same_op_twice_in_concurrently_is_an_error():
    a = from_local_iterable([1])
    with pytest.raises(FlowError, match="already feeds Concurrently"):
        Concurrently([a, a])


class Count(Operator):
    def __init__(self, key):
        self.key = key

    def __call__(self, item):
        self.metrics.counters[self.key] += 1
        return item


@pytest.mark.parametrize("mode", ["round_robin", "async"])
def test_concurrently_branches_share_one_metrics(mode):
    m_a, m_b = Metrics(), Metrics()
    m_a.counters["before"] = 1
    a = from_local_iterable(range(3), metrics=m_a).for_each(Count("a"))
    b = from_local_iterable(range(4), metrics=m_b).for_each(Count("b"))
    out = Concurrently([a, b], mode=mode, output_indexes=[0])
    assert sorted(out) == [0, 1, 2]
    counters = out.metrics.counters
    assert counters["a"] == 3 and counters["b"] == 4 and counters["before"] == 1
    assert m_a.is_shared_with(m_b) and m_b.counters["a"] == 3
    # a metric recorded on a branch afterwards is seen through every handle
    m_b.counters["late"] += 1
    assert out.metrics.counters["late"] == 1


def test_gathers_in_a_union_count_into_one_metrics():
    with get_runtime("inline") as rt:
        g1 = from_range(4, 2, runtime=rt).for_each(Count("left")).gather_sync()
        g2 = from_range(3, 1, runtime=rt).for_each(Count("right")).gather_async()
        u = g1.union(g2, deterministic=True)
        assert sorted(u) == [0, 0, 1, 1, 2, 2, 3]
        assert u.metrics.counters["left"] == 4 and u.metrics.counters["right"] == 3
        assert g1.metrics.is_shared_with(g2.metrics)


def test_async_union_of_slow_branches_does_not_busy_poll(driver_cpu):
    def slow(x):
        time.sleep(0.2)
        return x

    with get_runtime("process") as rt:
        a = from_range(1000, 1, repeat=True, runtime=rt).for_each(slow).gather_async()
        b = from_range(1000, 1, repeat=True, runtime=rt).for_each(slow).gather_sync()
        u = a.union(b)
        u.take(2)  # actors started, chains installed
        with driver_cpu:
            got = u.take(8)
    assert len(got) == 8 and driver_cpu.wall > 0.6
    assert driver_cpu.plan_share < 0.05, str(driver_cpu)


def test_round_robin_union_waits_for_the_slow_input_without_spinning(driver_cpu):
    def slow(x):
        time.sleep(0.1)
        return x

    with get_runtime("process") as rt:
        slow_it = from_range(5, 1, runtime=rt).for_each(slow).gather_async()
        fast_it = from_local_iterable(range(100, 105))
        u = Concurrently([slow_it, fast_it], round_robin_weights=[1, 2])
        with driver_cpu:
            out = list(u)
    # the order does not depend on timing: round-robin waits for the slow input's turn
    assert out == [0, 100, 101, 1, 102, 103, 2, 104, 3, 4]
    assert driver_cpu.plan_share < 0.1, str(driver_cpu)
