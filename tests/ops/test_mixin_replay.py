"""MixInReplay: new batches pass, replays follow at the configured proportion, memory bounded."""

from __future__ import annotations

import numpy as np
import pytest

from rldataflow.data import SampleBatch
from rldataflow.flow import from_local_iterable
from rldataflow.ops import MixInReplay


def _batches(n):
    return [SampleBatch({"x": np.full(4, i)}, stats={"episode_returns": [float(i)]})
            for i in range(n)]


def _ids(batch):
    return int(batch["x"][0])


def test_every_new_batch_passes_then_replays_follow():
    out = from_local_iterable(_batches(200)).for_each(MixInReplay(2.0, capacity=10)).take(600)
    ids = [_ids(b) for b in out]
    new_positions = [i for i, b in enumerate(out) if b.stats]
    assert new_positions == list(range(0, 600, 3))  # new, replay, replay, new, ...
    assert [ids[i] for i in new_positions] == list(range(200))
    for i, b in enumerate(out):
        if not b.stats:  # a replay: from the last `capacity` new batches, stats dropped
            newest = ids[max(p for p in new_positions if p < i)]
            assert newest - 10 < ids[i] <= newest


@pytest.mark.parametrize("proportion", [0.0, 0.25, 1.5])
def test_fractional_proportion_on_average(proportion):
    it = from_local_iterable(_batches(4000)).for_each(MixInReplay(proportion, capacity=50))
    out = list(it)
    replayed = sum(1 for b in out if not b.stats)
    assert replayed / 4000 == pytest.approx(proportion, abs=0.05)
    assert it.metrics.counters["env_steps_replayed"] == 4 * replayed


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        MixInReplay(1.0, capacity=0)
    with pytest.raises(ValueError, match="replay_proportion"):
        MixInReplay(-1.0, capacity=5)
