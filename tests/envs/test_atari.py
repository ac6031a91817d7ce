"""Atari preprocessing (rldataflow.envs.atari): shapes, episodic life, clipped rewards vs true
returns, knobs and errors."""

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from rldataflow.envs import EnvError, make_env, make_vector_env  # noqa: E402
from rldataflow.envs.atari import EpisodicLife  # noqa: E402


def _find(env, cls):
    while not isinstance(env, cls):
        env = env.env
    return env


def test_default_preprocessing_shapes():
    env = make_env("ALE/Pong-v5")
    assert env.observation_space.shape == (84, 84, 4)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8 and obs.flags["C_CONTIGUOUS"]
    assert env.unwrapped._frameskip == 1  # the skip of 4 is done by AtariPreprocessing
    raw = make_env("ALE/Pong-v5", {"atari_preprocessing": False})
    assert raw.observation_space.shape == (210, 160, 3)
    small = make_env("ALE/Pong-v5", {"frame_stack": 2, "screen_size": 42})
    assert small.observation_space.shape == (42, 42, 2)


def test_episodic_life_keeps_the_game_and_true_returns_are_unclipped():
    # Breakout: 5 lives, bricks worth 1, 4 or 7 points; random play loses lives quickly.
    env = make_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0})
    life = _find(env, EpisodicLife)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    training_rewards, life_ends, game_end, lives_seen = [], 0, None, []
    while game_end is None:
        _, rew, term, trunc, info = env.step(int(rng.integers(4)))
        training_rewards.append(rew)
        if term or trunc:
            if info["episode_true"] is None:
                life_ends += 1
                lives_before = life._ale_lives()
                env.reset()
                # the game goes on: no reset to 5 lives after a life loss
                lives_seen.append((lives_before, life._ale_lives()))
            else:
                game_end = info["episode_true"]
    assert life_ends == 4 and all(a == b < 5 for a, b in lives_seen)
    assert set(training_rewards) <= {-1.0, 0.0, 1.0}
    assert game_end["l"] == len(training_rewards) + life_ends  # reset after a life is a no-op step
    assert game_end["r"] >= sum(training_rewards)  # unclipped (bricks are worth >= 1)
    env.reset()
    assert life._ale_lives() == 5  # a real game end does reset the game


def test_vector_env_reports_true_game_returns():
    venv = make_vector_env("ALE/Breakout-v5", {"clip_rewards": False}, num_envs=1, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    clipped_training = 0
    while True:
        _, rew, term, trunc, _, _ = venv.step(rng.integers(4, size=1))
        clipped_training += int(term[0] or trunc[0])
        returns, lengths = venv.pop_completed_episodes()
        if returns:
            break
    # five training episodes (one per life) but one game reported
    assert clipped_training == 5 and len(returns) == 1 and lengths[0] > 0


def test_bad_atari_config_and_ids():
    with pytest.raises(EnvError, match="did you mean 'ALE/Pong-v5'"):
        make_env("ALE/Pongg-v5")
    with pytest.raises(EnvError, match="frame_stack"):
        make_env("ALE/Pong-v5", {"frame_stack": 0})
    with pytest.raises(EnvError, match="episodic_life"):
        make_env("ALE/Pong-v5", {"episodic_life": "yes"})
    with pytest.raises(EnvError, match="frame_skip"):
        make_env("ALE/Pong-v5", {"frameskip": 4})


def test_missing_ale_py_is_one_line(monkeypatch):
    import builtins

    import gymnasium

    from rldataflow.envs import atari

    real_import = builtins.__import__

    def no_ale(name, *args, **kwargs):
        if name == "ale_py":
            raise ImportError("No module named 'ale_py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ale)
    monkeypatch.setattr(gymnasium.envs, "registry", {})
    with pytest.raises(EnvError, match=r'pip install "rldataflow\[atari\]"') as err:
        atari.ensure_ale_registered("ALE/Pong-v5")
    assert "\n" not in str(err.value)
