import gymnasium
import numpy as np
import pytest
import torch

from rldataflow.data import SampleBatch
from rldataflow.policies import TorchPolicy, compute_gae
from rldataflow.workers import RolloutWorker


def assert_batches_equal(a: SampleBatch, b: SampleBatch) -> None:
    assert a.columns == b.columns
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a.stats == b.stats


def test_shapes_and_env_major_order():
    w = RolloutWorker(
        "CartPole-v1", num_envs=4, rollout_fragment_length=25, seed=0, include_next_obs=True
    )
    b = w.sample()
    assert b.count == 100
    assert b[SampleBatch.OBS].shape == (100, 4) and b[SampleBatch.OBS].dtype == np.float32
    assert b[SampleBatch.ACTIONS].shape == (100,) and b[SampleBatch.ACTIONS].dtype == np.int64
    for col in ("action_logp", "vf_preds", "advantages", "value_targets", "bootstrap_value"):
        assert b[col].shape == (100,), col
    assert b[SampleBatch.ACTION_DIST_INPUTS].shape == (100, 2)
    np.testing.assert_array_equal(b[SampleBatch.ENV_ID], np.repeat(np.arange(4), 25))
    # Within an env and episode, t counts up and next_obs[i] is obs[i + 1].
    eps, t = b[SampleBatch.EPS_ID], b[SampleBatch.T]
    same = (eps[1:] == eps[:-1]) & (b[SampleBatch.ENV_ID][1:] == b[SampleBatch.ENV_ID][:-1])
    assert np.all(t[1:][same] == t[:-1][same] + 1)
    np.testing.assert_array_equal(b[SampleBatch.NEXT_OBS][:-1][same], b[SampleBatch.OBS][1:][same])
    # A new episode within an env starts at t = 0 right after a done step.
    done = b[SampleBatch.TERMINATEDS] | b[SampleBatch.TRUNCATEDS]
    new_ep = ~same & (b[SampleBatch.ENV_ID][1:] == b[SampleBatch.ENV_ID][:-1])
    assert np.all(done[:-1][new_ep]) and np.all(t[1:][new_ep] == 0)
    assert b.info["weights_version"] == 0
    # Episode stats: one entry per done step of this call; CartPole return == length.
    assert len(b.stats["episode_returns"]) == int(done.sum())
    assert b.stats["episode_returns"] == [float(x) for x in b.stats["episode_lengths"]]
    assert w.sample().count == 100 and w.num_steps_sampled == 200


def test_determinism_same_seed():
    kw = dict(num_envs=3, rollout_fragment_length=40, seed=11, worker_index=0)
    a, b = RolloutWorker("CartPole-v1", **kw), RolloutWorker("CartPole-v1", **kw)
    for _ in range(2):
        assert_batches_equal(a.sample(), b.sample())
    c = RolloutWorker("CartPole-v1", **{**kw, "seed": 12})
    assert not np.array_equal(c.sample()[SampleBatch.OBS], a.sample()[SampleBatch.OBS])


def test_remote_worker_index_seed_and_threads():
    threads = torch.get_num_threads()
    try:
        w1 = RolloutWorker("CartPole-v1", rollout_fragment_length=5, seed=0, worker_index=1)
        assert torch.get_num_threads() == 1
        assert w1.seed == 10_000
        eps = w1.sample()[SampleBatch.EPS_ID]
        assert eps[0] == 1 << 40  # episode ids distinct across workers
    finally:
        torch.set_num_threads(threads)


