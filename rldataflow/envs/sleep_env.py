"""``SleepCartPole``: CartPole whose ``step`` sleeps, to emulate slow simulators in benchmarks."""

from __future__ import annotations

import time
from typing import Any

from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.wrappers import TimeLimit

__all__ = ["SLEEP_CARTPOLE_ID", "SleepCartPoleEnv", "make_sleep_cartpole"]

#: Registered name of the env (see :func:`rldataflow.envs.make_env`).
SLEEP_CARTPOLE_ID = "rldataflow/SleepCartPole-v0"


class SleepCartPoleEnv(CartPoleEnv):
    """CartPole-v1 dynamics; every ``step`` first sleeps ``sleep_s`` seconds (default 0.002).

    Sleeping releases the GIL and the core, so it models an env bound by an external simulator:
    scaling the number of workers should scale throughput even on a small machine.

    Example::

        >>> env = make_sleep_cartpole({"sleep_s": 0.0})
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape
        (4,)
    """

    def __init__(self, sleep_s: float = 0.002, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sleep_s = float(sleep_s)

    def step(self, action: Any) -> Any:
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        return super().step(action)


def make_sleep_cartpole(env_config: dict | None = None) -> TimeLimit:
    """Creator registered as ``"rldataflow/SleepCartPole-v0"``: keys ``sleep_s`` (default 0.002)
    and ``max_episode_steps`` (default 500, like CartPole-v1)."""
    config = dict(env_config or {})
    max_steps = int(config.pop("max_episode_steps", 500))
    return TimeLimit(SleepCartPoleEnv(**config), max_episode_steps=max_steps)
