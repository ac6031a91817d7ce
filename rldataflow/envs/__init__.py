"""Environments: registry, observation/action space handling and a same-step-autoreset vector env.

Example::

    from rldataflow.envs import make_vector_env

    venv = make_vector_env("CartPole-v1", num_envs=8, seed=0)
    obs = venv.reset()                       # (8, 4) float32
    obs, rew, term, trunc, final_obs, infos = venv.step([0] * 8)

This layer imports Gymnasium and numpy only (no torch).
"""

from rldataflow.envs.group_agents import GroupAgents, GroupedEnvCreator, GroupLayout
from rldataflow.envs.memory import (
    RECALL_CUE_ID,
    STATELESS_CARTPOLE_ID,
    RecallCueEnv,
    StatelessCartPoleEnv,
    make_recall_cue,
    make_stateless_cartpole,
)
from rldataflow.envs.minatar import MINATAR_GAMES, register_minatar_envs
from rldataflow.envs.multi_agent import (
    MULTI_AGENT_CARTPOLE_ID,
    MultiAgentCartPole,
    is_multi_agent_env,
    make_multi_agent_cartpole,
    make_multi_agent_env,
)
from rldataflow.envs.registry import (
    EnvCreator,
    EnvError,
    EnvSpec,
    make_env,
    register,
    registered_envs,
)
from rldataflow.envs.sleep_env import SLEEP_CARTPOLE_ID, SleepCartPoleEnv, make_sleep_cartpole
from rldataflow.envs.spaces import (
    ObsPreprocessor,
    UnsupportedSpaceError,
    action_to_env_fn,
    check_action_space,
    is_image_space,
    obs_preprocessor,
)
from rldataflow.envs.tasks import (
    PENDULUM_TASKS_ID,
    POINT_NAVIGATION_ID,
    TaskSettableEnv,
    make_pendulum_tasks,
    make_point_navigation,
    task_env,
)
from rldataflow.envs.two_step_game import TWO_STEP_GAME_ID, TwoStepGame, make_two_step_game
from rldataflow.envs.vector_env import VectorEnv, make_vector_env

register(SLEEP_CARTPOLE_ID, make_sleep_cartpole)
register(MULTI_AGENT_CARTPOLE_ID, make_multi_agent_cartpole)
register(TWO_STEP_GAME_ID, make_two_step_game)
register(POINT_NAVIGATION_ID, make_point_navigation)
register(PENDULUM_TASKS_ID, make_pendulum_tasks)
register_minatar_envs()  # MinAtar/...-v1 (minatar imported only when one is made)
register(STATELESS_CARTPOLE_ID, make_stateless_cartpole)
register(RECALL_CUE_ID, make_recall_cue)

__all__ = [
    "MINATAR_GAMES",
    "MULTI_AGENT_CARTPOLE_ID",
    "PENDULUM_TASKS_ID",
    "POINT_NAVIGATION_ID",
    "RECALL_CUE_ID",
    "STATELESS_CARTPOLE_ID",
    "RecallCueEnv",
    "StatelessCartPoleEnv",
    "make_recall_cue",
    "make_stateless_cartpole",
    "SLEEP_CARTPOLE_ID",
    "TWO_STEP_GAME_ID",
    "EnvCreator",
    "EnvError",
    "EnvSpec",
    "GroupAgents",
    "GroupLayout",
    "GroupedEnvCreator",
    "MultiAgentCartPole",
    "ObsPreprocessor",
    "SleepCartPoleEnv",
    "TwoStepGame",
    "TaskSettableEnv",
    "UnsupportedSpaceError",
    "VectorEnv",
    "action_to_env_fn",
    "check_action_space",
    "is_image_space",
    "is_multi_agent_env",
    "make_env",
    "make_multi_agent_cartpole",
    "make_multi_agent_env",
    "make_pendulum_tasks",
    "make_point_navigation",
    "make_sleep_cartpole",
    "make_two_step_game",
    "make_vector_env",
    "obs_preprocessor",
    "register",
    "task_env",
    "registered_envs",
]
