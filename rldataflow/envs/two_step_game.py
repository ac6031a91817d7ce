"""The two-step cooperative matrix game of the QMIX paper (Rashid et al. 2018, section 5.1,
figure 3), as a PettingZoo Parallel env.

Two agents, two actions each, two steps. In state 1 (start) agent 0's action picks the next
state: action 0 -> state 2A, action 1 -> state 2B; agent 1's action does not matter and the
reward is 0. In 2A every joint action pays 7; in 2B the payoff matrix is ``[[0, 1], [1, 8]]``
(agent 0's action indexes the row). The episode then ends (terminated). The optimum is 8
(go to 2B, both play 1); a uniformly random policy earns ``0.5 * 7 + 0.5 * 10 / 4 = 4.75``.
A value factorisation that cannot represent the 2B matrix (VDN's sum) settles for 7; QMIX's
monotonic mixing with the state as hypernetwork input can reach 8 (the paper's table 1).

Each agent observes the one-hot state (3 values) and the env's ``state()`` is the same one-hot
vector. Registered as ``"rldataflow/TwoStepGame-v0"``. Example::

    >>> env = TwoStepGame()
    >>> obs, _ = env.reset(seed=0)
    >>> obs["agent_0"].tolist()
    [1.0, 0.0, 0.0]
    >>> _ = env.step({"agent_0": 1, "agent_1": 0})              # -> state 2B
    >>> env.step({"agent_0": 1, "agent_1": 1})[1]
    {'agent_0': 4.0, 'agent_1': 4.0}
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from rldataflow.envs.multi_agent import ParallelEnv, _require_pettingzoo

__all__ = ["TWO_STEP_GAME_ID", "TwoStepGame", "make_two_step_game"]

TWO_STEP_GAME_ID = "rldataflow/TwoStepGame-v0"

_PAYOFF_2B = np.array([[0.0, 1.0], [1.0, 8.0]])


class TwoStepGame(ParallelEnv):  # type: ignore[misc,valid-type]
    """See the module docs. Each agent receives half the team payoff, so the group's (summed)
    reward is the paper's."""

    metadata = {"name": "rldataflow_two_step_game_v0", "render_modes": [],
                "is_parallelizable": True}

    def __init__(self) -> None:
        _require_pettingzoo()
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._obs_space = gymnasium.spaces.Box(0.0, 1.0, (3,), np.float32)
        self._act_space = gymnasium.spaces.Discrete(2)
        self.state_space = self._obs_space
        self._state = 0
        self.render_mode = None

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_space

    def state(self) -> np.ndarray:
        s = np.zeros(3, np.float32)
        s[self._state] = 1.0
        return s

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: self.state() for a in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        self._state = 0
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        a0, a1 = int(actions["agent_0"]), int(actions["agent_1"])
        if self._state == 0:
            self._state = 1 + a0
            payoff, done = 0.0, False
        else:
            payoff = 7.0 if self._state == 1 else float(_PAYOFF_2B[a0, a1])
            done = True
        obs = self._obs()
        rewards = {a: payoff / 2 for a in self.agents}
        terms = {a: done for a in self.agents}
        truncs = {a: False for a in self.agents}
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None


def make_two_step_game(env_config: dict | None = None) -> TwoStepGame:
    """Creator registered as ``"rldataflow/TwoStepGame-v0"`` (no options)."""
    return TwoStepGame(**dict(env_config or {}))
