"""GroupAgents: joint spaces and layout, joint steps, team rewards, ends of groups, the state
fallback, PettingZoo's API test, bad groups."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("pettingzoo")

from pettingzoo.test import parallel_api_test  # noqa: E402

from rldataflow.envs import EnvError, MultiAgentCartPole, TwoStepGame  # noqa: E402
from rldataflow.envs.group_agents import GroupAgents, GroupedEnvCreator  # noqa: E402


def test_two_step_game_as_one_group_passes_the_api_test_and_pays_the_paper_matrix():
    env = GroupAgents(TwoStepGame(), {"team": ["agent_0", "agent_1"]})
    parallel_api_test(env, num_cycles=20)
    assert env.possible_agents == ["team"]
    assert env.action_space("team") == spaces.MultiDiscrete([2, 2])
    assert env.observation_space("team").shape == (3 + 3 + 3,)  # two obs, then the state
    layout = env.layout("team")
    assert (layout.obs_sizes, layout.state_size, layout.num_actions) == ([3, 3], 3, [2, 2])
    obs, _ = env.reset(seed=0)
    assert obs["team"].tolist() == [1, 0, 0] * 3
    obs, rew, term, trunc, _ = env.step({"team": np.array([1, 0])})     # -> 2B
    assert obs["team"][-3:].tolist() == [0, 0, 1] and rew == {"team": 0.0}
    _, rew, term, trunc, _ = env.step({"team": np.array([1, 1])})
    assert rew == {"team": 8.0} and term == {"team": True} and trunc == {"team": False}
    assert env.agents == []


def test_members_that_finish_early_see_zeros_and_the_group_ends_with_the_last():
    inner = MultiAgentCartPole(2, max_episode_steps=60)
    env = GroupAgents(inner, {"team": ["agent_0", "agent_1"]}, state=False)
    assert env.layout("team").state_size == 0
    obs, _ = env.reset(seed=3)
    steps, ended_one = 0, False
    while env.agents:
        gone_before = "agent_0" not in inner.agents
        # agent_0 pushes right all the time (falls soon), agent_1 alternates (lasts longer)
        obs, rew, term, trunc, _ = env.step({"team": np.array([1, steps % 2])})
        steps += 1
        if "agent_0" not in inner.agents and inner.agents:
            ended_one = True
            assert np.all(obs["team"][:4] == 0) and np.any(obs["team"][4:] != 0)
            if gone_before:
                assert rew["team"] == 1.0  # only the live member's reward
    # terminated if both poles fell, truncated if agent_1 reached the time limit
    assert ended_one and term["team"] == (steps < 60) and trunc["team"] == (steps == 60)


def test_state_falls_back_to_all_observations_and_ungrouped_agents_pass_through():
    env = GroupAgents(MultiAgentCartPole(3), {"pair": ["agent_0", "agent_1"]})
    assert env.possible_agents == ["pair", "agent_2"]
    assert env.layout("pair").state_size == 12   # 3 agents x 4, no env.state()
    obs, _ = env.reset(seed=0)
    assert obs["pair"].shape == (8 + 12,) and obs["agent_2"].shape == (4,)
    np.testing.assert_array_equal(obs["pair"][8:], np.concatenate(
        [obs["pair"][:8], obs["agent_2"]]))
    obs, rew, _, _, _ = env.step({"pair": np.array([0, 1]), "agent_2": 0})
    assert rew == {"pair": 2.0, "agent_2": 1.0}


def test_bad_groups_are_one_line_errors_naming_the_agent():
    with pytest.raises(EnvError, match="names agent 'nobody'"):
        GroupAgents(TwoStepGame(), {"team": ["agent_0", "nobody"]})
    with pytest.raises(EnvError, match="agent 'agent_0' is in groups"):
        GroupAgents(TwoStepGame(), {"a": ["agent_0"], "b": ["agent_0", "agent_1"]})
    with pytest.raises(EnvError, match="clash"):
        GroupAgents(MultiAgentCartPole(2), {"agent_1": ["agent_0"]})


def test_creator_is_picklable_and_groups_every_agent_by_default():
    import pickle

    creator = pickle.loads(pickle.dumps(GroupedEnvCreator("rldataflow/TwoStepGame-v0")))
    env = creator({})
    assert env.possible_agents == ["team"] and env.layout("team").members == [
        "agent_0", "agent_1"]


def test_mpe_simple_spread_continuous_group_has_a_box_joint_action():
    pytest.importorskip("mpe2")
    env = GroupedEnvCreator("mpe2.simple_spread_v3")({"N": 2, "continuous_actions": True})
    parallel_api_test(env, num_cycles=30)
    space = env.action_space("team")
    assert isinstance(space, spaces.Box) and space.shape == (10,)
    assert env.layout("team").state_size == 24   # MPE's own state()


def test_missing_mpe2_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpe2" else real(name, *a))
    with pytest.raises(EnvError, match=r"pip install 'rldataflow\[mpe\]'"):
        GroupedEnvCreator("mpe2.simple_spread_v3")({})
