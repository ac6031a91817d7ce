"""Multi-agent environments: PettingZoo's Parallel API, and ``MultiAgentCartPole``.

rldataflow's native multi-agent interface is PettingZoo's **Parallel API**: ``reset(seed)``
returns ``(obs, infos)`` dicts keyed by agent id, ``step(actions)`` takes a dict of actions for
the live agents (``env.agents``) and returns ``(obs, rewards, terminations, truncations,
infos)`` dicts. Agents may appear (a new key in ``obs``) and disappear (terminated or truncated
agents leave ``env.agents``); the episode of the env ends when no agent is left.
AEC (turn-based) envs are converted with PettingZoo's own ``aec_to_parallel``.

:func:`make_multi_agent_env` creates such an env from

* a callable ``creator(env_config)`` returning a ``ParallelEnv`` or an ``AECEnv``;
* a name registered with :func:`rldataflow.envs.register` (e.g.
  ``"rldataflow/MultiAgentCartPole-v0"``);
* an id of PettingZoo's own registry (PettingZoo >= 1.25), e.g. ``"classic/rps-v2"``;
* a module path such as ``"pettingzoo.classic.rps_v2"``: its ``parallel_env(**env_config)``
  (or ``env(**env_config)`` converted from AEC) is called, which keeps YAML configs plain.

``MultiAgentCartPole``: ``num_agents`` independent CartPole-v1 copies, one per agent
(``agent_0``, ``agent_1``, ...). Each agent's sub-episode ends on its own (pole fallen:
terminated; 500 steps: truncated) and that agent leaves ``env.agents``; the env episode ends
when every agent is done. Registered as ``"rldataflow/MultiAgentCartPole-v0"`` with
``env_config={"num_agents": N}``.

Example::

    >>> env = make_multi_agent_env("rldataflow/MultiAgentCartPole-v0", {"num_agents": 2})
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["agent_0"].shape
    (['agent_0', 'agent_1'], (4,))
    >>> obs, rewards, terms, truncs, infos = env.step({"agent_0": 0, "agent_1": 1})
    >>> rewards
    {'agent_0': 1.0, 'agent_1': 1.0}
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from rldataflow.envs import registry
from rldataflow.envs.registry import EnvError, EnvSpec

try:  # PettingZoo is an optional dependency (the "multiagent" extra).
    from pettingzoo import AECEnv, ParallelEnv
    from pettingzoo.utils.conversions import aec_to_parallel

    HAVE_PETTINGZOO = True
except ImportError:  # pragma: no cover - exercised only without pettingzoo
    AECEnv = ParallelEnv = object  # type: ignore[assignment,misc]
    aec_to_parallel = None  # type: ignore[assignment]
    HAVE_PETTINGZOO = False

__all__ = [
    "MULTI_AGENT_CARTPOLE_ID",
    "MultiAgentCartPole",
    "is_multi_agent_env",
    "make_multi_agent_cartpole",
    "make_multi_agent_env",
]

MULTI_AGENT_CARTPOLE_ID = "rldataflow/MultiAgentCartPole-v0"

_INSTALL_HINT = "multi-agent envs need PettingZoo: pip install 'rldataflow[multiagent]'"


def _require_pettingzoo() -> None:
    if not HAVE_PETTINGZOO:
        raise EnvError(_INSTALL_HINT)


class _TwoActions(gymnasium.spaces.Discrete):
    """``Discrete(2)`` whose ``contains`` is cheap: CartPoleEnv asserts it on every step, and
    the generic check cost ~12% of a sampling step. Used only inside the sub-envs."""

    def contains(self, x: Any) -> bool:
        return x == 0 or x == 1


class MultiAgentCartPole(ParallelEnv):  # type: ignore[misc,valid-type]
    """``num_agents`` independent CartPole-v1 copies as the agents of one PettingZoo env.

    Agent ``agent_i`` balances its own pole; reward 1 per step it is alive. Its sub-episode
    ends when its pole falls (``terminated``) or after ``max_episode_steps`` steps
    (``truncated``), and the agent then leaves ``env.agents``. The env episode ends when all
    agents are done. Observation ``Box(4,)``, action ``Discrete(2)`` for every agent.
    """

    metadata = {"name": "rldataflow_multi_agent_cartpole_v0", "render_modes": [],
                "is_parallelizable": True}

    def __init__(self, num_agents: int = 2, max_episode_steps: int = 500) -> None:
        _require_pettingzoo()
        if int(num_agents) < 1:
            raise ValueError(f"num_agents must be >= 1, got {num_agents}")
        self.possible_agents = [f"agent_{i}" for i in range(int(num_agents))]
        self.agents: list[str] = []
        self.max_episode_steps = int(max_episode_steps)
        # Raw CartPoleEnv (no wrapper chain: ~2x cheaper per step); the time limit is ours.
        self._envs = {a: CartPoleEnv() for a in self.possible_agents}
        self._steps = {a: 0 for a in self.possible_agents}
        first = self._envs[self.possible_agents[0]]
        self._obs_space = first.observation_space
        self._act_space = first.action_space
        for env in self._envs.values():
            env.action_space = _TwoActions(2)
        self.render_mode = None

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        obs = {}
        for i, agent in enumerate(self.possible_agents):
            o, _ = self._envs[agent].reset(seed=None if seed is None else int(seed) + i)
            obs[agent] = o
            self._steps[agent] = 0
        self.agents = list(self.possible_agents)
        return obs, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            if agent not in actions:
                raise ValueError(f"MultiAgentCartPole.step: no action for live agent {agent!r}")
            o, r, term, trunc, info = self._envs[agent].step(actions[agent])
            self._steps[agent] += 1
            trunc = bool(trunc) or (not term and self._steps[agent] >= self.max_episode_steps)
            obs[agent], rewards[agent] = o, float(r)
            terms[agent], truncs[agent], infos[agent] = bool(term), trunc, info
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


def make_multi_agent_cartpole(env_config: dict | None = None) -> MultiAgentCartPole:
    """Creator registered as ``"rldataflow/MultiAgentCartPole-v0"`` (``{"num_agents": N}``)."""
    return MultiAgentCartPole(**dict(env_config or {}))


def is_multi_agent_env(env: Any) -> bool:
    """Whether ``env`` is a PettingZoo env (Parallel or AEC)."""
    return HAVE_PETTINGZOO and isinstance(env, (ParallelEnv, AECEnv))


def _describe(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    return getattr(spec, "__qualname__", None) or getattr(spec, "__name__", None) or repr(spec)


def _from_pettingzoo_registry(name: str, config: dict) -> Any | None:
    """``pettingzoo.make(...)`` for an id of PettingZoo's registry (PettingZoo >= 1.25), else
    None. The parallel entry point is preferred; AEC-only envs come back as AEC."""
    import pettingzoo

    make = getattr(pettingzoo, "make", None)
    if make is None:
        return None
    from pettingzoo.env_registry.helpers import find_spec

    for kind, reg in (("parallel", pettingzoo.parallel_registry),
                      ("aec", pettingzoo.aec_registry)):
        try:
            find_spec(reg, name)
        except Exception:  # not in this registry (its errors vary by PettingZoo version)
            continue
        return make(kind, name, **config)
    return None


def _from_module(path: str, config: dict) -> Any:
    module = importlib.import_module(path)
    if hasattr(module, "parallel_env"):
        return module.parallel_env(**config)
    if hasattr(module, "env"):
        return module.env(**config)
    raise EnvError(f"module {path!r} has neither parallel_env() nor env()")


def make_multi_agent_env(spec: EnvSpec, env_config: dict | None = None) -> Any:
    """Create a PettingZoo ``ParallelEnv`` (AEC envs converted with ``aec_to_parallel``).

    ``spec``: a creator callable, a registered name, a PettingZoo registry id
    (``"classic/rps-v2"``) or a module path with ``parallel_env()`` / ``env()``
    (``"pettingzoo.classic.rps_v2"``). Errors are :class:`EnvError` naming the env;
    a single-agent Gymnasium env is refused with a hint (leave ``policies`` empty for those).
    """
    _require_pettingzoo()
    config = dict(env_config or {})
    try:
        if callable(spec) and not isinstance(spec, str):
            env = spec(config)
        elif isinstance(spec, str):
            # The registry has no public lookup of a creator that skips make_env's
            # gymnasium.Env check; multi-agent creators live in the same registry.
            creator = registry._REGISTRY.get(spec)
            if creator is not None:
                env = creator(config)
            elif spec in gymnasium.envs.registry:
                raise EnvError(f"{spec!r} is a single-agent Gymnasium env; multi-agent "
                               "training needs a PettingZoo env (or leave `policies` empty)")
            else:
                env = _from_pettingzoo_registry(spec, config) if "/" in spec else None
                if env is None:
                    try:
                        env = _from_module(spec, config)
                    except ModuleNotFoundError:
                        raise registry._unknown_env_error(spec) from None
        else:
            raise EnvError(f"env spec must be a registered name, a module path or a callable, "
                           f"got {type(spec).__name__}")
    except EnvError:
        raise
    except Exception as err:  # re-raised with the env's name, the original chained
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise EnvError(f"could not create env {_describe(spec)!r}: {detail}") from err
    if isinstance(env, AECEnv):
        env = aec_to_parallel(env)
    if not isinstance(env, ParallelEnv):
        hint = (" (a single-agent Gymnasium env: leave `policies` empty)"
                if isinstance(env, gymnasium.Env) else "")
        raise EnvError(f"env creator for {_describe(spec)!r} returned {type(env).__name__}, "
                       f"not a PettingZoo ParallelEnv or AECEnv{hint}")
    return env
