"""MinAtar (Young & Tian 2019, "MinAtar: An Atari-inspired testbed...") as Gymnasium envs.

Registered in rldataflow's env registry as ``MinAtar/Asterix-v1``, ``MinAtar/Breakout-v1``,
``MinAtar/Freeway-v1``, ``MinAtar/Seaquest-v1`` and ``MinAtar/SpaceInvaders-v1`` (MinAtar's own
gym registration targets the old ``gym`` package, so it is not used). Observations are the
game's ``(10, 10, C)`` boolean channels as ``uint8`` 0 / 255, channel-last, so that
:func:`rldataflow.policies.models.make_encoder` picks the CNN (whose 1/255 scaling then gives
0 / 1 inputs). Actions are the game's minimal action set (``Discrete(3)`` for Breakout).

``env_config`` keys: ``sticky_action_prob`` (default 0.1, MinAtar's own), ``difficulty_ramping``
(default true), ``minimal_actions`` (default true; false: all 6 actions) and
``max_episode_steps`` (default none: the games end by themselves).

Example::

    >>> from rldataflow.envs import make_env
    >>> env = make_env("MinAtar/Breakout-v1")
    >>> env.observation_space.shape, env.action_space
    ((10, 10, 4), Discrete(3))
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from rldataflow.envs.registry import EnvError, register

__all__ = ["MINATAR_GAMES", "MinAtarEnv", "register_minatar_envs"]

#: rldataflow id -> MinAtar module name.
MINATAR_GAMES = {
    "MinAtar/Asterix-v1": "asterix",
    "MinAtar/Breakout-v1": "breakout",
    "MinAtar/Freeway-v1": "freeway",
    "MinAtar/Seaquest-v1": "seaquest",
    "MinAtar/SpaceInvaders-v1": "space_invaders",
}
_KEYS = ("sticky_action_prob", "difficulty_ramping", "minimal_actions", "max_episode_steps")


class MinAtarEnv(gymnasium.Env):
    """One MinAtar game (``game`` is MinAtar's module name, e.g. ``"breakout"``)."""

    metadata = {"render_modes": []}

    def __init__(self, game: str, sticky_action_prob: float = 0.1,
                 difficulty_ramping: bool = True, minimal_actions: bool = True) -> None:
        try:
            from minatar import Environment
        except ImportError as err:
            raise EnvError(f"MinAtar game {game!r} needs minatar: "
                           'pip install "rldataflow[minatar]"') from err
        self.game = Environment(game, sticky_action_prob=sticky_action_prob,
                                difficulty_ramping=difficulty_ramping)
        self._actions = (list(self.game.minimal_action_set()) if minimal_actions
                         else list(range(self.game.num_actions())))
        self.action_space = spaces.Discrete(len(self._actions))
        shape = tuple(self.game.state_shape())
        self.observation_space = spaces.Box(0, 255, shape, dtype=np.uint8)

    def _obs(self) -> np.ndarray:
        return self.game.state().astype(np.uint8) * np.uint8(255)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed)
        self.game.reset()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, terminal = self.game.act(self._actions[int(action)])
        return self._obs(), float(reward), bool(terminal), False, {}


def _creator(game: str):
    def make(env_config: dict) -> gymnasium.Env:
        unknown = sorted(set(env_config) - set(_KEYS))
        if unknown:
            raise EnvError(f"unknown env_config key {unknown[0]!r} for MinAtar; "
                           f"valid keys: {list(_KEYS)}")
        cfg = dict(env_config)
        limit = cfg.pop("max_episode_steps", None)
        env: gymnasium.Env = MinAtarEnv(game, **cfg)
        if limit is not None:
            env = gymnasium.wrappers.TimeLimit(env, int(limit))
        return env

    make.__qualname__ = f"minatar:{game}"
    return make


def register_minatar_envs() -> None:
    """Register the ``MinAtar/...-v1`` ids (minatar itself is imported only when one is made)."""
    for env_id, game in MINATAR_GAMES.items():
        register(env_id, _creator(game))
