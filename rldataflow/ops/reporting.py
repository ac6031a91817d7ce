"""Reporting: turn a stream of training steps into a stream of result dicts."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from rldataflow.flow import NOT_READY, LocalIterator, Metrics, StreamOperator
from rldataflow.ops.rollouts import POLICY_RETURN_WINDOW
from rldataflow.workers import WorkerSet


class CollectMetrics(StreamOperator):
    """Emit one result dict per ``min_time_s`` seconds and ``min_steps`` sampled steps.

    At least one upstream item (one training step) goes into every result. The result holds
    the standard names shared by all algorithms: ``episode_return_mean/max/min`` (over the last
    ``window`` finished episodes), ``episode_len_mean``, ``episodes_total``,
    ``env_steps_sampled``, ``env_steps_trained``, ``throughput`` (sampled env steps per second
    in this iteration), ``learner`` (the latest learner stats), ``timers`` and
    ``worker_restarts``. Multi-agent runs add ``policy_return_mean``: ``{policy_id: mean
    return of the last window of agent sub-episodes that policy drove}``.

    ``require_sampling``: whether a result also waits for at least one newly sampled env step.
    ``None`` (the default) means "once the plan has sampled at all": a plan whose upstream
    items do not all follow new samples (the branches of a ``Concurrently(mode="async")``,
    several replay steps per store) folds the items without sampling into the next result, so
    no result reports a throughput of 0; a plan that never samples (offline) reports one result
    per item. ``False`` reports after every item, ``True`` always waits for sampling.
    """

    def __init__(self, workers: WorkerSet | None = None, min_time_s: float = 0.0,
                 min_steps: int = 0, require_sampling: bool | None = None) -> None:
        self.workers = workers
        self.min_time_s = min_time_s
        self.min_steps = min_steps
        self.require_sampling = require_sampling

    def _waits_for_sampling(self, total_sampled: float) -> bool:
        if self.require_sampling is None:
            return total_sampled > 0
        return self.require_sampling

    def apply(self, upstream: Iterator[Any], metrics: Metrics) -> Iterator[Any]:
        counters = metrics.counters
        start_time = time.perf_counter()
        start_steps = counters["env_steps_sampled"]
        start_trained = counters["env_steps_trained"]
        steps_in_result = 0
        for item in upstream:
            if item is NOT_READY:
                yield item
                continue
            steps_in_result += 1
            elapsed = time.perf_counter() - start_time
            sampled = counters["env_steps_sampled"] - start_steps
            if elapsed < self.min_time_s or sampled < self.min_steps:
                continue
            if sampled == 0 and self._waits_for_sampling(counters["env_steps_sampled"]):
                continue
            yield self._result(metrics, elapsed, sampled,
                               counters["env_steps_trained"] - start_trained, steps_in_result)
            start_time = time.perf_counter()
            start_steps = counters["env_steps_sampled"]
            start_trained = counters["env_steps_trained"]
            steps_in_result = 0

    def _result(self, metrics: Metrics, elapsed: float, sampled: float, trained: float,
                train_steps: int) -> dict[str, Any]:
        returns = metrics.window("episode_return")
        lengths = metrics.window("episode_len")
        nan = math.nan
        counters = metrics.counters
        result: dict[str, Any] = {
            "episode_return_mean": float(np.mean(returns)) if returns else nan,
            "episode_return_max": float(np.max(returns)) if returns else nan,
            "episode_return_min": float(np.min(returns)) if returns else nan,
            "episode_len_mean": float(np.mean(lengths)) if lengths else nan,
            "episodes_total": int(counters["episodes_total"]),
            "env_steps_sampled": int(counters["env_steps_sampled"]),
            "env_steps_trained": int(counters["env_steps_trained"]),
            "env_steps_this_iter": int(sampled),
            "train_steps_this_iter": train_steps,
            "time_this_iter_s": elapsed,
            "throughput": sampled / elapsed if elapsed > 0 else 0.0,
            "trained_throughput": trained / elapsed if elapsed > 0 else 0.0,
            "learner": dict(metrics.info.get("learner", {})),
            "timers": {name: {"mean_ms": t.mean * 1e3, "count": t.count,
                              "throughput": t.throughput}
                       for name, t in metrics.timers.items()},
            "counters": {k: v for k, v in counters.items()},
            "worker_restarts": self.workers.num_restarts if self.workers else 0,
        }
        per_policy = {name[len(POLICY_RETURN_WINDOW):]: metrics.window(name)
                      for name in metrics.window_names() if name.startswith(POLICY_RETURN_WINDOW)}
        if per_policy:
            result["policy_return_mean"] = {pid: float(np.mean(v)) if v else nan
                                            for pid, v in per_policy.items()}
        for key, value in metrics.info.items():
            if key != "learner" and isinstance(value, (int, float)):
                result[key] = value
        return result


def StandardMetricsReporting(train_op: LocalIterator[Any], workers: WorkerSet | None = None,
                             min_time_s: float = 0.0, min_steps: int = 0,
                             require_sampling: bool | None = None) -> LocalIterator[Any]:
    """The last box of a plan: one result dict per iteration (see :class:`CollectMetrics`).

    Example: ``return StandardMetricsReporting(train_op, workers, min_steps=4000)``
    """
    return train_op.for_each(CollectMetrics(workers, min_time_s, min_steps, require_sampling))
