"""Atari smoke test: PPO and IMPALA train a few iterations on ALE/Pong-v5 on the process runtime
(the workers register ale-py themselves), see (84, 84, 4) uint8 observations through the Nature
CNN, and report true game returns once episodes end."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

import rldataflow  # noqa: E402
from rldataflow.policies.models import CNN  # noqa: E402

# max_episode_steps counts ALE frames (the base env runs with frameskip=1): 400 frames = 100
# agent steps, so games are truncated quickly and their true-return info reaches the results.
SMALL = dict(env="ALE/Pong-v5", env_config={"max_episode_steps": 400}, runtime="process",
             num_workers=1, num_envs_per_worker=2, rollout_fragment_length=32,
             train_batch_size=64, minibatch_size=32, num_epochs=1, seed=0)


@pytest.mark.parametrize("name", ["ppo", "impala"])
def test_atari_pong_trains_and_reports_true_returns(name):
    with rldataflow.build(name, **SMALL) as algo:
        policy = algo.workers.local_worker().get_policy()
        assert any(isinstance(m, CNN) for m in policy.model.modules())
        batch = algo.workers.local_worker().sample()
        assert batch["obs"].shape[1:] == (84, 84, 4) and batch["obs"].dtype == np.uint8
        result = None
        for _ in range(12):
            result = algo.train()
            if result["episodes_total"] >= 2:
                break
    assert result["env_steps_trained"] > 0
    assert result["episodes_total"] >= 2
    # Pong's score per truncated game is in [-21, 21]; a game is 100 agent steps less the
    # frames of up to 30 reset no-ops (counted by the frame time limit, not as agent steps)
    assert -21 <= result["episode_return_mean"] <= 21
    assert 400 / 4 - 30 / 4 <= result["episode_len_mean"] <= 400 / 4
