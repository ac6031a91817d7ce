"""AccumulateUntil: lists closed once every measure reaches its minimum."""

from __future__ import annotations

import pytest

from rldataflow.flow import NOT_READY, Operator, from_items
from rldataflow.flow.accumulate import AccumulateUntil
from rldataflow.flow.local_iterator import from_local_iterable


def test_docstring_example(runtime):
    it = from_items(list(range(10)), num_shards=1, runtime=runtime).gather_sync().for_each(
        AccumulateUntil({"sum": (lambda x: x, 5)}))
    assert it.take(6) == [[0, 1, 2, 3], [4, 5], [6], [7], [8], [9]]


def test_every_measure_must_be_met_and_sums_are_reported():
    items = [{"eps": 2, "steps": 10}, {"eps": 2, "steps": 500}, {"eps": 2, "steps": 600},
             {"eps": 8, "steps": 10}, {"eps": 2, "steps": 2000}]
    it = from_local_iterable(items).for_each(AccumulateUntil({
        "episodes": (lambda r: r["eps"], 4), "steps": (lambda r: r["steps"], 1000)}))
    first = next(it)
    assert first == items[:3]  # 4 episodes after two items, but only 510 steps
    assert it.metrics.info["accumulated"] == {"episodes": 6, "steps": 1110}
    assert next(it) == items[3:]
    with pytest.raises(StopIteration):  # nothing left: the partial list is dropped
        next(it)


def test_not_ready_passes_through_without_closing_a_list():
    it = from_local_iterable([1, NOT_READY, 1, NOT_READY, 1]).for_each(
        AccumulateUntil({"n": (lambda x: x, 3)}))
    assert list(it._internal()) == [NOT_READY, NOT_READY, [1, 1, 1]]


def test_needs_a_measure():
    with pytest.raises(ValueError, match="at least one measure"):
        AccumulateUntil({})


def test_filter_sets_an_operators_metrics():
    class Odd(Operator):
        def __call__(self, x):
            self.metrics.counters["seen"] += 1
            return x % 2 == 1

    it = from_local_iterable(range(6)).filter(Odd())
    assert list(it) == [1, 3, 5]
    assert it.metrics.counters["seen"] == 6
