"""Multi-agent envs: MultiAgentCartPole, make_multi_agent_env (Parallel, AEC, module paths)."""

from __future__ import annotations

import os

import gymnasium
import numpy as np
import pytest

pytest.importorskip("pettingzoo")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner

from pettingzoo import ParallelEnv  # noqa: E402
from pettingzoo.test import parallel_api_test  # noqa: E402

from rldataflow.envs import (  # noqa: E402
    MULTI_AGENT_CARTPOLE_ID,
    EnvError,
    MultiAgentCartPole,
    is_multi_agent_env,
    make_multi_agent_env,
    registered_envs,
)


def test_registered_and_configurable():
    assert MULTI_AGENT_CARTPOLE_ID == "rldataflow/MultiAgentCartPole-v0"
    assert MULTI_AGENT_CARTPOLE_ID in registered_envs()
    env = make_multi_agent_env(MULTI_AGENT_CARTPOLE_ID, {"num_agents": 3})
    assert isinstance(env, ParallelEnv) and is_multi_agent_env(env)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.observation_space("agent_1").shape == (4,)
    assert env.action_space("agent_2") == gymnasium.spaces.Discrete(2)
    with pytest.raises(EnvError, match="num_agents must be >= 1"):
        make_multi_agent_env(MULTI_AGENT_CARTPOLE_ID, {"num_agents": 0})


def test_passes_pettingzoo_parallel_api_test():
    parallel_api_test(MultiAgentCartPole(num_agents=2), num_cycles=300)


def test_agents_end_independently_and_episode_ends_when_all_are_done():
    env = MultiAgentCartPole(num_agents=2, max_episode_steps=50)
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"agent_0", "agent_1"} and env.agents == ["agent_0", "agent_1"]
    # agent_0 pushes one way only: its pole falls within a few dozen steps (terminated);
    # agent_1 balances with a simple controller and reaches the 50-step limit (truncated).
    ended: dict[str, tuple[int, bool, bool]] = {}
    step = 0
    while env.agents:
        actions = {}
        for agent in env.agents:
            if agent == "agent_0":
                actions[agent] = 1
            else:
                actions[agent] = int(obs[agent][2] + 0.5 * obs[agent][3] > 0)
        obs, rewards, terms, truncs, _ = env.step(actions)
        step += 1
        assert set(rewards) == set(actions)  # only agents that acted report
        for agent in actions:
            if terms[agent] or truncs[agent]:
                ended[agent] = (step, terms[agent], truncs[agent])
                assert agent not in env.agents and agent in obs  # final obs is returned
    t0, term0, trunc0 = ended["agent_0"]
    t1, term1, trunc1 = ended["agent_1"]
    assert term0 and not trunc0 and t0 < 50
    assert trunc1 and not term1 and t1 == 50
    assert step == 50


def test_seeded_resets_are_reproducible():
    a, b = MultiAgentCartPole(2), MultiAgentCartPole(2)
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    for agent in oa:
        np.testing.assert_array_equal(oa[agent], ob[agent])
    assert not np.array_equal(oa["agent_0"], oa["agent_1"])  # sub-envs seeded apart


def test_creator_callables_and_aec_conversion():
    env = make_multi_agent_env(lambda cfg: MultiAgentCartPole(**cfg), {"num_agents": 1})
    assert env.possible_agents == ["agent_0"]
    pytest.importorskip("pygame")  # PettingZoo's classic envs import it for rendering
    from pettingzoo.classic.rps import rps

    aec = make_multi_agent_env(lambda cfg: rps.env(**cfg), {"num_actions": 3})
    assert isinstance(aec, ParallelEnv)  # converted with aec_to_parallel
    obs, _ = aec.reset(seed=0)
    assert set(obs) == {"player_0", "player_1"}
    for spec in ("classic/rps-v2", "pettingzoo.classic.rps.rps"):  # registry id, module path
        env = make_multi_agent_env(spec, {"max_cycles": 5})
        assert isinstance(env, ParallelEnv)
        env.reset(seed=0)
        steps = 0
        while env.agents:
            env.step({a: 0 for a in env.agents})
            steps += 1
        assert steps == 5


def test_errors_name_the_env():
    with pytest.raises(EnvError, match="single-agent Gymnasium env"):
        make_multi_agent_env("CartPole-v1")
    with pytest.raises(EnvError, match="unknown env 'rldataflow/MultiAgentCartPol-v0'.*did you "
                                       "mean 'rldataflow/MultiAgentCartPole-v0'"):
        make_multi_agent_env("rldataflow/MultiAgentCartPol-v0")
    with pytest.raises(EnvError, match="not a PettingZoo ParallelEnv.*leave `policies` empty"):
        make_multi_agent_env(lambda cfg: gymnasium.make("CartPole-v1"))
    with pytest.raises(EnvError, match="could not create env.*RuntimeError: boom"):
        make_multi_agent_env(lambda cfg: (_ for _ in ()).throw(RuntimeError("boom")))