def test_truncation_bootstrap_and_gae():
    # CartPole with a 7-step limit: almost every episode ends by truncation.
    w = RolloutWorker(
        "CartPole-v1",
        {"max_episode_steps": 7},
        num_envs=2,
        rollout_fragment_length=20,
        seed=0,
        include_next_obs=True,
    )
    b = w.sample()
    trunc = b[SampleBatch.TRUNCATEDS] & ~b[SampleBatch.TERMINATEDS]
    assert trunc.sum() >= 4
    # Truncated steps bootstrap from V(final obs) = V(next_obs of that row).
    np.testing.assert_allclose(
        b[SampleBatch.BOOTSTRAP_VALUE][trunc],
        w.policy.value(b[SampleBatch.NEXT_OBS][trunc]),
        rtol=1e-5,
    )
    # Each env's last row bootstraps from V(obs after the fragment).
    last = np.array([19, 39])
    not_done = ~(b[SampleBatch.TERMINATEDS] | b[SampleBatch.TRUNCATEDS])[last]
    np.testing.assert_allclose(
        b[SampleBatch.BOOTSTRAP_VALUE][last][not_done],
        w.policy.value(b[SampleBatch.NEXT_OBS][last])[not_done],
        rtol=1e-5,
    )
    # GAE per env equals compute_gae on that env's rows alone.
    for env in range(2):
        rows = b[SampleBatch.ENV_ID] == env
        adv, targets = compute_gae(
            b[SampleBatch.REWARDS][rows],
            b[SampleBatch.VF_PREDS][rows],
            b[SampleBatch.TERMINATEDS][rows],
            b[SampleBatch.TRUNCATEDS][rows],
            b[SampleBatch.BOOTSTRAP_VALUE][rows],
            gamma=0.99,
            lambda_=0.95,
        )
        np.testing.assert_allclose(b[SampleBatch.ADVANTAGES][rows], adv, rtol=1e-5)


def test_complete_episodes():
    w = RolloutWorker(
        "CartPole-v1",
        num_envs=3,
        rollout_fragment_length=10,
        batch_mode="complete_episodes",
        seed=0,
    )
    for _ in range(3):
        b = w.sample()
        done = b[SampleBatch.TERMINATEDS] | b[SampleBatch.TRUNCATEDS]
        env = b[SampleBatch.ENV_ID]
        assert set(env.tolist()) == {0, 1, 2}
        # Every env's rows end with a done step; every episode starts at t = 0.
        last_rows = np.flatnonzero(np.append(env[1:] != env[:-1], True))
        assert np.all(done[last_rows])
        parts = b.split_by_episode()
        assert all(p[SampleBatch.T][0] == 0 and p[SampleBatch.T][-1] == p.count - 1 for p in parts)
        assert sum(b.stats["episode_lengths"]) == b.count
        assert len(b.stats["episode_lengths"]) == len(parts) == int(done.sum())
    with pytest.raises(ValueError, match="batch_mode"):
        RolloutWorker("CartPole-v1", batch_mode="complete")


def test_pendulum_box_actions_clip_and_squash():
    w = RolloutWorker("Pendulum-v1", num_envs=2, rollout_fragment_length=30, seed=0)
    b = w.sample()
    assert b[SampleBatch.ACTIONS].shape == (60, 1) and b[SampleBatch.ACTIONS].dtype == np.float32
    assert np.all(np.isfinite(b[SampleBatch.ACTION_LOGP]))
    assert b[SampleBatch.ACTION_DIST_INPUTS].shape == (60, 2)

    def squashed(obs_space, act_space):
        return TorchPolicy(
            obs_space, act_space, {"action_mode": "squash", "init_log_std": 1.0}, seed=0
        )

    ws = RolloutWorker(
        "Pendulum-v1", num_envs=2, rollout_fragment_length=30, seed=0, policy_factory=squashed
    )
    a = ws.sample()[SampleBatch.ACTIONS]
    assert np.all(np.abs(a) <= 2.0) and np.abs(a).max() > 1.0
    # Clip mode stores the raw sample: with a wide std it leaves the bounds.
    wide = RolloutWorker(
        "Pendulum-v1",
        rollout_fragment_length=50,
        seed=0,
        policy_factory=lambda o, s: TorchPolicy(o, s, {"init_log_std": 1.5}),
    )
    assert np.abs(wide.sample()[SampleBatch.ACTIONS]).max() > 2.0
    returns = w.evaluate(1)
    assert len(returns) == 1 and returns[0] < 0


def test_discrete_obs_env_frozenlake():
    w = RolloutWorker("FrozenLake-v1", num_envs=2, rollout_fragment_length=30, seed=0)
    b = w.sample()
    assert w.observation_space.shape == (16,)
    assert b[SampleBatch.OBS].shape == (60, 16)
    np.testing.assert_array_equal(b[SampleBatch.OBS].sum(1), 1.0)


