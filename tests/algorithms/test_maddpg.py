"""MADDPG: the centralised critics' input layout, the target and losses on a tiny batch, the
plan, checkpoints, bad input, and learning MPE simple_spread against a random policy measured
in the same test."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_qmix import random_return
from torch import nn

import rldataflow
from rldataflow.algorithms.maddpg import MADDPGPolicy, maddpg_loss
from rldataflow.data import SampleBatch as SB
from rldataflow.envs.group_agents import GroupLayout
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError

pytest.importorskip("mpe2")

QUICK = dict(learning_starts=64, train_batch_size=32, min_steps_per_iteration=100,
             hiddens=(16, 16))
LAYOUT = GroupLayout(["a", "b"], [1, 2], 1, [1, 1], [None, None])  # obs [o_a | o_b (2) | s]


class Recorder(nn.Module):
    """A stand-in critic: ``Q_i(x, a) = (i + 1) * (sum x + 10 sum a)``; records its inputs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, obs, actions):
        x = obs[:, :3]
        self.seen.append((obs, actions))
        base = x.sum(-1) + 10 * actions.sum(-1)
        return torch.stack([base, 2 * base], dim=-1)


class Const(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs):
        return self.values


def tiny_policy() -> MADDPGPolicy:
    return MADDPGPolicy(spaces.Box(-10, 10, (4,), np.float32),
                        spaces.Box(-1.0, 1.0, (2,), np.float32),
                        {"layout": LAYOUT.to_dict(), "hiddens": (8,), "gamma": 0.5}, seed=0)


def test_critics_see_all_members_observations_and_actions_not_the_state():
    policy = tiny_policy()
    for net in policy.model.critic.nets:
        # x = o_a (1) + o_b (2), joint action 2; the state column is not an input
        assert net.mlp.layers[0].in_features == 3 + 2
    for net, size in zip(policy.model.actor.nets, LAYOUT.obs_sizes, strict=True):
        assert net.encoder.layers[0].in_features == size  # each actor: its own obs only
    obs = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    a = policy.model.actor(obs)
    with torch.no_grad():
        alone = policy.model.actor.nets[1](obs[:, 1:3])
    assert a.shape == (1, 2) and torch.allclose(a[:, 1:], alone)
    q = policy.model.critic(obs, a)
    q_changed_state = policy.model.critic(obs + torch.tensor([[0, 0, 0, 5.0]]), a)
    assert torch.equal(q, q_changed_state)


def test_target_and_losses_match_hand_computed_numbers():
    policy = tiny_policy()
    targets = policy.learner.targets
    targets["actor"].module = Const([[0.5, -0.25], [0.0, 1.0]])     # mu'_1, mu'_2 at s'
    recorder = targets["critic"].module = Recorder()
    batch = SB({SB.OBS: np.array([[1, 0, 0, 7], [0, 1, 1, 7]], np.float32),
                SB.ACTIONS: np.array([[0.5, 0.5], [-1.0, 0.0]], np.float32),
                SB.REWARDS: np.array([1.0, -1.0], np.float32),
                SB.NEXT_OBS: np.array([[2, 1, 0, 7], [0, 0, 0, 7]], np.float32),
                SB.TERMINATEDS: np.array([False, True]),
                SB.DISCOUNTS: np.array([0.5, 0.5], np.float32)})
    losses, stats = maddpg_loss(policy, policy.batch_to_tensors(batch))
    next_obs, next_actions = recorder.seen[0]
    np.testing.assert_array_equal(next_actions.numpy(), [[0.5, -0.25], [0.0, 1.0]])
    # row 0: Q'_1 = 3 + 10 * 0.25 = 5.5, Q'_2 = 11 -> y = 1 + 0.5 * (5.5, 11) = (3.75, 6.5)
    # row 1: terminated -> y = (-1, -1)
    y = np.array([[3.75, 6.5], [-1.0, -1.0]])
    assert stats["mean_target"].item() == pytest.approx(y.mean(), rel=1e-6)
    with torch.no_grad():
        obs = torch.from_numpy(batch[SB.OBS])
        q = policy.model.critic(obs, torch.from_numpy(batch[SB.ACTIONS])).numpy()
        mu = policy.model.actor(obs)
        acts = torch.from_numpy(batch[SB.ACTIONS])
        q1 = policy.model.critic.one(0, obs, torch.cat([mu[:, :1], acts[:, 1:]], -1))
        q2 = policy.model.critic.one(1, obs, torch.cat([acts[:, :1], mu[:, 1:]], -1))
    np.testing.assert_allclose(stats["td_error"].numpy(), (q - y).mean(-1), rtol=1e-5)
    assert losses["critic"].item() == pytest.approx(((q - y) ** 2).sum(-1).mean(), rel=1e-5)
    # each actor through its own critic, the other member's action from the batch
    assert losses["actor"].item() == pytest.approx(-(q1.mean() + q2.mean()).item(), rel=1e-5)


