"""Replay buffers: ring storage vs a row-by-row reference, uniform and prioritized sampling
statistics, hand-computed importance weights, priority updates, checkpoints and errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rldataflow.data import (
    LinearSchedule,
    MultiAgentBatch,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    SampleBatch,
)
from rldataflow.utils.checkpoint import load_checkpoint, save_checkpoint


def make_batch(n: int, offset: int = 0) -> SampleBatch:
    """CartPole-like transitions whose row k carries the id `offset + k` in every column."""
    ids = np.arange(offset, offset + n)
    return SampleBatch(
        {
            SampleBatch.OBS: ids[:, None].repeat(4, 1).astype(np.float32),
            SampleBatch.NEXT_OBS: (ids[:, None].repeat(4, 1) + 0.5).astype(np.float32),
            SampleBatch.ACTIONS: ids.astype(np.int64),
            SampleBatch.REWARDS: ids.astype(np.float32),
            SampleBatch.TERMINATEDS: ids % 3 == 0,
        }
    )


def stored_ids(buf: ReplayBuffer) -> np.ndarray:
    return buf.get_state()["columns"][SampleBatch.ACTIONS]


def chi_square_bound(dof: int, z: float = 4.75) -> float:
    """Upper quantile of chi-square(dof) at the normal quantile z (Wilson-Hilferty; z = 4.75 is
    a one-sided tail of ~1e-6), so a correct sampler fails about once in a million seeds."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


# --------------------------------------------------------------------------------------------
# uniform buffer: storage


def test_lazy_allocation_keeps_dtypes_and_row_shapes():
    buf = ReplayBuffer(100)
    assert len(buf) == 0 and buf.columns == [] and buf.capacity == 100
    buf.add(make_batch(3))
    state = buf.get_state()["columns"]
    assert state[SampleBatch.OBS].dtype == np.float32 and state[SampleBatch.OBS].shape == (3, 4)
    assert state[SampleBatch.ACTIONS].dtype == np.int64
    assert state[SampleBatch.TERMINATEDS].dtype == np.bool_
    assert all(v.shape[0] == 100 for v in buf._storage.values())  # full capacity, once


def test_wrap_around_contents():
    buf = ReplayBuffer(5)
    buf.add(make_batch(3, offset=0))
    assert stored_ids(buf).tolist() == [0, 1, 2]
    buf.add(make_batch(4, offset=3))  # rows 3, 4 fill the end; 5, 6 overwrite slots 0, 1
    assert stored_ids(buf).tolist() == [5, 6, 2, 3, 4]
    assert len(buf) == 5 and buf.num_added == 7
    buf.add(make_batch(12, offset=7))  # larger than capacity: its last 5 rows survive
    assert sorted(stored_ids(buf).tolist()) == [14, 15, 16, 17, 18]
    # ... in the slots a row-by-row add would have used: (7 + k) % 5 for the row with id 7 + k
    assert stored_ids(buf).tolist() == [15, 16, 17, 18, 14]
    assert buf.num_added == 19
    cols = buf.get_state()["columns"]
    np.testing.assert_array_equal(cols[SampleBatch.OBS][:, 0], cols[SampleBatch.ACTIONS])
    np.testing.assert_array_equal(cols[SampleBatch.NEXT_OBS][:, 3], cols[SampleBatch.ACTIONS] + 0.5)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 20), st.lists(st.integers(0, 45), max_size=12))
def test_ring_matches_row_by_row_reference(capacity, sizes):
    buf = ReplayBuffer(capacity)
    ref = np.full(capacity, -1)
    pos = total = 0
    for n in sizes:
        buf.add(make_batch(n, offset=total))
        for k in range(n):
            ref[pos] = total + k
            pos = (pos + 1) % capacity
        total += n
    size = min(total, capacity)
    assert len(buf) == size and buf.num_added == total
    if size:
        np.testing.assert_array_equal(stored_ids(buf), ref[:size])
        assert buf.get_state()["next_index"] == pos


