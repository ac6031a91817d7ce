"""The Algorithm object: build a plan from a config, train, save, restore, evaluate.

``algo.train()`` is ``next(plan)`` plus bookkeeping. What an algorithm is (its config, workers,
plan and checkpoint state) comes from its registered
:class:`~rldataflow.algorithms.base.AlgorithmBuilder`; see ``docs/adding_an_algorithm.md``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

from rldataflow import __version__
from rldataflow.algorithms.base import AlgorithmBuilder, as_plan, default_workers
from rldataflow.algorithms.registry import (
    algorithm_names,
    get_algorithm,
    module_of,
    register_module,
)
from rldataflow.data.dataset import DatasetOutput
from rldataflow.flow import LocalIterator, Plan
from rldataflow.flow.errors import describe_exception
from rldataflow.ops.evaluation import Evaluator
from rldataflow.ops.rollouts import POLICY_RETURN_WINDOW
from rldataflow.runtime import Runtime
from rldataflow.startup import make_runtime
from rldataflow.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rldataflow.utils.config import AlgorithmConfig, ConfigError, build_config, config_to_dict
from rldataflow.workers import WorkerSet

#: ``fn(workers, config)`` returning a plan (or just its results iterator)
PlanFunction = Callable[[WorkerSet, Any], "LocalIterator[dict[str, Any]] | Plan[dict[str, Any]]"]

__all__ = ["Algorithm", "PlanFunction", "algorithm_module", "build", "default_workers",
           "make_config", "register_algorithm"]

def register_algorithm(name: str, module: str) -> None:
    """Make ``build(name, ...)`` and ``rldataflow train name`` use the algorithm that
    importing ``module`` registers (see :func:`rldataflow.algorithms.register_algorithm`)."""
    register_module(name, module)


def algorithm_module(name: str) -> ModuleType:
    """The module algorithm ``name`` is defined in."""
    return module_of(get_algorithm(name))


def __getattr__(name: str) -> Any:
    if name == "ALGORITHMS":  # the names that can be built (kept for older callers)
        return {n: n for n in algorithm_names()}
    raise AttributeError(f"module 'rldataflow.trainer' has no attribute {name!r}")


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
                 owns_runtime: bool | None = None, plan: PlanFunction | None = None,
                 start: bool = True) -> None:
        self.name = name.lower()
        self.builder: AlgorithmBuilder = get_algorithm(self.name)
        self.module = module_of(self.builder)
        self.config = config
        self._owns_runtime = runtime is None if owns_runtime is None else owns_runtime
        self.runtime = runtime or make_runtime(config.runtime, config.runtime_options)
        self.iteration = 0
        self.time_total_s = 0.0
        self._stopped = False
        _limit_learner_threads()
        self.workers: WorkerSet | None = None
        self._evaluator: Evaluator | None = None
        try:
            self.workers = self.builder.make_workers(config, self.runtime)
            if plan is None:
                self.plan: Plan[dict[str, Any]] = as_plan(
                    self.builder.make_plan(self.workers, config), type(self.builder).__name__)
            else:
                self.plan = as_plan(plan(self.workers, config), getattr(plan, "__name__", plan))
            if start:
                self.plan.start()
        except BaseException:
            if self.workers is not None:
                self.workers.stop()
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
        config = self.config
        interval, n = config.evaluation_interval, config.evaluation_num_episodes
        due = bool(interval) and bool(n) and (self.iteration + 1) % interval == 0
        pending = None
        if due and config.evaluation_parallel_to_training:
            # the evaluation workers play with the weights from before this iteration while
            # the plan trains; collected after it
            pending = self.evaluator.start(n)
        result = dict(next(self.plan))
        if due:
            evaluator = self.evaluator
            started = time.perf_counter()
            result.update(evaluator.collect(pending if pending is not None
                                            else evaluator.start(n)))
            # with parallel evaluation: only the time training waited for it
            result["evaluation/time_s"] = time.perf_counter() - started
            result["evaluation/worker_restarts"] = evaluator.num_restarts
            counters = self.metrics.counters
            counters["evaluation_episodes"] += result["evaluation/num_episodes"]
            if isinstance(result.get("counters"), dict):
                result["counters"] = {**result["counters"],
                                      "evaluation_episodes": counters["evaluation_episodes"]}
        self.iteration += 1
        self.time_total_s += time.perf_counter() - start
        result.update(iteration=self.iteration, time_total_s=self.time_total_s,
                      algorithm=self.name)
        return result

    @property
    def evaluator(self) -> Evaluator:
        """The evaluation workers (made on first use: ``evaluation_num_workers`` of them)."""
        if self._evaluator is None:
            config = self.config
            self._evaluator = Evaluator(
                self.workers, config.evaluation_num_workers, explore=config.evaluation_explore,
                overrides=dict(config.evaluation_config),
                restart_failed=config.restart_failed_workers)
        return self._evaluator

    def evaluate(self, num_episodes: int | None = None) -> dict[str, Any]:
        """Run episodes of the current policy on the evaluation workers (``evaluation_*``
        config keys; deterministic actions unless ``evaluation_explore``); returns the same
        ``evaluation/*`` keys training results carry."""
        n = self.config.evaluation_num_episodes if num_episodes is None else num_episodes
        return self.evaluator.evaluate(n)

    def record(self, num_episodes: int, out: str | os.PathLike[str], format: str = "parquet",
               max_rows_per_file: int = 10_000, explore: bool = True) -> dict[str, Any]:
        """Roll out ``num_episodes`` episodes of the current policy into a dataset at ``out``.

        The episodes are split over the remote workers (run in parallel, with the current
        weights), or run on the local worker when there are none. ``explore``: sample actions
        (so ``action_logp`` is the behaviour policy's) rather than take the mode. Returns
        ``{"episodes", "rows", "files", "episode_return_mean"}``. Example::

            with Algorithm.restore("runs/ppo/checkpoint_000020", num_workers=0) as algo:
                algo.record(100, "data/ppo_cartpole")
        """
        output = DatasetOutput(os.fspath(out), format, max_rows_per_file)
        local = self.workers.local_worker()
        if not hasattr(local, "record"):
            raise ConfigError(f"record supports single-agent workers only, not "
                              f"{type(local).__name__}")
        remote = self.workers.remote_workers()
        if not remote:
            parts = [local.record(num_episodes, output, explore)]
        else:
            self.workers.sync_weights(wait=True)
            shares = [num_episodes // len(remote) + (i < num_episodes % len(remote))
                      for i in range(len(remote))]
            futures = [a.call("record", k, output, explore)
                       for a, k in zip(remote, shares, strict=True) if k]
            parts = [f.result() for f in futures]
        episodes = sum(p["episodes"] for p in parts)
        mean = (sum(p["episode_return_mean"] * p["episodes"] for p in parts if p["episodes"])
                / episodes if episodes else math.nan)
        return {"episodes": episodes, "rows": sum(p["rows"] for p in parts),
                "files": [f for p in parts for f in p["files"]], "episode_return_mean": mean}

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str],
             metadata: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint (weights, optimizer, counters, config) atomically to ``directory``;
        ``metadata``: extra JSON-like entries for its ``metadata.json``."""
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
        state["extra"] = self.builder.extra_state(self.plan, self.workers, self.config)
        extra_metadata = dict(metadata or {})
        metadata = {
            **extra_metadata,
            "algorithm": self.name,
            "config": config_to_dict(self.config),
            "iteration": self.iteration,
            "time_total_s": self.time_total_s,
            "rldataflow_version": __version__,
        }
        # Checked after the state was taken: a part that failed before or during it (the
        # learner thread mid-update, say) may have left it half-updated.
        failed = self.plan.failure()
        if failed is not None:
            part, error = failed
            raise CheckpointError(f"refusing to checkpoint {directory}: {part} failed: "
                                  f"{describe_exception(error)}") from error
        return save_checkpoint(directory, state, metadata)

    @classmethod
    def restore(cls, directory: str | os.PathLike[str], runtime: Runtime | None = None,
                plan: PlanFunction | None = None, **overrides: Any) -> Algorithm:
        """Rebuild an algorithm from a checkpoint; ``overrides`` change config fields (e.g.
        ``env=`` when the run used an env creator function, or ``num_workers=``); ``plan``:
        the custom plan function the run was built with, if any."""
        state, metadata = load_checkpoint(directory)
        name = metadata["algorithm"]
        config_cls = get_algorithm(name).Config
        saved = dict(metadata["config"])
        valid = {f.name for f in fields(config_cls)}
        saved = {k: v for k, v in saved.items() if k in valid}
        saved.update(overrides)
        config = build_config(config_cls, saved)
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
        if "extra" in state:
            self.builder.restore_extra_state(self.plan, self.workers, self.config,
                                             state["extra"])

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the workers (and the runtime, if this algorithm created it). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            try:
                self.plan.stop()
            finally:
                try:
                    if self._evaluator is not None:
                        self._evaluator.stop()
                finally:
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
    config_cls = get_algorithm(algo).Config
    if isinstance(config, AlgorithmConfig):
        if not isinstance(config, config_cls):
            raise ConfigError(f"{type(config).__name__} is not the config of {algo!r} "
                              f"(expected {config_cls.__name__})")
        return build_config(config_cls, overrides, base=config, from_cli=from_cli)
    merged = dict(config or {})
    merged.update(overrides)  # an explicit None (e.g. grad_clip=None) is a value, not "unset"
    return build_config(config_cls, merged, from_cli=from_cli)


def build(algo: str, config: AlgorithmConfig | Mapping[str, Any] | None = None, *,
          runtime: str | Runtime | None = None, plan: PlanFunction | None = None,
          start: bool = True, **overrides: Any) -> Algorithm:
    """Build an algorithm by name.

    Example::

        algo = rldataflow.build("ppo", env="CartPole-v1", runtime="process", num_workers=2,
                                lr=3e-4)
        result = algo.train()

    ``plan=fn(workers, config)`` replaces the algorithm's plan with your own, built on the
    same config, workers, checkpoints and reporting (see ``examples/ppo_and_dqn.py``).

    ``start=False`` builds the workers and the plan but starts nothing the plan owns (its
    learner threads, say) until the first ``train()``: for looking at ``algo.plan.describe()``.

    Unknown keys and wrong types raise :class:`ConfigError` (one line naming the key) before
    anything starts.
    """
    runtime_obj = runtime if isinstance(runtime, Runtime) else None
    if isinstance(runtime, str):
        overrides["runtime"] = runtime
    cfg = make_config(algo, config, **overrides)
    return Algorithm(algo, cfg, runtime=runtime_obj, plan=plan, start=start)
