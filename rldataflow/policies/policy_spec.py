"""Several policies in one run: per-policy configs, factories and the agent -> policy mapping.

A multi-agent config names its policies and says which agent each one drives::

    policies = {"p0": {}, "p1": {"lr": 1e-3}}     # policy id -> overrides of the algorithm config
    policy_mapping_fn = "by_agent"                # or "shared", or a callable agent_id -> pid

* ``"shared"``: every agent is driven by the one policy (parameter sharing); needs exactly one
  policy.
* ``"by_agent"``: the policy named like the agent, else the i-th policy (in ``policies`` order)
  for the i-th agent of the env's ``possible_agents``.
* a callable ``fn(agent_id) -> policy_id``. It is called when an agent first appears in an
  episode (the answer holds for that agent until the episode ends), so a stateful or random
  mapping (a league of opponents, say) works.

A policy id the mapping returns that is not in ``policies`` is an error naming the agent and the
id. This module has no torch or env imports: it is plain bookkeeping.

Example::

    >>> fn = resolve_policy_mapping_fn("by_agent", ["p0", "p1"], ["agent_0", "agent_1"])
    >>> fn("agent_0"), fn("agent_1")
    ('p0', 'p1')
    >>> resolve_policy_mapping_fn("shared", ["main"], ["a", "b"])("b")
    'main'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

__all__ = [
    "MAPPING_MODES",
    "POLICY_SEED_STRIDE",
    "PolicyMappingFn",
    "PolicyMappingSpec",
    "UnknownPolicyError",
    "policy_config",
    "policy_factories",
    "resolve_policy_mapping_fn",
]

#: The named mapping modes (YAML-friendly values of ``policy_mapping_fn``).
MAPPING_MODES = ("shared", "by_agent")

#: Policy ``i`` of ``policies`` is seeded with ``config.seed + i * POLICY_SEED_STRIDE`` (unless its
#: overrides give a seed), so independent policies do not start from identical weights.
POLICY_SEED_STRIDE = 7_919

PolicyMappingFn = Callable[[str], str]
PolicyMappingSpec = Union[str, PolicyMappingFn, None]


class UnknownPolicyError(KeyError):
    """The mapping sent an agent to a policy id that does not exist (the message names both)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def _trailing_int(agent_id: str) -> int | None:
    match = re.search(r"(\d+)$", str(agent_id))
    return int(match.group(1)) if match else None


def resolve_policy_mapping_fn(mapping: PolicyMappingSpec, policy_ids: Sequence[str],
                              possible_agents: Sequence[str] = ()) -> PolicyMappingFn:
    """Turn a ``policy_mapping_fn`` setting into a checked ``fn(agent_id) -> policy_id``.

    ``None`` means ``"shared"``. The returned function raises :class:`UnknownPolicyError` when
    the mapping answers with an id not in ``policy_ids``.
    """
    ids = list(policy_ids)
    if not ids:
        raise ValueError("no policies: a multi-agent worker needs at least one policy id")
    known = set(ids)
    if mapping is None or mapping == "shared":
        if len(ids) != 1:
            raise ValueError(f"policy_mapping_fn='shared' maps every agent to the one policy, "
                             f"but there are {len(ids)} policies {ids}; use 'by_agent' or a "
                             "callable")
        only = ids[0]
        return lambda agent_id: only
    if mapping == "by_agent":
        agents = list(possible_agents)

        def by_agent(agent_id: str) -> str:
            if agent_id in known:
                return agent_id
            index = agents.index(agent_id) if agent_id in agents else _trailing_int(agent_id)
            if index is None or not 0 <= index < len(ids):
                raise UnknownPolicyError(
                    f"policy_mapping_fn='by_agent' has no policy for agent {agent_id!r}: no "
                    f"policy has its name and its index ({index}) is not one of the "
                    f"{len(ids)} policies {ids}")
            return ids[index]

        return by_agent
    if isinstance(mapping, str):
        hint = difflib.get_close_matches(mapping, MAPPING_MODES, n=1)
        raise ValueError(f"unknown policy_mapping_fn {mapping!r}; use one of {MAPPING_MODES} or "
                         "a callable agent_id -> policy_id"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if not callable(mapping):
        raise TypeError(f"policy_mapping_fn must be a callable or one of {MAPPING_MODES}, got "
                        f"{type(mapping).__name__}")
    fn = mapping

    def checked(agent_id: str) -> str:
        pid = fn(agent_id)
        if pid not in known:
            raise UnknownPolicyError(f"policy_mapping_fn mapped agent {agent_id!r} to unknown "
                                     f"policy id {pid!r}; the policies are {ids}")
        return pid

    return checked


def policy_config(config: Any, policy_id: str) -> Any:
    """The algorithm config of one policy: ``config`` with ``config.policies[policy_id]``
    applied (validated like any override), ``policies`` emptied, and the policy's own seed.

    Example::

        cfg = rldataflow.make_config("ppo", policies={"a": {}, "b": {"lr": 1e-4}})
        policy_config(cfg, "b").lr      # 1e-4
    """
    policies: Mapping[str, Mapping[str, Any]] = getattr(config, "policies", None) or {}
    if policy_id not in policies:
        raise UnknownPolicyError(f"unknown policy id {policy_id!r}; the policies are "
                                 f"{list(policies)}")
    index = list(policies).index(policy_id)
    overrides = dict(policies[policy_id] or {})
    overrides.setdefault("seed", int(config.seed) + index * POLICY_SEED_STRIDE)
    return config.replace(policies={}, policy_mapping_fn=None, **overrides)


def policy_factories(config: Any, make_factory: Callable[[Any], Any]) -> dict[str, Any]:
    """``{policy_id: make_factory(policy_config(config, policy_id))}`` for every policy.

    ``make_factory`` is an algorithm's ``policy_factory(config)``: each policy gets a factory
    built from its own config, so per-policy overrides (``lr``, ``hiddens``, ...) apply.
    """
    return {pid: make_factory(policy_config(config, pid)) for pid in config.policies}