def test_memory_is_bounded():
    buf = ReplayBuffer(1000)
    buf.add(make_batch(200))
    nbytes = sum(v.nbytes for v in buf._storage.values())
    for i in range(100):
        buf.add(make_batch(200, offset=200 * (i + 1)))
    assert sum(v.nbytes for v in buf._storage.values()) == nbytes
    assert len(buf) == 1000 and buf.num_added == 20_200


# --------------------------------------------------------------------------------------------
# uniform buffer: sampling


def test_sample_columns_and_consistency():
    buf = ReplayBuffer(50, seed=0)
    buf.add(make_batch(30))
    s = buf.sample(64)
    assert isinstance(s, SampleBatch) and s.count == 64
    assert set(s.columns) == {*make_batch(1).columns, "batch_indexes"}
    assert s["batch_indexes"].dtype == np.int64
    assert s[SampleBatch.OBS].shape == (64, 4) and s[SampleBatch.OBS].dtype == np.float32
    # every row is the stored row its batch index points at (ids == slots here)
    np.testing.assert_array_equal(s[SampleBatch.ACTIONS], s["batch_indexes"])
    assert s["batch_indexes"].min() >= 0 and s["batch_indexes"].max() < 30
    assert buf.sample(0).count == 0


def test_sample_is_a_copy():
    buf = ReplayBuffer(4, seed=0)
    buf.add(make_batch(4))
    s = buf.sample(8)
    before = s[SampleBatch.ACTIONS].copy()
    buf.add(make_batch(4, offset=100))  # overwrites everything
    np.testing.assert_array_equal(s[SampleBatch.ACTIONS], before)


def test_uniform_frequencies():
    buf = ReplayBuffer(10, seed=1)
    buf.add(make_batch(8))  # only 8 of 10 slots filled: empty slots must never be drawn
    draws = 100_000
    counts = np.bincount(buf.sample(draws)["batch_indexes"], minlength=10)
    assert counts[8:].sum() == 0
    expected = draws / 8
    chi2 = ((counts[:8] - expected) ** 2 / expected).sum()
    assert chi2 < chi_square_bound(7)


def test_seed_makes_sampling_reproducible():
    a, b = ReplayBuffer(100, seed=7), ReplayBuffer(100, seed=7)
    for buf in (a, b):
        buf.add(make_batch(60))
    np.testing.assert_array_equal(a.sample(32)["batch_indexes"], b.sample(32)["batch_indexes"])


# --------------------------------------------------------------------------------------------
# uniform buffer: errors


def test_different_columns_names_them():
    buf = ReplayBuffer(10)
    buf.add(make_batch(2))
    other = make_batch(2)
    del other[SampleBatch.REWARDS]
    other["advantages"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"missing \['rewards'\], extra \['advantages'\]"):
        buf.add(other)
    assert len(buf) == 2  # nothing written


def test_shape_and_dtype_mismatch():
    buf = ReplayBuffer(10)
    buf.add(make_batch(2))
    bad = make_batch(2)
    bad[SampleBatch.OBS] = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"'obs' has per-row shape \(5,\)"):
        buf.add(bad)
    bad = make_batch(2)
    bad[SampleBatch.ACTIONS] = np.zeros(2, np.float32)  # float into the int64 column
    with pytest.raises(ValueError, match="'actions' has dtype float32"):
        buf.add(bad)
    ok = make_batch(2)
    ok[SampleBatch.REWARDS] = np.ones(2, np.float64)  # same kind: stored as float32
    buf.add(ok)
    assert len(buf) == 4


def test_other_errors():
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        ReplayBuffer(0)
    buf = ReplayBuffer(10)
    with pytest.raises(ValueError, match="empty ReplayBuffer"):
        buf.sample(1)
    with pytest.raises(TypeError, match="one buffer per policy"):
        buf.add(MultiAgentBatch({"p0": make_batch(2)}, env_steps=2))
    with pytest.raises(ValueError, match="'batch_indexes'"):
        buf.add(SampleBatch({"obs": np.zeros(2), "batch_indexes": np.zeros(2, np.int64)}))
    with pytest.raises(ValueError, match="dtype object"):
        buf.add(SampleBatch({"obs": np.zeros(2), "info": np.array([None, 1], dtype=object)}))
    assert buf.columns == []  # the failed first add allocated nothing
    with pytest.raises(ValueError, match="has length 1"):
        buf.add({"obs": np.zeros(2), "rewards": np.zeros(1)})  # plain dicts are validated too
    buf.add(dict(make_batch(2)))
    with pytest.raises(ValueError, match="non-negative integer"):
        buf.sample(-1)
    buf.add(SampleBatch())  # no columns: nothing to do
    buf.add(make_batch(0))
    assert len(buf) == 2 and buf.num_added == 2


