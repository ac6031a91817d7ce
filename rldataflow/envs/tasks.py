"""Task distributions: envs whose reward or dynamics depend on a task drawn from a family.

Meta-learning algorithms (MAML, :mod:`rldataflow.algorithms.maml`) train on many tasks of one
family and are judged on tasks they never saw. An env takes part by following
:class:`TaskSettableEnv`:

* ``sample_tasks(n, seed=None) -> list[task]``: ``n`` tasks drawn from the family's
  distribution (``seed`` makes the draw reproducible; without one the env's own RNG draws);
* ``set_task(task)``: later episodes (from the next ``reset``) are episodes of ``task``;
* ``get_task() -> task``: the current task.

A task is a small dict of floats and lists (it travels to worker processes and into logs).
Wrappers (``TimeLimit``, ...) are looked through by :func:`task_env`.

Two families ship here, both registered with :func:`rldataflow.envs.make_env`:

* ``rldataflow/PointNavigation-v0`` (:class:`PointNavigationEnv`): the "2D navigation" tasks of
  Finn et al. 2017 (arXiv:1703.03400, section 5.3): a point starts at the origin, the task is
  a goal position drawn uniformly from ``[-0.5, 0.5]^2``, the observation is the position,
  the action a velocity clipped to ``[-0.1, 0.1]`` per axis, the reward the negative squared
  distance to the goal, episodes last ``horizon`` steps (100 in the paper).
* ``rldataflow/PendulumTasks-v0`` (:class:`PendulumTasksEnv`): Gymnasium's Pendulum whose
  gravity and pole mass are the task (each drawn uniformly from a range around the defaults).

Example::

    >>> env = make_env(POINT_NAVIGATION_ID, {"horizon": 20})
    >>> tasks = env.sample_tasks(2, seed=0)
    >>> env.set_task(tasks[0])
    >>> env.get_task() == tasks[0]
    True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.wrappers import TimeLimit

__all__ = ["PENDULUM_TASKS_ID", "POINT_NAVIGATION_ID", "PendulumTasksEnv", "PointNavigationEnv",
           "Task", "TaskSettableEnv", "make_pendulum_tasks", "make_point_navigation",
           "task_env"]

#: Registered names of the two task families.
POINT_NAVIGATION_ID = "rldataflow/PointNavigation-v0"
PENDULUM_TASKS_ID = "rldataflow/PendulumTasks-v0"

Task = dict[str, Any]


@runtime_checkable
class TaskSettableEnv(Protocol):
    """An env with a task distribution (see the module docstring)."""

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]: ...
    def set_task(self, task: Task) -> None: ...
    def get_task(self) -> Task: ...


def task_env(env: Any) -> TaskSettableEnv:
    """The :class:`TaskSettableEnv` inside ``env`` (through wrappers); a one-line
    ``TypeError`` naming the env when there is none."""
    inner = env
    while not isinstance(inner, TaskSettableEnv):
        nxt = getattr(inner, "env", None)
        if nxt is None or nxt is inner:
            raise TypeError(f"env {env!r} has no task distribution: it must follow "
                            "rldataflow.envs.tasks.TaskSettableEnv (sample_tasks, set_task, "
                            "get_task), e.g. rldataflow/PointNavigation-v0")
        inner = nxt
    return inner


class PointNavigationEnv(gymnasium.Env):
    """2-D point navigation to a goal, the task (Finn et al. 2017, section 5.3).

    Args:
        horizon: steps per episode (the episode is truncated then; 100 in the paper).
        goal_low, goal_high: goals are drawn uniformly from ``[goal_low, goal_high]^2``.
        max_speed: actions (velocities) are clipped to ``[-max_speed, max_speed]`` per axis.
        goal: the initial task's goal (default: ``(goal_high, goal_high) / 2``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, horizon: int = 100, goal_low: float = -0.5, goal_high: float = 0.5,
                 max_speed: float = 0.1, goal: tuple[float, float] | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"PointNavigation: horizon must be >= 1, got {horizon}")
        if not goal_low < goal_high:
            raise ValueError(f"PointNavigation: goal_low ({goal_low}) must be < goal_high "
                             f"({goal_high})")
        self.horizon = int(horizon)
        self.goal_low, self.goal_high = float(goal_low), float(goal_high)
        self.max_speed = float(max_speed)
        bound = max(abs(self.goal_low), abs(self.goal_high)) + self.max_speed * self.horizon
        self.observation_space = spaces.Box(-bound, bound, (2,), np.float32)
        self.action_space = spaces.Box(-self.max_speed, self.max_speed, (2,), np.float32)
        start = 0.5 * self.goal_high
        self._goal = np.array(goal if goal is not None else (start, start), np.float64)
        self._pos = np.zeros(2, np.float64)
        self._t = 0
        self._task_rng = np.random.default_rng()

    # -- the task interface -------------------------------------------------------------------
    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        rng = self._task_rng if seed is None else np.random.default_rng(seed)
        goals = rng.uniform(self.goal_low, self.goal_high, size=(int(n), 2))
        return [{"goal": [float(x), float(y)]} for x, y in goals]

    def set_task(self, task: Task) -> None:
        goal = np.asarray(task["goal"], np.float64)
        if goal.shape != (2,):
            raise ValueError(f"PointNavigation task needs a 2-D 'goal', got {task!r}")
        self._goal = goal

    def get_task(self) -> Task:
        return {"goal": [float(g) for g in self._goal]}

    # -- the env ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos[:] = 0.0
        self._t = 0
        return self._pos.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        velocity = np.clip(np.asarray(action, np.float64).reshape(2), -self.max_speed,
                           self.max_speed)
        self._pos += velocity
        self._t += 1
        reward = -float(np.sum((self._pos - self._goal) ** 2))
        return self._pos.astype(np.float32), reward, False, self._t >= self.horizon, {}


class PendulumTasksEnv(PendulumEnv):
    """Pendulum-v1 whose gravity ``g`` and pole mass ``m`` are the task.

    Args:
        g_range, m_range: the uniform ranges tasks are drawn from (defaults: +-50% around
            Pendulum's g = 10 and m = 1).
    """

    def __init__(self, g_range: tuple[float, float] = (5.0, 15.0),
                 m_range: tuple[float, float] = (0.5, 1.5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.g_range = (float(g_range[0]), float(g_range[1]))
        self.m_range = (float(m_range[0]), float(m_range[1]))
        self._task_rng = np.random.default_rng()

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        rng = self._task_rng if seed is None else np.random.default_rng(seed)
        return [{"g": float(rng.uniform(*self.g_range)), "m": float(rng.uniform(*self.m_range))}
                for _ in range(int(n))]

    def set_task(self, task: Task) -> None:
        self.g, self.m = float(task["g"]), float(task["m"])

    def get_task(self) -> Task:
        return {"g": float(self.g), "m": float(self.m)}


def make_point_navigation(config: dict) -> gymnasium.Env:
    """The :class:`PointNavigationEnv` creator (``env_config`` = its arguments)."""
    return PointNavigationEnv(**config)


def make_pendulum_tasks(config: dict) -> gymnasium.Env:
    """The :class:`PendulumTasksEnv` creator, with Pendulum's 200-step time limit
    (``max_episode_steps`` in ``env_config`` changes it)."""
    config = dict(config)
    steps = int(config.pop("max_episode_steps", 200))
    return TimeLimit(PendulumTasksEnv(**config), max_episode_steps=steps)
