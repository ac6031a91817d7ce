"""What every rollout worker is: the :class:`Worker` protocol and the :class:`WorkerBase` that
single-agent and multi-agent workers share.

A plan talks to workers only through this protocol (``sample``, weights, state, learning
calls, ``evaluate``), so any class that follows it (a custom simulator's worker, say) can be
given to a :class:`~rldataflow.workers.WorkerSet` as ``worker_cls``. The base does the part
both built-in workers did alike: argument checks, seeding, thread limits, evaluation seeds and
the generic calls an actor handle needs.

``weights_version`` matches the form of ``get_weights``: one int for a worker whose weights are
one policy's, ``{policy_id: int}`` for a worker whose weights are ``{policy_id: weights}``.
:meth:`WorkerBase.weights_versions` gives the dict form for both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rldataflow.envs.registry import EnvSpec

__all__ = ["BATCH_MODES", "DEFAULT_POLICY_ID", "WORKER_SEED_STRIDE", "Worker", "WorkerBase",
           "worker_seed"]

BATCH_MODES = ("truncate_episodes", "complete_episodes")

#: The id of a single-agent worker's policy (multi-agent workers hold several).
DEFAULT_POLICY_ID = "default_policy"

#: Seeds of different workers are this far apart (env ``i`` of a worker uses ``seed + i``).
WORKER_SEED_STRIDE = 10_000


def worker_seed(seed: int, worker_index: int) -> int:
    """The seed a worker uses for numpy, torch, its policy and its envs."""
    return int(seed) + int(worker_index) * WORKER_SEED_STRIDE


@runtime_checkable
class Worker(Protocol):
    """The calls plans and :class:`~rldataflow.workers.WorkerSet` make on a rollout worker."""

    worker_index: int
    num_steps_sampled: int

    def sample(self) -> Any: ...
    def policy_ids(self) -> list[str]: ...
    def get_policy(self, policy_id: str | None = None) -> Any: ...
    @property
    def weights_version(self) -> Any: ...
    def get_weights(self) -> Any: ...
    def set_weights(self, weights: Any, version: Any = None) -> None: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...
    def learn_on_batch(self, batch: Any, policy_id: str | None = None,
                       **kwargs: Any) -> dict[str, Any]: ...
    def evaluate(self, num_episodes: int, max_episode_steps: int | None = None
                 ) -> list[float]: ...
    def evaluate_episodes(self, num_episodes: int, explore: bool = False,
                          max_episode_steps: int | None = None, render: bool = False
                          ) -> list[tuple[float, int, Any]]: ...
    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
    def ping(self) -> str: ...
    def stop(self) -> None: ...


class WorkerBase:
    """Argument checks, seeding and the generic actor calls of a rollout worker.

    Subclasses call ``super().__init__(...)`` first, then build their envs (seeded from
    :attr:`seed`) and their policies into :attr:`policies` (``{policy_id: policy}``).

    Example::

        class MyWorker(WorkerBase):
            def __init__(self, env, seed=0, worker_index=0):
                super().__init__(env, seed=seed, worker_index=worker_index)
                ...  # envs, self.policies = {DEFAULT_POLICY_ID: policy}
    """

    def __init__(self, env: EnvSpec, env_config: dict | None = None, num_envs: int = 1,
                 rollout_fragment_length: int = 200, batch_mode: str = "truncate_episodes",
                 seed: int = 0, worker_index: int = 0, include_next_obs: bool = False,
                 postprocess: bool = True) -> None:
        if batch_mode not in BATCH_MODES:
            raise ValueError(f"batch_mode must be one of {BATCH_MODES}, got {batch_mode!r}")
        if rollout_fragment_length < 1:
            raise ValueError(f"rollout_fragment_length must be >= 1, got {rollout_fragment_length}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_spec = env
        self.env_config = dict(env_config or {})
        self.num_envs = int(num_envs)
        self.rollout_fragment_length = int(rollout_fragment_length)
        self.batch_mode = batch_mode
        self.worker_index = int(worker_index)
        self.include_next_obs = include_next_obs
        self.postprocess = postprocess
        self.seed = worker_seed(seed, worker_index)
        if self.worker_index > 0:
            # Remote workers share the machine's cores; intra-op threads would only contend.
            torch.set_num_threads(1)
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        self.policies: dict[str, Any] = {}
        self.num_steps_sampled = 0
        self._eval_calls = 0

    def next_eval_seed(self) -> int:
        """The seed of the next ``evaluate`` call's env: reproducible, and each call sees
        different episodes."""
        seed = self.seed + 1_000_000 + 1_000 * self._eval_calls
        self._eval_calls += 1
        return seed

    def policy_ids(self) -> list[str]:
        return list(self.policies)

    def weights_versions(self) -> dict[str, int]:
        """``{policy_id: weights version}``, whatever the worker's kind."""
        return {pid: int(p.weights_version) for pid, p in self.policies.items()}

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(self, *args, **kwargs)`` on the worker (handy through an actor handle)."""
        return fn(self, *args, **kwargs)

    def ping(self) -> str:
        return "ok"
