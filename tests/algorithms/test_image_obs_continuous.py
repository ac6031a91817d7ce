"""SAC and TD3 on image observations: the Nature CNN encodes (H, W, C) uint8 frames inside the
actor and the critics, sampled batches (what replay stores) keep the frames uint8, and an
update step trains."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.policies.models import CNN


class TinyImageEnv(gymnasium.Env):
    """42x42x3 uint8 frames whose brightness is the state; 2-D actions in [-1, 1]; reward for
    an action matching the brightness; 20-step episodes."""

    observation_space = gymnasium.spaces.Box(0, 255, (42, 42, 3), np.uint8)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, env_config=None):
        self.t, self.level = 0, 0.0

    def _frame(self) -> np.ndarray:
        return np.full((42, 42, 3), int(self.level * 255), np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.level = 0, float(self.np_random.uniform())
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        reward = -float(np.sum((np.asarray(action) - (2 * self.level - 1)) ** 2))
        self.level = float(self.np_random.uniform())
        return self._frame(), reward, False, self.t >= 20, {}


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_update_step_on_uint8_images(name):
    with rldataflow.build(name, env=TinyImageEnv, runtime="inline", seed=0, hiddens=(32,),
                          learning_starts=64, train_batch_size=32, buffer_size=1000,
                          min_steps_per_iteration=100) as algo:
        policy = algo.workers.local_worker().policy
        model = policy.model
        assert isinstance(model.actor.encoder, CNN)
        critics = [model.critic] if hasattr(model.critic, "obs_encoder") else \
            [model.critic.q1, model.critic.q2]
        assert all(isinstance(q.obs_encoder, CNN) for q in critics)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        r = algo.train()
        assert r["env_steps_trained"] > 0 and np.isfinite(r["learner"]["critic_loss"])
        after = model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert any(k.startswith("actor.encoder.convs") for k in changed)
        assert any(".obs_encoder.convs" in k for k in changed)
        sampled = algo.workers.local_worker().sample()  # what goes into replay
        assert sampled["obs"].dtype == np.uint8 and sampled["obs"].shape[1:] == (42, 42, 3)
        assert sampled["next_obs"].dtype == np.uint8
