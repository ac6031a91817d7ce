"""MinAtar envs (rldataflow.envs.minatar): ids, spaces, seeding, config errors."""

import numpy as np
import pytest

pytest.importorskip("minatar")

from rldataflow.envs import MINATAR_GAMES, EnvError, make_env, make_vector_env  # noqa: E402


@pytest.mark.parametrize("env_id", sorted(MINATAR_GAMES))
def test_spaces_and_obs(env_id):
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == env.observation_space.shape
    assert obs.shape[:2] == (10, 10) and set(np.unique(obs)) <= {0, 255}
    obs, rew, term, trunc, _ = env.step(env.action_space.sample())
    assert isinstance(rew, float) and not trunc


def test_seeded_rollouts_repeat_and_config():
    def run(seed):
        venv = make_vector_env("MinAtar/Breakout-v1", num_envs=2, seed=seed)
        out = [venv.reset()]
        rng = np.random.default_rng(0)
        for _ in range(50):
            out.append(venv.step(rng.integers(3, size=2))[0])
        return np.stack(out)

    np.testing.assert_array_equal(run(3), run(3))
    assert make_env("MinAtar/Breakout-v1", {"minimal_actions": False}).action_space.n == 6
    env = make_env("MinAtar/Breakout-v1", {"max_episode_steps": 3, "sticky_action_prob": 0.0})
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(EnvError, match="sticky_action_probb"):
        make_env("MinAtar/Breakout-v1", {"sticky_action_probb": 0.0})
