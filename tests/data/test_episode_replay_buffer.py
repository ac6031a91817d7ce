"""EpisodeReplayBuffer: split into episodes, bounded capacity, padding and mask, chunks."""

from __future__ import annotations

import numpy as np
import pytest

from rldataflow.data import EpisodeReplayBuffer, SampleBatch


def rollout(eps, env=None):
    eps = np.asarray(eps)
    return SampleBatch({"obs": np.arange(len(eps), dtype=np.float32)[:, None].repeat(2, 1),
                        "eps_id": eps,
                        "env_id": np.zeros(len(eps), np.int64) if env is None else np.asarray(env)})


def test_splits_on_episode_and_env_changes_and_drops_the_oldest():
    buf = EpisodeReplayBuffer(capacity=3, seed=0)
    buf.add(rollout([0, 0, 0, 1, 1, 1], env=[0, 0, 0, 0, 1, 1]))   # 3 episodes
    assert buf.episode_lengths() == [3, 1, 2] and buf.num_added == 3
    buf.add(rollout([5, 5, 5, 5]))
    assert len(buf) == 3 and buf.num_added == 4
    assert buf.episode_lengths() == [1, 2, 4]   # the oldest (3 steps) is gone


def test_samples_are_padded_with_zeros_and_masked():
    buf = EpisodeReplayBuffer(capacity=10, seed=1)
    buf.add(rollout([0, 0, 0, 1]))
    batch = buf.sample(64)
    assert batch.count == 64 and batch["obs"].shape == (64, 3, 2)
    lengths = batch["mask"].sum(1)
    assert set(lengths.tolist()) == {1.0, 3.0}
    short = batch["obs"][lengths == 1]
    assert np.all(short[:, 1:] == 0) and np.all(short[:, 0] == 3.0)
    np.testing.assert_array_equal(batch["obs"][lengths == 3][0, :, 0], [0, 1, 2])


def test_long_episodes_are_chunked_and_bad_arguments_rejected():
    buf = EpisodeReplayBuffer(capacity=10, max_episode_len=2)
    buf.add(rollout([0] * 5))
    assert buf.episode_lengths() == [2, 2, 1]
    with pytest.raises(ValueError, match="capacity"):
        EpisodeReplayBuffer(0)
    with pytest.raises(ValueError, match="empty"):
        EpisodeReplayBuffer(2).sample(1)
    with pytest.raises(KeyError, match="lacks columns"):
        buf.add(SampleBatch({"eps_id": np.zeros(2, np.int64)}))