# --------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplayBuffer])
def test_state_round_trip_through_a_checkpoint(cls, tmp_path):
    buf = cls(8, seed=3)
    buf.add(make_batch(11))
    if cls is PrioritizedReplayBuffer:
        buf.update_priorities(np.array([0, 5, 7]), np.array([4.0, 0.5, 9.0]))
    state = buf.get_state()
    save_checkpoint(tmp_path / "ckpt", {"replay": state})  # only arrays and ints: no pickle
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    restored = cls(8, seed=999)
    restored.set_state(loaded["replay"])
    assert len(restored) == len(buf) and restored.num_added == buf.num_added == 11
    np.testing.assert_array_equal(stored_ids(restored), stored_ids(buf))
    # the rng came along: both sample the same rows (and weights) from here on
    a, b = buf.sample(16), restored.sample(16)
    for key in a.columns:
        np.testing.assert_array_equal(a[key], b[key])
    a_add, b_add = make_batch(3, offset=50), make_batch(3, offset=50)
    buf.add(a_add)
    restored.add(b_add)
    np.testing.assert_array_equal(stored_ids(restored), stored_ids(buf))
    if cls is PrioritizedReplayBuffer:
        np.testing.assert_array_equal(restored.priorities(), buf.priorities())
        assert restored.max_priority == buf.max_priority


def test_state_of_an_empty_buffer_and_errors():
    empty = ReplayBuffer(4).get_state()
    other = ReplayBuffer(4)
    other.set_state(empty)
    assert len(other) == 0
    with pytest.raises(ValueError, match="capacity 4, this buffer has 5"):
        ReplayBuffer(5).set_state(empty)
    with pytest.raises(ValueError, match="version"):
        other.set_state({**empty, "version": 99})
    full = ReplayBuffer(4)
    full.add(make_batch(3))
    bad = {**full.get_state(), "next_index": 1}  # not full, so next_index must equal size
    with pytest.raises(ValueError, match="inconsistent"):
        other.set_state(bad)
    bad = {**full.get_state(), "rng": np.zeros(5, np.uint64)}
    with pytest.raises(ValueError, match="6 words"):
        other.set_state(bad)
    assert len(other) == 0 and other.columns == []  # a refused state changes nothing
    with pytest.raises(ValueError, match="uniform ReplayBuffer"):
        PrioritizedReplayBuffer(4).set_state(full.get_state())
    p = PrioritizedReplayBuffer(4, alpha=0.5)
    p.add(make_batch(2))
    with pytest.raises(ValueError, match="alpha=0.5, this buffer has alpha=0.6"):
        PrioritizedReplayBuffer(4, alpha=0.6).set_state(p.get_state())


# --------------------------------------------------------------------------------------------
# prioritized buffer


def prioritized(priorities, alpha=1.0, seed=0, capacity=None) -> PrioritizedReplayBuffer:
    n = len(priorities)
    buf = PrioritizedReplayBuffer(capacity or n, alpha=alpha, seed=seed, eps=0.0)
    buf.add(make_batch(n))
    buf.update_priorities(np.arange(n), np.asarray(priorities, dtype=np.float64))
    return buf


