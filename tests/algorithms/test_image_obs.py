"""Every algorithm with Discrete actions builds on uint8 image observations with the CNN as its
encoder and runs one training iteration."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

import rldataflow
from rldataflow.policies.models import CNN


class TinyImageEnv(gymnasium.Env):
    """42x42x4 uint8 frames; reward 1 when the action names the bright half; 20-step episodes."""

    observation_space = spaces.Box(0, 255, (42, 42, 4), dtype=np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        self.side = int(self.np_random.integers(2))
        obs = np.zeros((42, 42, 4), np.uint8)
        obs[:, 21 * self.side: 21 * (self.side + 1)] = 200
        return obs

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return self._obs(), reward, False, self.t >= 20, {}


def make_tiny_image_env(env_config):
    return TinyImageEnv()


COMMON = dict(env=make_tiny_image_env, runtime="inline", num_workers=1, num_envs_per_worker=2,
              rollout_fragment_length=16, seed=0)
ALGOS = {
    "ppo": dict(train_batch_size=32, minibatch_size=16, num_epochs=1),
    "a2c": dict(train_batch_size=32),
    "impala": dict(train_batch_size=32, minibatch_size=16, num_epochs=1, learner_thread=False),
    "appo": dict(train_batch_size=32, minibatch_size=16, num_epochs=1),
    "dqn": dict(train_batch_size=16, learning_starts=32),
    "apex": dict(train_batch_size=16, learning_starts=32),
}


def _models(algo):
    """The torch modules held by the local worker's policy (model, Q nets...)."""
    policy = algo.workers.local_worker().get_policy()
    return [obj for obj in vars(policy).values() if isinstance(obj, torch.nn.Module)]


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_discrete_algorithms_use_the_cnn_on_images(name):
    with rldataflow.build(name, **COMMON, **ALGOS[name]) as algo:
        modules = [m for mod in _models(algo) for m in mod.modules()]
        assert any(isinstance(m, CNN) for m in modules), name
        result = None
        for _ in range(6):
            result = algo.train()
            if result["env_steps_trained"] > 0:
                break
    assert result["env_steps_trained"] > 0