def test_passthroughs():
    seen = {}

    def factory(obs_space, act_space):
        seen["spaces"] = (obs_space, act_space)
        return TorchPolicy(obs_space, act_space, {"lr": 1e-3}, seed=0)

    w = RolloutWorker(
        "CartPole-v1", num_envs=2, rollout_fragment_length=16, seed=0, policy_factory=factory
    )
    assert isinstance(seen["spaces"][0], gymnasium.spaces.Box)
    assert w.ping() == "ok"
    grads, info = w.sample_and_compute_gradients()
    assert info["count"] == 32 and "episode_returns" in info["stats"]
    assert len(grads) == len(list(w.policy.model.parameters()))
    w.apply_gradients(grads)
    assert w.policy.weights_version == 1
    stats = w.learn_on_batch(w.sample(), num_epochs=2, minibatch_size=16)
    assert stats["num_grad_updates"] == 4
    other = RolloutWorker("CartPole-v1", rollout_fragment_length=4, seed=5)
    other.set_weights(w.get_weights(), version=w.policy.weights_version)
    assert other.sample().info["weights_version"] == 5
    other.set_state(w.get_state())
    obs = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(other.policy.value(obs), w.policy.value(obs))
    assert w.apply(lambda worker, x: worker.num_envs + x, 1) == 3
    r1, r2 = w.evaluate(2), w.evaluate(2)
    assert len(r1) == 2 and all(r >= 8 for r in r1 + r2)
    w.stop()


class ImageEnv(gymnasium.Env):
    """12x12x3 uint8 frames, 5-step episodes; with dict_obs, a Dict of image-less parts."""

    def __init__(self, dict_obs: bool = False):
        self.dict_obs = dict_obs
        if dict_obs:
            self.observation_space = gymnasium.spaces.Dict(
                {
                    "pos": gymnasium.spaces.Box(-1, 1, (2,), np.float32),
                    "cell": gymnasium.spaces.Discrete(3),
                }
            )
        else:
            self.observation_space = gymnasium.spaces.Box(0, 255, (12, 12, 3), np.uint8)
        self.action_space = gymnasium.spaces.Discrete(3)
        self.t = 0

    def _obs(self):
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), self.t >= 5, False, {}


@pytest.mark.parametrize("dict_obs", [False, True])
def test_image_and_dict_observations(dict_obs):
    w = RolloutWorker(
        lambda cfg: ImageEnv(**cfg),
        {"dict_obs": dict_obs},
        num_envs=2,
        rollout_fragment_length=12,
        seed=0,
    )
    b = w.sample()
    if dict_obs:
        assert b[SampleBatch.OBS].shape == (24, 5) and b[SampleBatch.OBS].dtype == np.float32
    else:
        assert b[SampleBatch.OBS].shape == (24, 12, 12, 3)
        assert b[SampleBatch.OBS].dtype == np.uint8
    assert len(b.stats["episode_returns"]) == 4
    assert w.learn_on_batch(b)["num_grad_updates"] == 1


class ThreeLivesEnv(gymnasium.Env):
    """Each 'life' lasts 4 steps with reward 2 (clipped to 1 for training); the third life ends
    the game. Follows the true-episode convention of rldataflow.envs.vector_env."""

    observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if getattr(self, "lives", 0) == 0:
            self.lives, self.total, self.length = 3, 0.0, 0
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.length += 1
        self.total += 2.0
        info = {}
        if self.t == 4:
            self.lives -= 1
            info["episode_true"] = (None if self.lives else {"r": self.total, "l": self.length})
        return np.zeros(2, np.float32), 1.0, self.t == 4, False, info


def test_evaluate_reports_true_episode_returns():
    w = RolloutWorker(lambda cfg: ThreeLivesEnv(), num_envs=1, rollout_fragment_length=24)
    assert w.evaluate(2) == [24.0, 24.0]  # 3 lives x 4 steps x reward 2, not 4.0 per life
    batch = w.sample()
    assert batch.stats["episode_returns"] == [24.0, 24.0]
    assert batch.stats["episode_lengths"] == [12, 12]