def test_actor_loss_trains_only_actors_and_critic_loss_only_critics():
    policy = tiny_policy()
    batch = SB({SB.OBS: np.ones((4, 4), np.float32), SB.ACTIONS: np.zeros((4, 2), np.float32),
                SB.REWARDS: np.ones(4, np.float32), SB.NEXT_OBS: np.ones((4, 4), np.float32),
                SB.TERMINATEDS: np.zeros(4, bool)})
    losses, _ = maddpg_loss(policy, policy.batch_to_tensors(batch))
    losses["actor"].backward()
    assert all(p.grad is None for p in policy.model.critic.parameters())
    assert any(p.grad is not None for p in policy.model.actor.parameters())


def test_bad_input_is_one_line_naming_the_fix():
    with pytest.raises(ConfigError, match="maddpg needs continuous .*continuous_actions"):
        rldataflow.build("maddpg", env_config={"N": 2, "continuous_actions": False},
                         runtime="inline")
    with pytest.raises(ConfigError, match="exploration_scale"):
        rldataflow.build("maddpg", exploration_scale=-1.0, runtime="inline")


def test_cli_plan():
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "maddpg"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for op in ("SelectExperiences(['team'])", "StoreToReplayBuffer(local)", "TrainOneStep"):
        assert op in proc.stdout, op


def test_runs_inline_and_on_processes():
    with rldataflow.build("maddpg", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        r = algo.train()
        assert r["env_steps_trained"] > 0 and np.isfinite(r["learner"]["team"]["critic_loss"])
    with rldataflow.build("maddpg", runtime="process", num_workers=2, seed=0, **QUICK) as algo:
        algo.train()
        assert algo.train()["env_steps_trained"] > 0


def test_save_and_restore_gives_identical_state(tmp_path, assert_same_state):
    with rldataflow.build("maddpg", runtime="inline", seed=0, **QUICK) as algo:
        algo.train()
        algo.save(tmp_path / "ckpt")
        state = algo.workers.local_worker().get_policy("team").get_state()
    restored = Algorithm.restore(tmp_path / "ckpt", runtime=None)
    try:
        got = restored.workers.local_worker().get_policy("team").get_state()
        assert set(got["optimizers"]) == {"actor", "critic"}
        assert set(got["targets"]) == {"actor", "critic"}
        assert_same_state(state, got)
        assert restored.train()["iteration"] == 2
    finally:
        restored.stop()


@pytest.mark.learning
@pytest.mark.timeout(600)
def test_maddpg_beats_random_on_simple_spread(record_property):
    """Two agents of MPE simple_spread (continuous), 25-step episodes: the greedy actors'
    mean team return against uniformly random actions, both over the same 100 episodes."""
    episodes, env_config = 100, {"N": 2, "max_cycles": 25, "continuous_actions": True}
    random = random_return("mpe2.simple_spread_v3", env_config, episodes)
    cpu = time.process_time()
    with rldataflow.build("maddpg", runtime="inline", seed=0, env_config=env_config,
                          training_intensity=64, min_steps_per_iteration=1000) as algo:
        while algo.train()["env_steps_sampled"] < 25_000:
            pass
        learned = algo.evaluate(episodes)["evaluation/episode_return_mean"]
    cpu = time.process_time() - cpu
    record_property("maddpg_spread_random", random)
    record_property("maddpg_spread_learned", learned)
    print(f"simple_spread N=2: random {random:.2f}, MADDPG greedy {learned:.2f} "
          f"({episodes} episodes; 25k env steps, {cpu:.0f} CPU s)")
    assert learned >= random + 8.0
