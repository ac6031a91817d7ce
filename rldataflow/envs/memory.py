"""Memory tasks: envs a feed-forward policy cannot solve and a recurrent one can.

* ``StatelessCartPole-v1``: CartPole-v1 with the velocities masked, observations ``[x, theta]``;
  the policy must infer the velocities from successive positions.
* ``rldataflow/RecallCue-v0``: a cue (+-1) shown at the first step only; the action at the last
  step of the episode must name it (reward 1, else 0); a memoryless policy averages 0.5.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.wrappers import TimeLimit

__all__ = ["RECALL_CUE_ID", "STATELESS_CARTPOLE_ID", "RecallCueEnv", "StatelessCartPoleEnv",
           "make_recall_cue", "make_stateless_cartpole"]

#: Registered names (see :func:`rldataflow.envs.make_env`).
STATELESS_CARTPOLE_ID = "StatelessCartPole-v1"
RECALL_CUE_ID = "rldataflow/RecallCue-v0"


class StatelessCartPoleEnv(CartPoleEnv):
    """CartPole dynamics; the observation keeps the cart position and the pole angle only.

    Example::

        >>> env = make_stateless_cartpole()
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape, env.spec is None
        ((2,), True)
    """

    _KEEP = np.array([0, 2])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        high = self.observation_space.high[self._KEEP]
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(**kwargs)
        return obs[self._KEEP], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, term, trunc, info = super().step(action)
        return obs[self._KEEP], reward, term, trunc, info


def make_stateless_cartpole(env_config: dict | None = None) -> TimeLimit:
    """Creator registered as ``"StatelessCartPole-v1"``: ``max_episode_steps`` (default 500,
    like CartPole-v1); other keys go to ``CartPoleEnv``."""
    config = dict(env_config or {})
    max_steps = int(config.pop("max_episode_steps", 500))
    return TimeLimit(StatelessCartPoleEnv(**config), max_episode_steps=max_steps)


class RecallCueEnv(gymnasium.Env):
    """Observation ``[cue, first]``: ``[+-1, 1]`` at the first step, ``[0, 0]`` after. The
    episode lasts ``length`` steps; the last action earns 1 if it is ``cue > 0``, else 0.

    Example::

        >>> env = RecallCueEnv(length=2)
        >>> obs, _ = env.reset(seed=0)
        >>> cue = obs[0]
        >>> env.step(0)[1:4], env.step(int(cue > 0))[1:4]
        ((0.0, False, False), (1.0, True, False))
    """

    def __init__(self, length: int = 4) -> None:
        if int(length) < 1:
            raise ValueError(f"RecallCueEnv: length must be >= 1, got {length}")
        self.length = int(length)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._cue = 1.0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._cue = float(self.np_random.choice([-1.0, 1.0]))
        self._t = 0
        return np.array([self._cue, 1.0], np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        done = self._t >= self.length
        reward = float(done and int(action) == int(self._cue > 0))
        return np.zeros(2, np.float32), reward, done, False, {}


def make_recall_cue(env_config: dict | None = None) -> RecallCueEnv:
    """Creator registered as ``"rldataflow/RecallCue-v0"``: key ``length`` (default 4)."""
    return RecallCueEnv(**dict(env_config or {}))
