import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from rldataflow.envs import VectorEnv, make_vector_env


class CountEnv(gymnasium.Env):
    """obs = [100 * episode + t]; reward t; terminates after `length` steps; records seeds."""

    def __init__(self, length: int = 3):
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.episode = -1
        self.t = 0
        self.seeds = []

    def _obs(self):
        return np.array([100 * self.episode + self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t >= self.length, False, {"t": self.t}


def test_same_step_autoreset_terminated():
    venv = VectorEnv([CountEnv(2), CountEnv(3)], seed=5)
    obs = venv.reset()
    np.testing.assert_array_equal(obs[:, 0], [0, 0])
    obs, rew, term, trunc, final, infos = venv.step([0, 0])
    np.testing.assert_array_equal(obs[:, 0], [1, 1])
    assert final is obs or np.array_equal(final, obs)
    obs, rew, term, trunc, final, infos = venv.step([0, 0])
    # env 0 ended at t=2: final obs is the last obs, obs already the next episode's first.
    assert term.tolist() == [True, False] and trunc.tolist() == [False, False]
    np.testing.assert_array_equal(final[:, 0], [2, 2])
    np.testing.assert_array_equal(obs[:, 0], [100, 2])
    assert rew.dtype == np.float32 and rew.tolist() == [2.0, 2.0]
    assert infos[0]["t"] == 2
    returns, lengths = venv.pop_completed_episodes()
    assert returns == [3.0] and lengths == [2]
    assert venv.pop_completed_episodes() == ([], [])
    # Seeds: env i reset with seed + i first, then unseeded.
    assert venv.envs[0].seeds == [5, None] and venv.envs[1].seeds == [6]


def test_truncation_and_episode_ids():
    venv = VectorEnv([TimeLimit(CountEnv(10), max_episode_steps=2)] * 1, episode_id_offset=100)
    venv.reset()
    assert venv.episode_ids.tolist() == [100] and venv.episode_steps.tolist() == [0]
    venv.step([0])
    assert venv.episode_steps.tolist() == [1]
    obs, _, term, trunc, final, _ = venv.step([0])
    assert term.tolist() == [False] and trunc.tolist() == [True]
    assert final[0, 0] == 2 and obs[0, 0] == 100
    assert venv.episode_ids.tolist() == [101] and venv.episode_steps.tolist() == [0]
    assert venv.pop_completed_episodes() == ([3.0], [2])


def test_make_vector_env_seeding_reproducible():
    a = make_vector_env("CartPole-v1", num_envs=3, seed=7)
    b = make_vector_env("CartPole-v1", num_envs=3, seed=7)
    oa, ob = a.reset(), b.reset()
    np.testing.assert_array_equal(oa, ob)
    assert not np.array_equal(oa[0], oa[1])  # different seeds per env
    for _ in range(40):
        ra = a.step([1, 0, 1])
        rb = b.step([1, 0, 1])
        for x, y in zip(ra[:5], rb[:5], strict=True):
            np.testing.assert_array_equal(x, y)
    assert a.single_action_space.sample() == b.single_action_space.sample()


def test_preprocessed_discrete_obs_and_errors():
    venv = make_vector_env("FrozenLake-v1", num_envs=2, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, 16) and obs.dtype == np.float32
    assert venv.single_observation_space.shape == (16,)
    with pytest.raises(ValueError, match="expected 2 actions"):
        venv.step([0])
    with pytest.raises(RuntimeError, match="before reset"):
        make_vector_env("CartPole-v1").step([0])
    with pytest.raises(ValueError):
        make_vector_env("CartPole-v1", num_envs=0)
    raw = make_vector_env("FrozenLake-v1", num_envs=2, seed=0, preprocess=False)
    assert raw.reset().tolist() == [0, 0]


class LivesEnv(CountEnv):
    """CountEnv whose odd episodes are "life losses" (info episode_true None) and whose even ones
    report a true return of 1000 + t over 2 * length steps (the convention of vector_env's docs)."""

    def step(self, action):
        obs, rew, term, trunc, info = super().step(action)
        if term:
            info["episode_true"] = (None if self.episode % 2 == 0
                                    else {"r": 1000.0 + self.t, "l": 2 * self.t})
        return obs, rew, term, trunc, info


def test_true_episode_convention():
    venv = VectorEnv([LivesEnv(2), CountEnv(2)], seed=0)
    venv.reset()
    for _ in range(4):
        venv.step([0, 0])
    returns, lengths = venv.pop_completed_episodes()
    # env 0: episode 0 ends as a life loss (not reported), episode 1 reports its true figures;
    # env 1 sets no key: its returns are the rewards seen (1 + 2), twice.
    assert sorted(returns) == [3.0, 3.0, 1002.0] and sorted(lengths) == [2, 2, 4]
    assert venv.episode_ids.tolist() == [4, 5]  # every training episode still gets its own id
