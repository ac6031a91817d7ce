"""IS / WIS off-policy estimates against a hand-computed example, and the op in a BC plan."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rldataflow
from rldataflow.data import SampleBatch as SB
from rldataflow.data.dataset import DatasetError
from rldataflow.ops.offline_evaluation import importance_sampling_estimates


def two_episodes() -> SB:
    # episode 7: rewards 1, 1; behaviour probabilities 1/2, 1/2; episode 9: reward 2, prob 1/4
    return SB({SB.EPS_ID: np.array([7, 7, 9]), SB.T: np.array([0, 1, 0]),
               SB.REWARDS: np.array([1.0, 1.0, 2.0], np.float32),
               SB.ACTION_LOGP: np.log(np.array([0.5, 0.5, 0.25]))})


def test_is_and_wis_match_hand_computed_numbers():
    # target probabilities 1, 1/2 (episode 7) and 1/8 (episode 9), gamma 0.9:
    #   w_7 = (1/0.5) * (0.5/0.5) = 2, G_7 = 1 + 0.9 = 1.9;  w_9 = 0.125/0.25 = 0.5, G_9 = 2
    #   IS = (2 * 1.9 + 0.5 * 2) / 2 = 2.4;  WIS = 4.8 / 2.5 = 1.92
    est = importance_sampling_estimates(two_episodes(), np.log([1.0, 0.5, 0.125]), gamma=0.9)
    assert est["is_return"] == pytest.approx(2.4)
    assert est["wis_return"] == pytest.approx(1.92)
    assert est["behaviour_return"] == pytest.approx(1.95)
    assert est["mean_weight"] == pytest.approx(1.25)
    assert est["num_episodes"] == 2


def test_target_equal_to_behaviour_gives_the_data_return():
    batch = two_episodes()
    est = importance_sampling_estimates(batch, batch[SB.ACTION_LOGP], gamma=0.9)
    assert est["is_return"] == est["wis_return"] == pytest.approx(1.95)
    # a deterministic target that never takes the recorded actions: weights 0, WIS undefined
    est = importance_sampling_estimates(batch, np.full(3, -np.inf), gamma=0.9)
    assert est["is_return"] == 0.0 and math.isnan(est["wis_return"])


def test_missing_behaviour_logp_is_one_line():
    batch = two_episodes()
    batch = SB({k: v for k, v in batch.items() if k != SB.ACTION_LOGP})
    with pytest.raises(DatasetError, match="action_logp"):
        importance_sampling_estimates(batch, np.zeros(3), 0.9)


def test_bc_reports_off_policy_estimates(tmp_path):
    pytest.importorskip("pyarrow")
    with rldataflow.build("ppo", env="CartPole-v1", runtime="inline", num_workers=0) as algo:
        algo.record(4, tmp_path / "data")
    with rldataflow.build("bc", env="CartPole-v1", input=str(tmp_path / "data"),
                          runtime="inline", num_workers=0, train_batch_size=64,
                          minibatch_size=64, evaluation_interval=1, evaluation_num_episodes=1,
                          off_policy_estimation_episodes=3) as algo:
        result = algo.train()
    assert result["off_policy_estimation/num_episodes"] == 3
    for key in ("is_return", "wis_return", "behaviour_return"):
        assert math.isfinite(result[f"off_policy_estimation/{key}"]), key
    assert result["off_policy_estimation/mean_weight"] > 0
