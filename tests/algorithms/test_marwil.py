"""MARWIL / BC: the loss against hand-computed numbers, returns-to-go, continuous actions,
configs, checkpoints and evaluation on the workers."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.algorithms.marwil import (
    RETURNS,
    MarwilPolicy,
    marwil_loss,
    returns_to_go,
)
from rldataflow.data import SampleBatch
from rldataflow.data.dataset import DatasetWriter
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

pytest.importorskip("pyarrow")

INLINE = dict(runtime="inline", num_workers=0)


def zero_policy(action_space, **config) -> MarwilPolicy:
    obs_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    cfg = {**dict(beta=1.0, vf_coeff=0.5, max_weight=20.0,
                  moving_average_sqd_adv_norm_start=100.0,
                  moving_average_sqd_adv_norm_update_rate=0.01), **config}
    policy = MarwilPolicy(obs_space, action_space, cfg, loss_fn=marwil_loss, seed=0)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.zero_()   # logits 0 (uniform), V = 0, log_std = 0
    return policy


def test_marwil_loss_matches_hand_computed_numbers_discrete():
    policy = zero_policy(gymnasium.spaces.Discrete(3))
    returns = np.array([0.0, 10.0, -10.0, 40.0], np.float32)
    batch = {SampleBatch.OBS: torch.zeros(4, 2), SampleBatch.ACTIONS: torch.tensor([0, 1, 2, 1]),
             RETURNS: torch.from_numpy(returns)}
    loss, stats = marwil_loss(policy, batch)
    c2 = 100.0 + 0.01 * (np.mean(returns.astype(np.float64) ** 2) - 100.0)  # A = R - 0
    weights = np.minimum(np.exp(returns / math.sqrt(c2)), 20.0)
    logp = -math.log(3.0)
    expected = -np.mean(weights * logp) + 0.5 * 0.5 * np.mean(returns ** 2)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert policy.learner.sqd_adv_norm == pytest.approx(c2)
    assert float(stats["mean_weight"].detach()) == pytest.approx(weights.mean(), rel=1e-5)
    assert weights.max() == 20.0  # the clip was hit, and applied


def test_bc_loss_is_negative_log_likelihood_continuous():
    policy = zero_policy(gymnasium.spaces.Box(-2, 2, (2,), np.float32), beta=0.0)
    actions = np.array([[0.5, -1.0], [0.0, 2.0]], np.float32)
    batch = {SampleBatch.OBS: torch.zeros(2, 2), SampleBatch.ACTIONS: torch.from_numpy(actions)}
    loss, stats = marwil_loss(policy, batch)
    logp = (-0.5 * actions ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)  # N(0, 1) per dim
    assert float(loss.detach()) == pytest.approx(-logp.mean(), rel=1e-5)
    assert "vf_loss" not in stats


def test_returns_to_go_per_episode_piece_with_bootstrap():
    chunk = SampleBatch({
        SampleBatch.REWARDS: np.ones(5, np.float32),
        SampleBatch.TERMINATEDS: np.array([0, 0, 1, 0, 0], bool),
        SampleBatch.TRUNCATEDS: np.zeros(5, bool),
        SampleBatch.EPS_ID: np.array([1, 1, 1, 2, 2]),
        SampleBatch.BOOTSTRAP_VALUE: np.array([9, 9, 9, 0, 5], np.float32),
    })
    out = returns_to_go(0.5)(chunk)[RETURNS]
    np.testing.assert_allclose(out, [1.75, 1.5, 1.0, 2.75, 3.5])


def test_config_requires_input_and_bc_means_beta_zero(tmp_path):
    with pytest.raises(ConfigError, match="'input' is required"):
        rldataflow.build("marwil", **INLINE)
    with pytest.raises(ConfigError, match="'beta' must be 0 for bc"):
        rldataflow.build("bc", input=str(tmp_path), beta=1.0, **INLINE)


def test_bad_dataset_path_fails_at_build_naming_it(tmp_path):
    from rldataflow.data.dataset import DatasetError

    with pytest.raises(DatasetError, match="nowhere"):
        rldataflow.build("bc", input=str(tmp_path / "nowhere"), **INLINE)


def linear_pendulum_dataset(path, n=6000, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    actions = (obs @ np.array([[1.0], [-0.5], [0.8]], np.float32))
    with DatasetWriter(path, max_rows_per_file=2000) as w:
        w.write({SampleBatch.OBS: obs, SampleBatch.ACTIONS: actions,
                 SampleBatch.REWARDS: np.zeros(n, np.float32),
                 SampleBatch.TERMINATEDS: np.zeros(n, bool),
                 SampleBatch.TRUNCATEDS: (np.arange(n) % 200) == 199,
                 SampleBatch.EPS_ID: np.arange(n) // 200, SampleBatch.T: np.arange(n) % 200})
    return obs, actions


def test_bc_clones_a_continuous_policy(tmp_path):
    obs, actions = linear_pendulum_dataset(tmp_path / "ds")
    with rldataflow.build("bc", env="Pendulum-v1", input=str(tmp_path / "ds"),
                          evaluation_interval=0, lr=3e-3, **INLINE) as algo:
        policy = algo.workers.local_worker().policy
        test_obs = obs[:500]
        before = np.mean((policy.compute_actions(test_obs, explore=False)[0] - actions[:500])
                         ** 2)
        for _ in range(40):
            result = algo.train()
        after = np.mean((policy.compute_actions(test_obs, explore=False)[0] - actions[:500])
                        ** 2)
    assert result["env_steps_trained"] == 40 * 2048
    assert result["counters"]["dataset_rows_read"] >= 40 * 2048
    assert after < 0.02 < before, (before, after)


@pytest.mark.parametrize("name", ["marwil", "bc"])
def test_mixed_input_trains_on_dataset_and_fresh_samples_in_proportion(tmp_path, name):
    """input_sampled_fraction 0.25: three dataset batches, then one sampled with the current
    policy (given returns-to-go like the dataset's), in turn."""
    linear_pendulum_dataset(tmp_path / "ds", n=3000)
    seen: list[SampleBatch] = []
    with rldataflow.build(name, env="Pendulum-v1", input=str(tmp_path / "ds"),
                          evaluation_interval=0, input_sampled_fraction=0.25,
                          train_batch_size=256, minibatch_size=128, shuffle_buffer_size=512,
                          rollout_fragment_length=64, num_envs_per_worker=2,
                          min_time_s_per_iteration=0, **INLINE) as algo:
        policy = algo.workers.local_worker().policy
        learn = policy.learn_on_batch
        policy.learn_on_batch = lambda batch, *a, **k: (seen.append(batch), learn(batch, *a,
                                                                                  **k))[1]
        for _ in range(8):
            result = algo.train()
    fresh = [b for b in seen if SampleBatch.VF_PREDS in b]  # sampled here, not from the file
    n = len(seen) - len(seen) % 4  # whole rounds (an iteration may end mid-round)
    assert n >= 8
    assert [SampleBatch.VF_PREDS in b for b in seen[:n]] == [False, False, False, True] * (n // 4)
    assert result["env_steps_sampled"] == len(fresh) * 256
    assert result["env_steps_trained"] == len(seen) * 256
    if name == "marwil":  # the fresh rows got returns-to-go like the dataset's
        assert all("returns" in b for b in seen)


def test_marwil_checkpoint_keeps_the_advantage_norm(tmp_path):
    linear_pendulum_dataset(tmp_path / "ds", n=3000)
    with rldataflow.build("marwil", env="Pendulum-v1", input=str(tmp_path / "ds"),
                          evaluation_interval=0, **INLINE) as algo:
        algo.train()
        norm = algo.workers.local_worker().policy.learner.sqd_adv_norm
        assert norm != 100.0
        path = algo.save(tmp_path / "ckpt")
    with Algorithm.restore(path) as algo:
        assert algo.workers.local_worker().policy.learner.sqd_adv_norm == pytest.approx(norm)
        assert algo.iteration == 1


def test_a_dataset_of_another_env_is_one_clear_error(tmp_path):
    linear_pendulum_dataset(tmp_path / "ds", n=3000)
    with rldataflow.build("bc", env="CartPole-v1", input=str(tmp_path / "ds"),
                          **INLINE) as algo:
        with pytest.raises(Exception, match=r"observations have shape \(3,\), but the env's "
                                            r"\(preprocessed\) observations have \(4,\)"):
            algo.train()


def random_cartpole_dataset(path, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, max_rows_per_file=1000) as w:
        w.write({SampleBatch.OBS: rng.standard_normal((n, 4)).astype(np.float32),
                 SampleBatch.ACTIONS: rng.integers(0, 2, n),
                 SampleBatch.REWARDS: np.ones(n, np.float32),
                 SampleBatch.TERMINATEDS: (np.arange(n) % 20) == 19,
                 SampleBatch.TRUNCATEDS: np.zeros(n, bool),
                 SampleBatch.EPS_ID: np.arange(n) // 20, SampleBatch.T: np.arange(n) % 20})


def test_results_carry_an_evaluation_return_run_on_the_workers(tmp_path):
    random_cartpole_dataset(tmp_path / "ds")
    with rldataflow.build("bc", env="CartPole-v1", input=str(tmp_path / "ds"),
                          runtime="process", evaluation_num_workers=2, evaluation_interval=2,
                          evaluation_num_episodes=3) as algo:
        first = algo.train()
        second = algo.train()
    assert "evaluation/episode_return_mean" not in first
    assert second["evaluation/num_episodes"] == 3
    assert second["counters"]["evaluation_episodes"] == 3
    assert second["evaluation/episode_return_mean"] >= 1.0
    assert math.isnan(second["episode_return_mean"])      # nothing sampled into training
    assert second["env_steps_sampled"] == 0
