"""Observation normalization, reward scaling and schedules (the training aids of issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

import rldataflow
from rldataflow.data import SampleBatch
from rldataflow.policies import TorchPolicy
from rldataflow.policies.normalization import ObsNormalizer, RewardScaler, find_obs_normalizer
from rldataflow.policies.schedules import PiecewiseSchedule
from rldataflow.trainer import make_config
from rldataflow.utils.config import ConfigError


def test_normalizer_matches_numpy_over_many_batches():
    rng = np.random.default_rng(0)
    norm = ObsNormalizer((3,), clip=100.0)
    chunks = [rng.normal([1.0, -2.0, 50.0], [0.5, 3.0, 10.0], size=(n, 3)) for n in (1, 7, 300)]
    for chunk in chunks:
        norm.update(chunk)
    data = np.concatenate(chunks)
    x = rng.normal(size=(4, 3)).astype(np.float32) * 5
    expected = (x - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert norm.count.item() == len(data)


def test_normalizer_clips_and_starts_as_identity():
    norm = ObsNormalizer((2,), clip=5.0)
    x = torch.tensor([[3.0, -4.0]])
    assert torch.equal(norm(x), x)  # no data yet: mean 0, std 1
    norm.update(np.zeros((10, 2)) + np.array([[0.0, 1.0]]) * np.arange(10)[:, None])
    assert norm(torch.tensor([[1e6, -1e6]])).abs().max().item() == 5.0


def _policy(**config) -> TorchPolicy:
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    return TorchPolicy(obs_space, spaces.Discrete(2), {"obs_normalization": True, **config},
                       seed=0)


def _batch(n: int = 64, shift: float = 10.0) -> SampleBatch:
    rng = np.random.default_rng(1)
    return SampleBatch({
        SampleBatch.OBS: (rng.normal(size=(n, 4)) * 3 + shift).astype(np.float32),
        SampleBatch.ACTIONS: rng.integers(0, 2, n),
        SampleBatch.ACTION_LOGP: np.full(n, -0.69, np.float32),
        SampleBatch.ADVANTAGES: rng.normal(size=n).astype(np.float32),
        SampleBatch.VALUE_TARGETS: rng.normal(size=n).astype(np.float32),
        SampleBatch.VF_PREDS: np.zeros(n, np.float32),
    })


def test_learner_updates_statistics_and_they_travel_with_the_weights():
    learner_side, worker_side = _policy(), _policy()
    batch = _batch()
    learner_side.learn_on_batch(batch)
    stats = find_obs_normalizer(learner_side.model)
    np.testing.assert_allclose(stats.mean.numpy(), batch[SampleBatch.OBS].mean(0), rtol=1e-5)
    # The worker never updates; it receives the statistics with the weights.
    worker_side.set_weights(learner_side.get_weights())
    obs = batch[SampleBatch.OBS][:5]
    a = learner_side.compute_actions(obs, explore=False)[1][SampleBatch.ACTION_DIST_INPUTS]
    b = worker_side.compute_actions(obs, explore=False)[1][SampleBatch.ACTION_DIST_INPUTS]
    np.testing.assert_array_equal(a, b)
    assert find_obs_normalizer(worker_side.model).count.item() == len(batch)


def test_obs_normalization_refuses_images():
    image = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="obs_normalization needs flat observations"):
        TorchPolicy(image, spaces.Discrete(2), {"obs_normalization": True})


def test_reward_scaler_against_hand_computation():
    scaler = RewardScaler(num_envs=1, gamma=0.5, clip=None)
    rewards, returns, out = [1.0, 2.0, 4.0], [], []
    ret = 0.0
    for r in rewards:
        ret = 0.5 * ret + r
        returns.append(ret)
        out.append(scaler(np.array([r]), np.array([False]))[0])
    # returns 1, 2.5, 5.25: population variance of the returns seen so far after each step
    # (ones before two samples).
    var = [1.0, np.var(returns[:2]), np.var(returns[:3])]
    np.testing.assert_allclose(out, np.array(rewards) / np.sqrt(np.array(var) + 1e-8), rtol=1e-5)
    scaler(np.array([1.0]), np.array([True]))
    assert scaler.returns[0] == 0.0  # the accumulator ends with the episode


@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(-1, 1)), min_size=1, max_size=6),
       st.floats(0, 2e6))
@settings(max_examples=100, deadline=None)
def test_schedule_is_within_its_points_and_exact_at_them(points, t):
    points = sorted(points)
    schedule = PiecewiseSchedule([list(p) for p in points])
    values = [v for _, v in points]
    assert min(values) - 1e-9 <= schedule(t) <= max(values) + 1e-9
    assert schedule(points[-1][0] + 1) == points[-1][1]


def test_schedule_interpolates():
    schedule = PiecewiseSchedule([[0, 1.0], [100, 0.0], [200, 0.5]])
    assert schedule(50) == pytest.approx(0.5)
    assert schedule(150) == pytest.approx(0.25)
    assert schedule(-5) == 1.0 and schedule(1e9) == 0.5


@pytest.mark.parametrize("bad, match", [
    ([], "at least one"),
    ([[0, 1e-3], [10]], r"\[env_steps, value\]"),
    ([[100, 1e-3], [10, 0.0]], "non-decreasing"),
])
def test_bad_schedules_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=f"'lr_schedule'.*{match}"):
        make_config("ppo", lr_schedule=bad)


def test_ppo_applies_schedules_and_normalization_on_workers():
    config = dict(env="CartPole-v1", num_workers=1, runtime="inline", train_batch_size=512,
                  rollout_fragment_length=64, obs_normalization=True,
                  lr_schedule=[[0, 1e-3], [2048, 0.0]],
                  entropy_coeff_schedule=[[0, 0.02], [2048, 0.0]])
    with rldataflow.build("ppo", **config) as algo:
        results = [algo.train() for _ in range(5)]
        learner = [r["learner"] for r in results]
        sampled = [r["env_steps_sampled"] for r in results]
        # The schedule's clock: env steps sampled so far, the batch being trained on included.
        for stats, steps in zip(learner, sampled, strict=True):
            assert stats["cur_lr"] == pytest.approx(max(0.0, 1e-3 * (1 - steps / 2048)))
            assert stats["entropy_coeff"] == pytest.approx(max(0.0, 0.02 * (1 - steps / 2048)))
        local = algo.workers.local_worker().policy
        remote = algo.workers.remote_workers()[0]
        mean = find_obs_normalizer(local.model).mean.numpy()
        assert find_obs_normalizer(local.model).count.item() == 5 * 512
        remote_mean = remote.call("get_weights").result()["obs_normalizer.mean"]
        np.testing.assert_array_equal(mean, remote_mean)


def test_normalizer_statistics_are_restored_from_a_checkpoint(tmp_path, assert_same_state):
    config = dict(env="CartPole-v1", num_workers=0, runtime="inline", train_batch_size=256,
                  obs_normalization=True, reward_scaling=True)
    with rldataflow.build("ppo", **config) as algo:
        trained = algo.train()["env_steps_trained"]
        algo.save(tmp_path / "ckpt")
        before = algo.workers.local_worker().policy.get_state()
    restored = rldataflow.Algorithm.restore(tmp_path / "ckpt")
    try:
        after = restored.workers.local_worker().policy.get_state()
        assert after["weights"]["obs_normalizer.count"].item() == trained
        assert_same_state(before, after)
    finally:
        restored.stop()
