"""The Algorithm object: build a plan from a config, train, save, restore, evaluate.

``algo.train()`` is ``next(plan)`` plus bookkeeping. An algorithm module (one file under
``rldataflow/algorithms/``) provides:

* ``Config``: a dataclass deriving from :class:`AlgorithmConfig`;
* ``make_workers(config, runtime) -> WorkerSet`` (optional; the default builds rollout workers
  whose policies come from ``policy_factory(config)``);
* ``plan(workers, config) -> LocalIterator[dict]``: the dataflow, ending in result dicts;
* optionally ``get_extra_state(algo)`` / ``set_extra_state(algo, state)`` for state the plan
  keeps outside the policy (a KL coefficient, say).
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rldataflow import __version__
from rldataflow.flow import LocalIterator
from rldataflow.ops.rollouts import POLICY_RETURN_WINDOW
from rldataflow.policies.policy_spec import policy_factories
from rldataflow.runtime import Runtime
from rldataflow.startup import make_runtime
from rldataflow.utils.checkpoint import load_checkpoint, save_checkpoint
from rldataflow.utils.config import AlgorithmConfig, ConfigError, build_config, config_to_dict
from rldataflow.workers import MultiAgentRolloutWorker, RolloutWorker, WorkerSet

#: Algorithm name -> module. Modules are imported only when their algorithm is built.
ALGORITHMS: dict[str, str] = {
    "pg": "rldataflow.algorithms.pg",
    "a2c": "rldataflow.algorithms.a2c",
    "a3c": "rldataflow.algorithms.a3c",
    "ppo": "rldataflow.algorithms.ppo",
    "dqn": "rldataflow.algorithms.dqn",
    "apex": "rldataflow.algorithms.apex",
    "impala": "rldataflow.algorithms.impala",
    "appo": "rldataflow.algorithms.appo",
    "composite": "rldataflow.algorithms.composite",
}


def register_algorithm(name: str, module: str) -> None:
    """Make ``build(name, ...)`` and ``rldataflow train name`` use the given module path."""
    ALGORITHMS[name.lower()] = module


def algorithm_module(name: str) -> ModuleType:
    key = name.lower()
    if key not in ALGORITHMS:
        import difflib

        hint = difflib.get_close_matches(key, list(ALGORITHMS), n=1)
        names = ", ".join(sorted(ALGORITHMS))
        raise ConfigError(f"unknown algorithm {name!r}; choose one of {names}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return importlib.import_module(ALGORITHMS[key])


def default_workers(config: AlgorithmConfig, runtime: Runtime, policy_factory: Any,
                    **worker_kwargs: Any) -> WorkerSet:
    """Rollout workers as most algorithms want them, built from the common config fields.

    With ``config.policies`` set they are :class:`MultiAgentRolloutWorker` s; ``policy_factory``
    is then ``{policy_id: factory}`` (see ``rldataflow.policies.policy_spec.policy_factories``)
    or one factory used for every policy.
    """
    kwargs = dict(env=config.env, env_config=config.env_config,
                  num_envs=config.num_envs_per_worker,
                  rollout_fragment_length=config.rollout_fragment_length, seed=config.seed)
    worker_cls: type = RolloutWorker
    if config.policies:
        factories = (dict(policy_factory) if isinstance(policy_factory, Mapping)
                     else {pid: policy_factory for pid in config.policies})
        kwargs.update(policy_factories=factories, policy_mapping_fn=config.policy_mapping_fn)
        worker_cls = MultiAgentRolloutWorker
    else:
        kwargs["policy_factory"] = policy_factory
    kwargs.update(worker_kwargs)
    return WorkerSet(runtime, config.num_workers, kwargs,
                     restart_failed=config.restart_failed_workers, worker_cls=worker_cls)


def _limit_learner_threads() -> None:
    """One torch intra-op thread for the driver's local worker / learner.

    Its minibatches are small (PPO on CartPole: 256 x 64-unit MLPs), and with the worker
    processes (or other jobs) on the other cores a second OpenMP thread made each SGD step
    ~10x slower on a 2-core machine (3 ms -> 45 ms). Set ``OMP_NUM_THREADS`` to keep your own
    choice.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


