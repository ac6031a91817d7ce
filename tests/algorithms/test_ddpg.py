"""DDPG: the loss against hand-computed numbers, exploration noise (Gaussian, OU) within
bounds, the plan on both runtimes, the command line, a bad action space, learning."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from test_sac import train_until_pendulum
from torch import nn

import rldataflow
from rldataflow.algorithms.ddpg import DDPGPolicy, ddpg_loss
from rldataflow.data import SampleBatch as SB
from rldataflow.policies.exploration_noise import GaussianNoise, OrnsteinUhlenbeckNoise
from rldataflow.utils.config import ConfigError

OBS1 = gymnasium.spaces.Box(-10, 10, (1,), np.float32)
QUICK = dict(learning_starts=64, train_batch_size=32, min_steps_per_iteration=100,
             hiddens=(16, 16))


class Const(nn.Module):
    """A stand-in target actor with fixed outputs."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs):
        return self.values


def set_relu_q(q, w, head):
    """q(s, a) = head * relu(w . [s, a])"""
    with torch.no_grad():
        q.mlp.layers[0].weight.copy_(torch.tensor([w]))
        q.mlp.layers[0].bias.zero_()
        q.head.weight.fill_(head)
        q.head.bias.zero_()


def batch(rewards=(1.0, 0.5), terminateds=(False, True)) -> SB:
    return SB({SB.OBS: np.array([[1.0], [0.5]], np.float32),
               SB.ACTIONS: np.array([[1.5], [0.0]], np.float32),    # normalized 0.5, -1
               SB.REWARDS: np.array(rewards, np.float32),
               SB.NEXT_OBS: np.array([[2.0], [1.0]], np.float32),
               SB.TERMINATEDS: np.array(terminateds),
               SB.DISCOUNTS: np.array([0.9, 0.9], np.float32)})


def test_loss_matches_hand_computed_numbers():
    policy = DDPGPolicy(OBS1, gymnasium.spaces.Box(0.0, 2.0, (1,), np.float32),
                        {"hiddens": (1,)}, seed=0)
    set_relu_q(policy.model.critic, [1.0, 1.0], 1.0)          # Q = relu(s + a)
    targets = policy.learner.targets
    set_relu_q(targets["critic"].module, [1.0, 1.0], 0.5)     # Q' = 0.5 relu(s + a)
    targets["actor"].module = Const([[0.2], [0.9]])           # mu'(s')
    losses, stats = ddpg_loss(policy, policy.batch_to_tensors(batch()))
    # row 0: y = 1 + 0.9 * 0.5 * relu(2 + 0.2) = 1.99, Q = relu(1 + 0.5) = 1.5
    # row 1: terminated, y = 0.5; Q = relu(0.5 - 1) = 0
    np.testing.assert_allclose(stats["td_error"].numpy(), [1.5 - 1.99, -0.5], rtol=1e-6)
    assert losses["critic"].item() == pytest.approx((0.49 ** 2 + 0.25) / 2, rel=1e-6)
    with torch.no_grad():
        obs = torch.tensor([[1.0], [0.5]])
        expected = -policy.model.critic(obs, policy.model.actor(obs)).mean()
    assert losses["actor"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind, cls", [("gaussian", GaussianNoise),
                                       ("ou", OrnsteinUhlenbeckNoise)])
def test_exploration_noise_kinds_stay_within_asymmetric_bounds(kind, cls):
    space = gymnasium.spaces.Box(np.array([0.0, -3.0], np.float32),
                                 np.array([2.0, 5.0], np.float32))
    policy = DDPGPolicy(gymnasium.spaces.Box(-1, 1, (3,), np.float32), space,
                        {"hiddens": (8,), "exploration_noise": kind, "exploration_scale": 0.5},
                        seed=0)
    assert isinstance(policy.noise, cls)
    obs = np.zeros((200, 3), np.float32)
    explored, _ = policy.compute_actions(obs)
    greedy, _ = policy.compute_actions(obs, explore=False)
    assert np.all(explored >= space.low) and np.all(explored <= space.high)
    assert explored.std(axis=0).min() > 0.1 and np.all(greedy == greedy[0])
    policy.noise_scale = 0.0
    assert policy.noise_scale == 0.0


def test_bad_action_space_and_config():
    with pytest.raises(ConfigError, match=r"ddpg needs a continuous .*Discrete\(2\)"):
        rldataflow.build("ddpg", env="CartPole-v1", runtime="inline")
    with pytest.raises(ConfigError, match="exploration_scale"):
        rldataflow.build("ddpg", exploration_scale=-1.0, runtime="inline")


def test_runs_inline_with_ou_noise_and_on_processes():
    with rldataflow.build("ddpg", runtime="inline", seed=0, exploration_noise="ou",
                          **QUICK) as algo:
        algo.train()
        r = algo.train()
        # one step per env step from the 64th row stored (learning_starts) on
        assert r["env_steps_trained"] == 32 * (r["env_steps_sampled"] - 64 + 1)
    with rldataflow.build("ddpg", runtime="process", num_workers=2, seed=0, **QUICK) as algo:
        algo.train()
        assert algo.train()["env_steps_trained"] > 0


def test_cli_plan():
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "ddpg"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "StoreToReplayBuffer(local)" in proc.stdout and "TrainOneStep" in proc.stdout


@pytest.mark.learning
@pytest.mark.timeout(180)
def test_ddpg_learns_pendulum(record_property):
    train_until_pendulum("ddpg", record_property=record_property)