@pytest.mark.parametrize(
    ("alpha", "batch_size", "draws"),
    [(1.0, 1000, 200_000), (0.5, 7, 70_007), (1.0, 1, 20_000)],
)
def test_sampling_frequencies_match_priorities(alpha, batch_size, draws):
    priorities = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 0.25])
    buf = prioritized(priorities, alpha=alpha, capacity=10)  # 2 empty slots: never drawn
    counts = np.zeros(10, dtype=np.int64)
    for _ in range(draws // batch_size):
        counts += np.bincount(buf.sample(batch_size, beta=0.4)["batch_indexes"], minlength=10)
    n = counts.sum()
    assert counts[8:].sum() == 0
    probs = priorities**alpha / (priorities**alpha).sum()
    expected = n * probs
    # Pearson chi-square against the multinomial; stratified draws have *less* variance than
    # the multinomial (same expectation), so the bound is conservative for them.
    chi2 = ((counts[:8] - expected) ** 2 / expected).sum()
    assert chi2 < chi_square_bound(7), (counts, expected)
    # and each item alone within 5 standard deviations of its expected frequency
    sd = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts[:8] - expected) < 5 * sd)


def test_stratified_sampling_spreads_one_batch_over_the_mass():
    # 4 equal items, batch of 4: one draw per quarter of the mass -> each item exactly once
    buf = prioritized([1.0, 1.0, 1.0, 1.0])
    for _ in range(20):
        assert sorted(buf.sample(4)["batch_indexes"].tolist()) == [0, 1, 2, 3]


def test_importance_weights_hand_computed():
    # priorities [1, 2, 3, 4], alpha = 1, beta = 0.5, N = 4:
    #   P       = p / 10            = [0.1, 0.2, 0.3, 0.4]
    #   N * P                       = [0.4, 0.8, 1.2, 1.6]
    #   w       = (N * P) ** -0.5   = [1.5811388, 1.1180340, 0.9128709, 0.7905694]
    #   max_w   = (N * P_min) ** -0.5 = 0.4 ** -0.5 = 1.5811388
    #   w/max_w                     = [1.0, 0.7071068, 0.5773503, 0.5]
    expected = np.array([1.0, 0.70710678, 0.57735027, 0.5])
    buf = prioritized([1.0, 2.0, 3.0, 4.0])
    s = buf.sample(400, beta=0.5)
    assert s["weights"].dtype == np.float32
    np.testing.assert_allclose(s["weights"], expected[s["batch_indexes"]], rtol=1e-6)
    assert set(s["batch_indexes"].tolist()) == {0, 1, 2, 3}
    # max_w comes from the smallest priority in the *buffer*, not in the batch: a batch without
    # item 0 still has weights below 1
    s2 = buf.sample(1, beta=0.5)
    while s2["batch_indexes"][0] == 0:
        s2 = buf.sample(1, beta=0.5)
    assert s2["weights"][0] == pytest.approx(expected[s2["batch_indexes"][0]], rel=1e-6)
    # beta = 0: no correction
    assert np.all(buf.sample(10, beta=0.0)["weights"] == 1.0)


def test_new_items_get_max_priority_and_alpha_applies():
    buf = PrioritizedReplayBuffer(6, alpha=0.5, eps=0.0)
    buf.add(make_batch(2))
    np.testing.assert_allclose(buf.priorities(), [1.0, 1.0])  # initial max priority 1
    buf.update_priorities(np.array([0, 1]), np.array([16.0, 0.25]))
    np.testing.assert_allclose(buf.priorities(), [4.0, 0.5])  # stored as priority ** alpha
    buf.add(make_batch(2, offset=2))
    np.testing.assert_allclose(buf.priorities(), [4.0, 0.5, 4.0, 4.0])
    assert buf.max_priority == 16.0
    buf.add(make_batch(3, offset=4))  # wraps: slot 0 gets a new row and the max priority
    np.testing.assert_allclose(buf.priorities(), [4.0, 0.5, 4.0, 4.0, 4.0, 4.0])


