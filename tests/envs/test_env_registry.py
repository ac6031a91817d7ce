import time

import gymnasium
import pytest

from rldataflow.envs import SLEEP_CARTPOLE_ID, EnvError, make_env, register, registered_envs


def test_gymnasium_id_and_kwargs():
    env = make_env("FrozenLake-v1", {"is_slippery": False})
    assert env.observation_space == gymnasium.spaces.Discrete(16)
    assert env.unwrapped.spec.kwargs["is_slippery"] is False


def test_unknown_id_suggests_one_line():
    with pytest.raises(EnvError) as info:
        make_env("CartPol-v1")
    msg = str(info.value)
    assert "'CartPol-v1'" in msg and "did you mean 'CartPole-v1'?" in msg
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_unknown_id_suggests_registered_name():
    register("test/MyGridWorld-v0", lambda cfg: gymnasium.make("FrozenLake-v1"))
    with pytest.raises(EnvError, match="did you mean 'test/MyGridWorld-v0'"):
        make_env("test/MyGridWorld-v1")
    assert "test/MyGridWorld-v0" in registered_envs()


def test_broken_constructor_is_chained():
    def broken(cfg):
        raise RuntimeError("simulator licence missing")

    register("test/Broken-v0", broken)
    with pytest.raises(EnvError) as info:
        make_env("test/Broken-v0")
    assert str(info.value).startswith("could not create env 'test/Broken-v0': ")
    assert "simulator licence missing" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)

    with pytest.raises(EnvError, match="could not create env '.*broken'"):
        make_env(broken)


def test_callable_spec_and_bad_return():
    env = make_env(lambda cfg: gymnasium.make("CartPole-v1", **cfg), {"max_episode_steps": 7})
    assert env.spec.max_episode_steps == 7
    with pytest.raises(EnvError, match="not a gymnasium.Env"):
        make_env(lambda cfg: object())
    with pytest.raises(EnvError):
        make_env(42)  # type: ignore[arg-type]


def test_sleep_cartpole():
    env = make_env(SLEEP_CARTPOLE_ID, {"sleep_s": 0.01})
    env.reset(seed=0)
    t0 = time.perf_counter()
    env.step(0)
    assert time.perf_counter() - t0 >= 0.009
    assert env._max_episode_steps == 500
    assert make_env(SLEEP_CARTPOLE_ID).unwrapped.sleep_s == 0.002
