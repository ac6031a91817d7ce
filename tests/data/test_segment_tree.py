"""Segment trees vs brute force: batched updates (with repeated indices), reductions, searches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rldataflow.data.segment_tree import (
    MinSegmentTree,
    SegmentTree,
    SumSegmentTree,
    last_write_wins,
)


def assert_consistent(tree: SegmentTree) -> None:
    """Every internal node equals the operation over its two children."""
    t = tree.tree
    size = len(t) // 2
    for node in range(1, size):
        assert t[node] == tree._op(t[2 * node], t[2 * node + 1]), node


@st.composite
def update_batches(draw, max_capacity: int = 70):
    capacity = draw(st.integers(1, max_capacity))
    batches = draw(
        st.lists(
            st.lists(
                st.tuples(st.integers(0, capacity - 1), st.integers(0, 50)),
                min_size=0,
                max_size=2 * capacity + 3,  # big batches reach the dense (whole-level) path
            ),
            min_size=1,
            max_size=6,
        )
    )
    return capacity, batches


@settings(max_examples=200, deadline=None)
@given(update_batches(), st.data())
def test_sum_and_min_match_brute_force(case, data):
    capacity, batches = case
    sums, mins = SumSegmentTree(capacity), MinSegmentTree(capacity)
    ref_sum = np.zeros(capacity)
    ref_min = np.full(capacity, np.inf)
    for batch in batches:
        idx = np.array([i for i, _ in batch], dtype=np.int64)
        # integer-valued floats: every partial sum is exact, so equality is the right check
        vals = np.array([v for _, v in batch], dtype=np.float64)
        if data.draw(st.booleans(), label="as a range update"):
            # the same values written to a contiguous range instead (a ring buffer's add)
            start = data.draw(st.integers(0, capacity), label="start")
            end = min(capacity, start + len(vals))
            sums.update_range(start, end, vals[: end - start])
            mins.update_range(start, end, vals[: end - start])
            ref_sum[start:end] = vals[: end - start]
            ref_min[start:end] = vals[: end - start]
        else:
            sums.update(idx, vals)
            mins.update(idx, vals)
            for i, v in batch:  # one at a time: the meaning of "last write wins"
                ref_sum[i] = v
                ref_min[i] = v
        np.testing.assert_array_equal(sums.leaves, ref_sum)
        np.testing.assert_array_equal(mins.leaves, ref_min)
        assert sums.total() == ref_sum.sum()
        assert mins.min() == ref_min.min()
        assert_consistent(sums)
        assert_consistent(mins)
    for start in range(capacity + 1):
        for end in range(start, capacity + 1):
            assert sums.reduce(start, end) == ref_sum[start:end].sum()
            assert mins.reduce(start, end) == (ref_min[start:end].min() if end > start else np.inf)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=80).filter(lambda v: sum(v) > 0),
    st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40),
)
def test_prefixsum_search_matches_searchsorted(leaf_values, fractions):
    values = np.array(leaf_values, dtype=np.float64)
    tree = SumSegmentTree(len(values))
    tree.update(np.arange(len(values)), values)
    cumsum = np.cumsum(values)
    total = cumsum[-1]
    # random queries plus every exact boundary (where ties decide) and 0
    queries = np.concatenate([np.array(fractions) * total, cumsum[:-1], [0.0]])
    queries = queries[queries < total]
    found = tree.find_prefixsum_idx(queries)
    expected = np.searchsorted(cumsum, queries, side="right")
    np.testing.assert_array_equal(found, expected)
    assert found.dtype == np.int64
    assert np.all(values[found] > 0)  # a leaf without mass is never found


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(1e-9, 1e9)), min_size=1, max_size=100
    ).filter(lambda v: sum(v) > 0),
    st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40),
)
def test_prefixsum_search_with_round_off(leaf_values, fractions):
    # arbitrary floats: the tree's pairwise sums and np.cumsum round differently, so compare
    # with a relative tolerance, and check that round-off never yields a leaf without mass
    values = np.array(leaf_values)
    tree = SumSegmentTree(len(values))
    tree.update(np.arange(len(values)), values)
    total = tree.total()
    queries = np.concatenate([np.array(fractions) * total, [np.nextafter(total, 0.0)]])
    found = tree.find_prefixsum_idx(queries)
    assert np.all(values[found] > 0)
    cumsum = np.cumsum(values)
    before = np.where(found > 0, cumsum[found - 1], 0.0)
    slack = 1e-9 * total
    assert np.all(before <= queries + slack)
    assert np.all(cumsum[found] > queries - slack)


def test_prefixsum_search_clamps_out_of_range_queries():
    tree = SumSegmentTree(6)  # padded to 8 leaves
    tree.update(np.arange(5), np.array([1.0, 2.0, 0.0, 3.0, 0.0]))
    total = tree.total()
    found = tree.find_prefixsum_idx(np.array([total, total + 5.0, np.nextafter(total, 0.0)]))
    # the last leaf with mass, never a massless or padding leaf
    assert found.tolist() == [3, 3, 3]


def test_prefixsum_search_negative_queries_and_no_mass():
    tree = SumSegmentTree(4)
    assert tree.find_prefixsum_idx(np.array([0.0, 1.0])).tolist() == [0, 0]  # no mass at all
    tree.update(np.arange(4), np.array([0.0, 0.0, 2.0, 1.0]))
    # negative queries count as 0: the first leaf with mass, like searchsorted(side="right")
    assert tree.find_prefixsum_idx(np.array([-3.0, 0.0])).tolist() == [2, 2]


def test_last_write_wins_and_assume_unique():
    i, v = last_write_wins(np.array([5, 2, 5, 2, 7]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert i.tolist() == [2, 5, 7] and v.tolist() == [4.0, 3.0, 5.0]
    i, v = last_write_wins(np.array([1, 4]), np.array([9.0, 8.0]))  # already unique: untouched
    assert i.tolist() == [1, 4] and v.tolist() == [9.0, 8.0]
    tree = SumSegmentTree(8)
    tree.update(np.array([6, 1, 3]), np.array([1.0, 2.0, 4.0]), assume_unique=True)  # unsorted
    assert tree.total() == 7.0 and tree.leaves.tolist() == [0, 2, 0, 4, 0, 0, 1, 0]
    assert_consistent(tree)


def test_update_range():
    tree = MinSegmentTree(10)
    tree.update_range(7, 10, 3.0)
    tree.update_range(0, 2, np.array([5.0, 4.0]))
    tree.update_range(4, 4, 0.0)  # empty range: no-op
    assert tree.leaves.tolist()[:3] == [5.0, 4.0, np.inf] and tree.min() == 3.0
    assert tree.reduce(0, 5) == 4.0
    assert_consistent(tree)
    with pytest.raises(IndexError, match="bad range"):
        tree.update_range(8, 11, 1.0)


def test_prefixsum_search_keeps_query_shape_and_does_not_modify_input():
    tree = SumSegmentTree(4)
    tree.update(np.arange(4), np.array([1.0, 1.0, 1.0, 1.0]))
    q = np.array([[0.5, 1.5], [2.5, 3.5]])
    out = tree.find_prefixsum_idx(q)
    assert out.tolist() == [[0, 1], [2, 3]]
    assert q.tolist() == [[0.5, 1.5], [2.5, 3.5]]
    assert tree.find_prefixsum_idx(np.array([])).shape == (0,)


def test_float_sums_do_not_drift_over_many_updates():
    rng = np.random.default_rng(0)
    tree = SumSegmentTree(1000)
    ref = np.zeros(1000)
    for _ in range(300):
        idx = rng.integers(0, 1000, size=64)
        vals = rng.random(64) * 10 ** rng.uniform(-3, 3, size=64)
        tree.update(idx, vals)
        for i, v in zip(idx, vals, strict=True):  # sequential: the last duplicate wins
            ref[i] = v
    # parents are recomputed, not adjusted by deltas: only one summation's round-off remains
    assert tree.total() == pytest.approx(ref.sum(), rel=1e-12)


def test_scalar_value_broadcasts_and_capacity_one():
    tree = SumSegmentTree(5)
    tree.update(np.array([0, 2, 4]), 2.5)
    assert tree.leaves.tolist() == [2.5, 0.0, 2.5, 0.0, 2.5]
    one = MinSegmentTree(1)
    one.update(np.array([0]), np.array([3.0]))
    assert one.min() == 3.0 and one.reduce(0, 1) == 3.0
    s1 = SumSegmentTree(1)
    s1.update(np.array([0, 0]), np.array([1.0, 4.0]))
    assert s1.total() == 4.0 and s1.find_prefixsum_idx(np.array([3.9])).tolist() == [0]


def test_set_all_rebuilds():
    tree = MinSegmentTree(5)
    tree.update(np.array([1]), np.array([-1.0]))
    tree.set_all(np.array([5.0, 4.0, 3.0, 6.0, 7.0]))
    assert tree.min() == 3.0 and tree.reduce(3, 5) == 6.0
    assert_consistent(tree)
    with pytest.raises(ValueError, match="needs 5 values"):
        tree.set_all(np.zeros(4))


def test_getitem_and_leaves_view():
    tree = SumSegmentTree(3)
    tree.update(np.array([1]), np.array([7.0]))
    assert tree[1] == 7.0 and tree[np.array([0, 1])].tolist() == [0.0, 7.0]
    with pytest.raises(ValueError):
        tree.leaves[0] = 1.0  # read-only: writing a leaf directly would leave parents stale


def test_errors():
    with pytest.raises(ValueError, match="capacity must be positive"):
        SumSegmentTree(0)
    tree = SumSegmentTree(4)
    with pytest.raises(IndexError, match="index 4 out of range"):
        tree.update(np.array([0, 4]), np.array([1.0, 1.0]))
    with pytest.raises(IndexError, match="index -1 out of range"):
        tree.update(np.array([-1]), np.array([1.0]))
    with pytest.raises(IndexError):
        tree[np.array([5])]
    with pytest.raises(IndexError, match="bad range"):
        tree.reduce(3, 2)
    tree.update(np.array([], dtype=np.int64), np.array([]))  # empty update is a no-op
    assert tree.total() == 0.0