def test_eps_is_added():
    buf = PrioritizedReplayBuffer(2, alpha=1.0, eps=0.5)
    buf.add(make_batch(2))
    buf.update_priorities(np.array([0, 1]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(buf.priorities(), [1.5, 2.5])


def test_update_priorities_changes_later_sampling():
    buf = prioritized([1.0] * 8)
    before = np.bincount(buf.sample(8000)["batch_indexes"], minlength=8)
    assert np.all(before == 1000)  # stratified over equal masses: exact
    buf.update_priorities(np.array([3]), np.array([93.0]))  # item 3 now holds 93% of the mass
    after = np.bincount(buf.sample(10_000)["batch_indexes"], minlength=8)
    assert abs(after[3] - 9300) <= 1  # stratified: off by at most one draw per boundary
    assert after.sum() == 10_000


def test_duplicate_indexes_last_priority_wins():
    buf = prioritized([1.0, 1.0, 1.0])
    buf.update_priorities(np.array([2, 0, 2, 2]), np.array([5.0, 3.0, 7.0, 4.0]))
    np.testing.assert_allclose(buf.priorities(), [3.0, 1.0, 4.0])
    assert buf.max_priority == 7.0  # the max seen includes overwritten values


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_bad_priorities_are_refused(bad):
    buf = prioritized([1.0, 1.0])
    with pytest.raises(ValueError, match=r"finite and > 0; priorities\[1\]"):
        buf.update_priorities(np.array([0, 1]), np.array([2.0, bad]))
    np.testing.assert_allclose(buf.priorities(), [1.0, 1.0])  # nothing applied


def test_prioritized_errors():
    buf = prioritized([1.0, 1.0], capacity=4)
    with pytest.raises(IndexError, match="out of range"):
        buf.update_priorities(np.array([2]), np.array([1.0]))  # slot 2 not filled yet
    with pytest.raises(ValueError, match="2 indexes but 1 priorities"):
        buf.update_priorities(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(TypeError, match="integers"):
        buf.update_priorities(np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="beta"):
        buf.sample(2, beta=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedReplayBuffer(4, alpha=-1.0)
    with pytest.raises(ValueError, match="'weights'"):
        buf.add(SampleBatch({**make_batch(1), "weights": np.ones(1)}))
    with pytest.raises(ValueError, match="empty PrioritizedReplayBuffer"):
        PrioritizedReplayBuffer(4).sample(1)
    buf.update_priorities(np.array([], dtype=np.int64), np.array([]))  # no-op
    assert buf.sample(0, beta=0.4)["weights"].shape == (0,)


def test_prioritized_memory_is_bounded():
    buf = PrioritizedReplayBuffer(500, seed=0)
    sizes = None
    for i in range(50):
        buf.add(make_batch(200, offset=200 * i))
        s = buf.sample(64)
        buf.update_priorities(s["batch_indexes"], np.abs(np.sin(s["batch_indexes"])) + 0.1)
        now = (sum(v.nbytes for v in buf._storage.values()), buf._sum_tree.tree.nbytes,
               buf._min_tree.tree.nbytes)
        assert sizes is None or now == sizes
        sizes = now
    assert len(buf) == 500


# --------------------------------------------------------------------------------------------
# schedule


def test_linear_schedule():
    beta = LinearSchedule(0.4, 1.0, steps=100)
    assert beta.value(0) == 0.4 and beta(-5) == 0.4
    assert beta.value(50) == pytest.approx(0.7)
    assert beta(100) == 1.0 and beta(10**9) == 1.0
    assert LinearSchedule(1.0, 0.1, steps=10).value(5) == pytest.approx(0.55)  # decreasing
    assert LinearSchedule(0.3, 0.9, steps=0).value(0) == 0.9
    with pytest.raises(ValueError, match="steps"):
        LinearSchedule(0.0, 1.0, steps=-1)


def test_a_buffer_bigger_than_the_machine_is_refused_in_one_line():
    import psutil

    ram = psutil.virtual_memory().total
    rows = int(ram // (84 * 84 * 4)) + 1  # Atari frame stacks: one more row than RAM holds
    buf = ReplayBuffer(capacity=rows, seed=0)
    frames = SampleBatch({"obs": np.zeros((2, 84, 84, 4), np.uint8)})
    with pytest.raises(MemoryError, match=r"needs .* GiB, more than this machine's .*buffer_size"):
        buf.add(frames)
    fits = ReplayBuffer(capacity=rows // 8, seed=0)  # lazily mapped: costs nothing until filled
    fits.add(frames)
    assert len(fits) == 2
