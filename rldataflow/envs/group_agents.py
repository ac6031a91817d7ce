"""Agent grouping: several agents of a PettingZoo env act as one "super-agent".

``GroupAgents(env, groups={"team": ["agent_0", "agent_1"]})`` is a PettingZoo Parallel env
whose agent ``"team"`` observes the concatenation of its members' observations (and, with
``state=True``, the global state after them), takes one joint action (``MultiDiscrete`` when
all members are ``Discrete``, a concatenated ``Box`` when all are ``Box``) and receives the sum
of its members' rewards. Agents in no group pass through unchanged. This is what QMIX and
MADDPG train on: one row of the group's batch is one *joint* transition ``(o_1..o_N, s,
a_1..a_N, r, o'_1..o'_N, s')``, so the rollout workers, replay buffers and plans need nothing
multi-agent-specific beyond it.

Layout of a group's observation (:meth:`GroupAgents.layout`)::

    [ obs of member 0 | obs of member 1 | ... | state ]      (each flattened, float32)

The global state is ``env.state()`` when the env implements it (MPE does), else the
concatenation of every possible agent's last observation (zeros for agents not present).
A member that is done before the rest of its group sees zeros and its actions are not sent;
the group is done when all its members are (``truncated`` if any member was truncated, else
``terminated``).

Example::

    >>> from mpe2 import simple_spread_v3                       # doctest: +SKIP
    >>> env = GroupAgents(simple_spread_v3.parallel_env(N=2), {"team": ["agent_0", "agent_1"]})
    >>> env.observation_space("team").shape, env.action_space("team")  # doctest: +SKIP
    ((48,), MultiDiscrete([5 5]))
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from rldataflow.envs.multi_agent import ParallelEnv, _require_pettingzoo, make_multi_agent_env
from rldataflow.envs.registry import EnvError, EnvSpec

__all__ = ["GroupAgents", "GroupLayout", "GroupedEnvCreator"]


class GroupLayout:
    """Where each member's observation, the state and each member's action sit in a group's
    flat observation and action. ``obs_sizes[i]``/``action_sizes[i]`` belong to ``members[i]``;
    ``num_actions[i]`` is ``n`` of a ``Discrete`` member (``None`` for ``Box`` members)."""

    def __init__(self, members: Sequence[str], obs_sizes: Sequence[int], state_size: int,
                 action_sizes: Sequence[int], num_actions: Sequence[int | None]) -> None:
        self.members = list(members)
        self.obs_sizes = [int(s) for s in obs_sizes]
        self.state_size = int(state_size)
        self.action_sizes = [int(s) for s in action_sizes]
        self.num_actions = list(num_actions)

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def obs_size(self) -> int:
        """Size of the members' part of the observation (without the state)."""
        return sum(self.obs_sizes)

    def to_dict(self) -> dict[str, Any]:
        return {"members": self.members, "obs_sizes": self.obs_sizes,
                "state_size": self.state_size, "action_sizes": self.action_sizes,
                "num_actions": self.num_actions}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupLayout:
        return cls(d["members"], d["obs_sizes"], d["state_size"], d["action_sizes"],
                   d["num_actions"])

    def __repr__(self) -> str:
        return (f"GroupLayout(members={self.members}, obs_sizes={self.obs_sizes}, "
                f"state_size={self.state_size}, action_sizes={self.action_sizes})")


def _flat_size(space: gymnasium.Space, agent: str) -> int:
    if not isinstance(space, spaces.Box):
        raise EnvError(f"GroupAgents: agent {agent!r} has observation space {space}; grouping "
                       "needs Box observations")
    return int(np.prod(space.shape))