class Algorithm:
    """A running algorithm: its config, workers, plan and counters.

    Example::

        with rldataflow.build("ppo", env="CartPole-v1", num_workers=2) as algo:
            for _ in range(20):
                result = algo.train()
            algo.save("runs/ppo")
            print(algo.evaluate(5)["evaluation/episode_return_mean"])
    """

    def __init__(self, name: str, config: AlgorithmConfig, runtime: Runtime | None = None,
                 owns_runtime: bool | None = None,
                 plan: Callable[[WorkerSet, Any], LocalIterator[dict[str, Any]]] | None = None
                 ) -> None:
        self.name = name.lower()
        self.module = algorithm_module(self.name)
        make_plan = plan if plan is not None else self.module.plan
        self.config = config
        self._owns_runtime = runtime is None if owns_runtime is None else owns_runtime
        self.runtime = runtime or make_runtime(config.runtime, config.runtime_options)
        self.iteration = 0
        self.time_total_s = 0.0
        self._stopped = False
        _limit_learner_threads()
        try:
            make_workers = getattr(self.module, "make_workers", None)
            if make_workers is not None:
                self.workers = make_workers(config, self.runtime)
            else:
                factory = (policy_factories(config, self.module.policy_factory)
                           if config.policies else self.module.policy_factory(config))
                self.workers = default_workers(config, self.runtime, factory)
            self.plan: LocalIterator[dict[str, Any]] = make_plan(self.workers, config)
            if not isinstance(self.plan, LocalIterator):
                raise TypeError(f"the plan function {getattr(make_plan, '__name__', make_plan)} "
                                f"returned {type(self.plan).__name__}, not a LocalIterator of "
                                "results (end it with StandardMetricsReporting)")
        except BaseException:
            if self._owns_runtime:
                self.runtime.shutdown()
            raise
        self._restored_time = 0.0

    # -- training ---------------------------------------------------------------------------
    @property
    def metrics(self):
        """The plan's :class:`~rldataflow.flow.Metrics` (counters, timers, windows)."""
        return self.plan.metrics

    def train(self) -> dict[str, Any]:
        """Run the plan until its next result; returns that result (standard names)."""
        if self._stopped:
            raise RuntimeError(f"{self.name} was stopped; build a new Algorithm to train again")
        start = time.perf_counter()
        result = next(self.plan)
        self.iteration += 1
        self.time_total_s += time.perf_counter() - start
        result = dict(result)
        result.update(iteration=self.iteration, time_total_s=self.time_total_s,
                      algorithm=self.name)
        return result

    def evaluate(self, num_episodes: int | None = None) -> dict[str, Any]:
        """Run episodes with deterministic actions on the local worker; summary stats."""
        n = self.config.evaluation_num_episodes if num_episodes is None else num_episodes
        returns = self.workers.local_worker().evaluate(n)
        arr = np.asarray(returns, dtype=np.float64)
        return {
            "evaluation/episode_return_mean": float(arr.mean()) if arr.size else math.nan,
            "evaluation/episode_return_min": float(arr.min()) if arr.size else math.nan,
            "evaluation/episode_return_max": float(arr.max()) if arr.size else math.nan,
            "evaluation/num_episodes": int(arr.size),
        }

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write a checkpoint (weights, optimizer, counters, config) atomically to ``directory``."""
        metrics = self.metrics
        state: dict[str, Any] = {
            # all the worker's policies (one, or several for multi-agent) and its counters
            "worker": self.workers.local_worker().get_state(),
            "counters": {k: float(v) for k, v in metrics.counters.items()},
            "episode_returns": [float(x) for x in metrics.window("episode_return")],
            "episode_lens": [float(x) for x in metrics.window("episode_len")],
            "policy_windows": {name: [float(x) for x in metrics.window(name)]
                               for name in metrics.window_names()
                               if name.startswith(POLICY_RETURN_WINDOW)},
        }
        extra = getattr(self.module, "get_extra_state", None)
        if extra is not None:
            state["extra"] = extra(self)
        metadata = {
            "algorithm": self.name,
            "config": config_to_dict(self.config),
            "iteration": self.iteration,
            "time_total_s": self.time_total_s,
            "rldataflow_version": __version__,
        }
        return save_checkpoint(directory, state, metadata)

    @classmethod
    def restore(cls, directory: str | os.PathLike[str], runtime: Runtime | None = None,
                plan: Callable[[WorkerSet, Any], LocalIterator[dict[str, Any]]] | None = None,
                **overrides: Any) -> Algorithm:
        """Rebuild an algorithm from a checkpoint; ``overrides`` change config fields (e.g.
        ``env=`` when the run used an env creator function, or ``num_workers=``); ``plan``:
        the custom plan function the run was built with, if any."""
        state, metadata = load_checkpoint(directory)
        name = metadata["algorithm"]
        module = algorithm_module(name)
        saved = dict(metadata["config"])
        valid = {f.name for f in fields(module.Config)}
        saved = {k: v for k, v in saved.items() if k in valid}
        saved.update(overrides)
        config = build_config(module.Config, saved)
        algo = cls(name, config, runtime=runtime, plan=plan)
        algo.set_state(state, metadata)
        return algo

    def set_state(self, state: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        local = self.workers.local_worker()
        if "worker" in state:
            local.set_state(state["worker"])
        else:  # checkpoints written before multi-agent support
            local.policy.set_state(state["policy"])
        self.workers.sync_weights(wait=True)
        counters = self.metrics.counters
        for key, value in state.get("counters", {}).items():
            counters[key] = value
        self.metrics.record_many("episode_return", state.get("episode_returns", []))
        self.metrics.record_many("episode_len", state.get("episode_lens", []))
        for name, values in state.get("policy_windows", {}).items():
            self.metrics.record_many(name, values)
        self.iteration = int(metadata.get("iteration", 0))
        self.time_total_s = float(metadata.get("time_total_s", 0.0))
        extra = getattr(self.module, "set_extra_state", None)
        if extra is not None and "extra" in state:
            extra(self, state["extra"])

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the workers (and the runtime, if this algorithm created it). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        stop_hook = getattr(self.module, "stop", None)
        try:
            if stop_hook is not None:
                stop_hook(self)
            self.workers.stop()
        finally:
            if self._owns_runtime:
                self.runtime.shutdown()

    def __enter__(self) -> Algorithm:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Algorithm({self.name}, iteration={self.iteration}, {self.workers!r})"


def make_config(algo: str, config: AlgorithmConfig | Mapping[str, Any] | None = None,
                from_cli: bool = False, **overrides: Any) -> AlgorithmConfig:
    """The validated config of ``algo`` from a Config instance, a dict and/or keyword overrides."""
    module = algorithm_module(algo)
    if isinstance(config, AlgorithmConfig):
        if not isinstance(config, module.Config):
            raise ConfigError(f"{type(config).__name__} is not the config of {algo!r} "
                              f"(expected {module.Config.__name__})")
        return build_config(module.Config, overrides, base=config, from_cli=from_cli)
    merged = dict(config or {})
    merged.update(overrides)  # an explicit None (e.g. grad_clip=None) is a value, not "unset"
    return build_config(module.Config, merged, from_cli=from_cli)


def build(algo: str, config: AlgorithmConfig | Mapping[str, Any] | None = None, *,
          runtime: str | Runtime | None = None,
          plan: Callable[[WorkerSet, Any], LocalIterator[dict[str, Any]]] | None = None,
          **overrides: Any) -> Algorithm:
    """Build an algorithm by name.

    Example::

        algo = rldataflow.build("ppo", env="CartPole-v1", runtime="process", num_workers=2,
                                lr=3e-4)
        result = algo.train()

    ``plan=fn(workers, config)`` replaces the algorithm's plan with your own, built on the
    same config, workers, checkpoints and reporting (see ``examples/ppo_and_dqn.py``).

    Unknown keys and wrong types raise :class:`ConfigError` (one line naming the key) before
    anything starts.
    """
    runtime_obj = runtime if isinstance(runtime, Runtime) else None
    if isinstance(runtime, str):
        overrides["runtime"] = runtime
    cfg = make_config(algo, config, **overrides)
    return Algorithm(algo, cfg, runtime=runtime_obj, plan=plan)
