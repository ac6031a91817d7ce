"""RunningMeanStd: merging per-worker statistics equals the statistics of all the data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rldataflow.data.running_stats import RunningMeanStd

_rows = st.integers(0, 30).flatmap(
    lambda n: arrays(np.float64, (n, 3), elements=st.floats(-1e3, 1e3, allow_nan=False)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_rows, min_size=1, max_size=5))
def test_merge_equals_stats_of_concatenated_data(parts):
    merged = RunningMeanStd(3)
    for part in parts:
        merged.merge(RunningMeanStd(3).push(part))
    data = np.concatenate(parts, axis=0)
    assert merged.count == len(data)
    if len(data):
        np.testing.assert_allclose(merged.mean, data.mean(axis=0), rtol=1e-9, atol=1e-6)
    if len(data) >= 2:
        np.testing.assert_allclose(merged.var, data.var(axis=0), rtol=1e-7, atol=1e-4)


def test_hand_computed():
    stats = RunningMeanStd(1).push(np.array([[1.0], [3.0]])).merge(
        RunningMeanStd(1).push(np.array([[5.0], [7.0], [9.0]])))
    assert stats.count == 5
    assert stats.mean.tolist() == [5.0]
    assert stats.var.tolist() == [8.0]  # deviations 4, 2, 0, 2, 4 -> (16+4+0+4+16)/5
    assert RunningMeanStd(2).std().tolist() == [1.0, 1.0]  # identity before any data
    restored = RunningMeanStd.from_state(stats.state_dict())
    assert restored.count == 5 and restored.var.tolist() == [8.0]
