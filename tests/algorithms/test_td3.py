"""TD3: target policy smoothing (clipped noise) and the min of the twin targets against a
hand computation, the delayed actor and targets, checkpoints keep the delay's phase, learning."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from test_ddpg import QUICK, Const, batch, set_relu_q
from test_sac import train_until_pendulum

import rldataflow
from rldataflow.algorithms.td3 import TD3Policy, smoothed_target_actions, td3_loss
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

OBS1 = gymnasium.spaces.Box(-10, 10, (1,), np.float32)


def tiny_policy() -> TD3Policy:
    """Q1 = relu(s + a), Q2 = 2 relu(s + a); targets Q1' = relu(s + a), Q2' = relu(s - a);
    mu'(s') = [0.2, 0.9]; smoothing noise draws eps = [3, 1] (sigma 0.2, clip 0.5)."""
    policy = TD3Policy(OBS1, gymnasium.spaces.Box(0.0, 2.0, (1,), np.float32),
                       {"hiddens": (1,)}, seed=0)
    set_relu_q(policy.model.critic.q1, [1.0, 1.0], 1.0)
    set_relu_q(policy.model.critic.q2, [1.0, 1.0], 2.0)
    targets = policy.learner.targets
    set_relu_q(targets["critic"].module.q1, [1.0, 1.0], 1.0)
    set_relu_q(targets["critic"].module.q2, [1.0, -1.0], 1.0)
    targets["actor"].module = Const([[0.2], [0.9]])
    policy.target_policy_noise = lambda shape: torch.tensor([[3.0], [1.0]])
    return policy


def test_smoothing_clips_the_noise_then_the_action():
    got = smoothed_target_actions(torch.tensor([[0.2], [0.9], [-0.95]]),
                                  torch.tensor([[3.0], [1.0], [-0.5]]), sigma=0.2, clip=0.5)
    # 0.2 + clip(0.6) = 0.7;  0.9 + 0.2 = 1.1 -> 1;  -0.95 - 0.1 = -1.05 -> -1
    assert torch.allclose(got, torch.tensor([[0.7], [1.0], [-1.0]]))


def test_target_and_critic_loss_match_hand_computed_numbers():
    policy = tiny_policy()
    b = batch(rewards=(1.0, 0.5), terminateds=(False, False))
    losses, stats = td3_loss(policy, policy.batch_to_tensors(b), step=0)
    # row 0: a' = 0.2 + clip(0.2 * 3 = 0.6, 0.5) = 0.7; s' = 2
    #        Q1' = relu(2.7) = 2.7, Q2' = relu(1.3) = 1.3 -> min 1.3;  y = 1 + 0.9 * 1.3 = 2.17
    # row 1: a' = clip(0.9 + 0.2, -1, 1) = 1; s' = 1
    #        Q1' = relu(2) = 2, Q2' = relu(0) = 0 -> min 0;  y = 0.5
    y = np.array([2.17, 0.5])
    q1, q2 = np.array([1.5, 0.0]), np.array([3.0, 0.0])  # relu(s + a), a = [0.5, -1]
    assert stats["mean_target"].item() == pytest.approx(y.mean(), rel=1e-6)
    critic = np.mean((q1 - y) ** 2 + (q2 - y) ** 2)
    assert critic == pytest.approx(0.8189, abs=1e-6)
    assert losses["critic"].item() == pytest.approx(critic, rel=1e-6)
    np.testing.assert_allclose(stats["td_error"].numpy(),
                               0.5 * (np.abs(q1 - y) + np.abs(q2 - y)), rtol=1e-6)
    assert "actor" not in losses  # update 0 of policy_delay 2: the critic only
    losses, _ = td3_loss(policy, policy.batch_to_tensors(b), step=1)
    with torch.no_grad():
        obs = torch.tensor([[1.0], [0.5]])
        expected = -policy.model.critic.q1(obs, policy.model.actor(obs)).mean()
    assert losses["actor"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_actor_and_targets_update_every_policy_delay_steps():
    policy = TD3Policy(OBS1, gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32),
                       {"hiddens": (8,), "policy_delay": 3}, seed=0)
    actor0 = {k: v.clone() for k, v in policy.model.actor.state_dict().items()}
    target_updates = []
    actor_changed = []
    for _ in range(6):
        before = {k: v.clone() for k, v in policy.model.actor.state_dict().items()}
        stats = policy.learn_on_batch(batch())
        target_updates.append(policy.learner.targets["critic"].num_updates)
        actor_changed.append(any(not torch.equal(before[k], v)
                                 for k, v in policy.model.actor.state_dict().items()))
        assert ("actor_loss" in stats) == actor_changed[-1]
    assert actor_changed == [False, False, True, False, False, True]
    assert target_updates == [0, 0, 1, 1, 1, 2]
    assert policy.learner.targets["actor"].num_updates == 2
    assert any(not torch.equal(actor0[k], v) for k, v in policy.model.actor.state_dict().items())


def test_checkpoint_keeps_the_delay_phase(tmp_path):
    with rldataflow.build("td3", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
        state = algo.workers.local_worker().policy.get_state()
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        got = restored.workers.local_worker().policy.get_state()
        assert got["learner_num_updates"] == state["learner_num_updates"] > 0
        assert set(got["optimizers"]) == {"actor", "critic"}
        assert set(got["targets"]) == {"actor", "critic"}
        for group in ("actor", "critic"):
            for k, v in state["targets"][group].items():
                assert torch.equal(v, got["targets"][group][k])
        for k, v in state["weights"].items():
            assert torch.equal(v, got["weights"][k])
    finally:
        restored.stop()


def test_td3_rejects_bad_values():
    with pytest.raises(ConfigError, match="policy_delay"):
        rldataflow.build("td3", policy_delay=0, runtime="inline")


@pytest.mark.learning
@pytest.mark.timeout(180)
def test_td3_learns_pendulum(record_property):
    train_until_pendulum("td3", record_property=record_property)