class GroupAgents(ParallelEnv):  # type: ignore[misc,valid-type]
    """A PettingZoo Parallel env in which each group of agents is one agent (see the module
    docs).

    Args:
        env: a PettingZoo ``ParallelEnv``.
        groups: group id -> member agent ids (each agent in at most one group; the ids must
            not clash with the ungrouped agents').
        state: append the global state to each group's observation.
    """

    metadata = {"name": "grouped_agents", "render_modes": [], "is_parallelizable": True}

    def __init__(self, env: Any, groups: Mapping[str, Sequence[str]], state: bool = True) -> None:
        _require_pettingzoo()
        self.env = env
        possible = list(env.possible_agents)
        self.groups = {str(g): list(m) for g, m in groups.items()}
        if not self.groups:
            raise EnvError("GroupAgents: groups is empty")
        seen: dict[str, str] = {}
        for g, members in self.groups.items():
            if not members:
                raise EnvError(f"GroupAgents: group {g!r} has no members")
            for a in members:
                if a not in possible:
                    raise EnvError(f"GroupAgents: group {g!r} names agent {a!r}, not one of the "
                                   f"env's agents {possible}")
                if a in seen:
                    raise EnvError(f"GroupAgents: agent {a!r} is in groups {seen[a]!r} and {g!r}")
                seen[a] = g
        self._group_of = seen
        self._ungrouped = [a for a in possible if a not in seen]
        clash = set(self.groups) & set(self._ungrouped)
        if clash:
            raise EnvError(f"GroupAgents: group ids {sorted(clash)} clash with agent ids")
        self.possible_agents = list(self.groups) + self._ungrouped
        self.agents: list[str] = []
        self.with_state = bool(state)
        self._obs_sizes = {a: _flat_size(env.observation_space(a), a) for a in possible}
        self._has_state = self._probe_state()
        state_size = 0
        if self.with_state:
            state_size = (int(np.prod(env.state_space.shape)) if self._has_state
                          else sum(self._obs_sizes.values()))
        self._layouts: dict[str, GroupLayout] = {}
        self._obs_spaces: dict[str, gymnasium.Space] = {}
        self._act_spaces: dict[str, gymnasium.Space] = {}
        for g, members in self.groups.items():
            self._build_spaces(g, members, state_size)
        self._last_obs: dict[str, np.ndarray] = {}
        self._done: set[str] = set()
        self._truncated: set[str] = set()
        self.render_mode = getattr(env, "render_mode", None)

    def _probe_state(self) -> bool:
        if not self.with_state:
            return False
        space = getattr(self.env, "state_space", None)
        return isinstance(space, spaces.Box) and callable(getattr(self.env, "state", None))

    def _build_spaces(self, g: str, members: list[str], state_size: int) -> None:
        env = self.env
        obs_spaces = [env.observation_space(a) for a in members]
        lows = [np.asarray(np.broadcast_to(s.low, s.shape), np.float32).ravel() for s in obs_spaces]
        highs = [np.asarray(np.broadcast_to(s.high, s.shape), np.float32).ravel()
                 for s in obs_spaces]
        if state_size:
            lows.append(np.full(state_size, -np.inf, np.float32))
            highs.append(np.full(state_size, np.inf, np.float32))
        self._obs_spaces[g] = spaces.Box(np.concatenate(lows), np.concatenate(highs),
                                         dtype=np.float32)
        acts = [env.action_space(a) for a in members]
        if all(isinstance(s, spaces.Discrete) and int(s.start) == 0 for s in acts):
            self._act_spaces[g] = spaces.MultiDiscrete([int(s.n) for s in acts])
            sizes, nums = [1] * len(acts), [int(s.n) for s in acts]
        elif all(isinstance(s, spaces.Box) for s in acts):
            low = np.concatenate([np.broadcast_to(s.low, s.shape).ravel() for s in acts])
            high = np.concatenate([np.broadcast_to(s.high, s.shape).ravel() for s in acts])
            self._act_spaces[g] = spaces.Box(low.astype(np.float32), high.astype(np.float32),
                                             dtype=np.float32)
            sizes, nums = [int(np.prod(s.shape)) for s in acts], [None] * len(acts)
        else:
            raise EnvError(f"GroupAgents: group {g!r} mixes action spaces {acts}; a group needs "
                           "all Discrete (start 0) or all Box actions")
        self._layouts[g] = GroupLayout(members, [self._obs_sizes[a] for a in members],
                                       state_size, sizes, nums)

    # -- the PettingZoo API ------------------------------------------------------------------
    def layout(self, group: str) -> GroupLayout:
        """Where each member's observation and action sit in the group's (see module docs)."""
        return self._layouts[group]

    def observation_space(self, agent: str) -> gymnasium.Space:
        if agent in self._obs_spaces:
            return self._obs_spaces[agent]
        return self.env.observation_space(agent)

    def action_space(self, agent: str) -> gymnasium.Space:
        if agent in self._act_spaces:
            return self._act_spaces[agent]
        return self.env.action_space(agent)

    def state(self) -> np.ndarray:
        """The global state: ``env.state()``, else every agent's last observation."""
        if self._has_state:
            return np.asarray(self.env.state(), np.float32).ravel()
        return np.concatenate([
            np.asarray(self._last_obs.get(a, np.zeros(self._obs_sizes[a])), np.float32).ravel()
            for a in self.env.possible_agents])

    def _group_obs(self, g: str) -> np.ndarray:
        parts = [np.asarray(self._last_obs[a], np.float32).ravel()
                 if a not in self._done and a in self._last_obs
                 else np.zeros(self._obs_sizes[a], np.float32) for a in self.groups[g]]
        if self.with_state:
            parts.append(self.state())
        return np.concatenate(parts)

    def _outer_obs(self, obs: Mapping[str, Any], live: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for g in self.groups:
            if g in live:
                out[g] = self._group_obs(g)
        for a in self._ungrouped:
            if a in obs:
                out[a] = obs[a]
        return out

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, Any], dict[str, dict]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        self._last_obs = dict(obs)
        self._done = set()
        self._truncated = set()
        self.agents = [g for g, m in self.groups.items() if any(a in obs for a in m)]
        self.agents += [a for a in self._ungrouped if a in self.env.agents]
        out_infos = {g: {a: infos.get(a, {}) for a in self.groups[g]} for g in self.groups}
        out_infos.update({a: infos.get(a, {}) for a in self._ungrouped})
        return self._outer_obs(obs, self.agents), out_infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        inner: dict[str, Any] = {}
        live = set(self.env.agents)
        for g in self.agents:
            if g not in self.groups:
                continue
            if g not in actions:
                raise ValueError(f"GroupAgents.step: no action for live group {g!r}")
            layout = self._layouts[g]
            joint = np.asarray(actions[g])
            flat = joint.reshape(-1)
            start = 0
            for a, size, n in zip(layout.members, layout.action_sizes, layout.num_actions,
                                  strict=True):
                part = flat[start: start + size]
                start += size
                if a in live:
                    inner[a] = int(part[0]) if n is not None else part.astype(np.float32)
        for a in self._ungrouped:
            if a in actions:
                inner[a] = actions[a]
        obs, rewards, terms, truncs, infos = self.env.step(inner)
        self._last_obs.update(obs)
        out_r: dict[str, float] = {}
        out_te: dict[str, bool] = {}
        out_tr: dict[str, bool] = {}
        out_i: dict[str, Any] = {}
        for g, members in self.groups.items():
            if g not in self.agents:
                continue
            out_r[g] = float(sum(float(rewards.get(a, 0.0)) for a in members))
            for a in members:
                if terms.get(a) or truncs.get(a) or a not in self.env.agents:
                    self._done.add(a)
                if truncs.get(a) and not terms.get(a):
                    self._truncated.add(a)
            # members that left without a flag count as terminated (nothing to bootstrap)
            all_done = all(a in self._done for a in members)
            any_trunc = any(a in self._truncated for a in members)
            out_te[g] = all_done and not any_trunc
            out_tr[g] = all_done and any_trunc
            out_i[g] = {a: infos.get(a, {}) for a in members}
        for a in self._ungrouped:
            if a in rewards:
                out_r[a], out_te[a], out_tr[a] = rewards[a], terms[a], truncs[a]
                out_i[a] = infos.get(a, {})
        self.agents = [g for g in self.agents if g in self.groups
                       and not (out_te[g] or out_tr[g])]
        self.agents += [a for a in self._ungrouped if a in self.env.agents]
        out_obs = self._outer_obs(obs, list(out_r))
        return out_obs, out_r, out_te, out_tr, out_i

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class GroupedEnvCreator:
    """A picklable env creator ``env_config -> GroupAgents(make_multi_agent_env(spec),
    groups)`` for rollout workers in other processes. ``groups=None`` puts every agent into
    one group named ``default_group``. Example::

        creator = GroupedEnvCreator("mpe2.simple_spread_v3", None)
        env = creator({"N": 2, "max_cycles": 25})          # one agent, "team"
    """

    def __init__(self, spec: EnvSpec, groups: Mapping[str, Sequence[str]] | None = None,
                 state: bool = True, default_group: str = "team") -> None:
        self.spec = spec
        self.groups = None if groups is None else {g: list(m) for g, m in groups.items()}
        self.state = state
        self.default_group = default_group

    def __call__(self, env_config: Mapping[str, Any] | None = None) -> GroupAgents:
        if (isinstance(self.spec, str) and self.spec.split(".")[0] == "mpe2"
                and importlib.util.find_spec("mpe2") is None):
            raise EnvError(f"env {self.spec!r} needs the MPE envs: pip install 'rldataflow[mpe]'")
        env = make_multi_agent_env(self.spec, dict(env_config or {}))
        groups = self.groups or {self.default_group: list(env.possible_agents)}
        return GroupAgents(env, groups, state=self.state)

    def __repr__(self) -> str:
        spec = self.spec if isinstance(self.spec, str) else getattr(self.spec, "__name__", "env")
        return f"GroupedEnvCreator({spec!r})"
