"""Evaluation inside a plan: run episodes with the learning policy on the rollout workers.

Offline plans sample no experience, so their results would carry no episode returns.
:class:`EvaluateOnWorkers` puts them in: every ``every`` items it sends the local policy's
weights to the workers, runs episodes there (deterministic actions, ``Worker.evaluate``) and
records the returns as ``evaluation/*`` entries of the plan's metrics, which
:class:`~rldataflow.ops.CollectMetrics` copies into every result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rldataflow.flow import Operator
from rldataflow.workers import WorkerSet

__all__ = ["EvaluateOnWorkers"]


class EvaluateOnWorkers(Operator):
    """Every ``every``-th item, evaluate the local policy on the workers; pass items through.

    The ``num_episodes`` episodes are split over the remote workers, which run them in
    parallel with the current weights (or run on the local worker when there are none). The
    results are ``evaluation/episode_return_mean``, ``..._min``, ``..._max`` and
    ``evaluation/num_episodes`` in the plan's metrics info (so in each result, holding the
    latest evaluation until the next), and the ``evaluation_episodes`` counter. Example::

        train_op = (from_dataset("data/cartpole", 2048).for_each(TrainOneStep(workers))
                    .for_each(EvaluateOnWorkers(workers, every=10, num_episodes=10)))
    """

    def __init__(self, workers: WorkerSet, every: int = 10, num_episodes: int = 10) -> None:
        if every < 1:
            raise ValueError(f"EvaluateOnWorkers: every must be >= 1, got {every}")
        self.workers = workers
        self.every = int(every)
        self.num_episodes = int(num_episodes)
        self._items = 0

    @property
    def op_name(self) -> str:
        return f"EvaluateOnWorkers(every={self.every}, episodes={self.num_episodes})"

    def evaluate(self) -> list[float]:
        """Run the episodes now; their returns."""
        remote = self.workers.remote_workers()
        if not remote:
            return list(self.workers.local_worker().evaluate(self.num_episodes))
        self.workers.sync_weights()  # applied before the evaluate calls queued behind it
        n = self.num_episodes
        shares = [n // len(remote) + (i < n % len(remote)) for i in range(len(remote))]
        futures = [a.call("evaluate", k) for a, k in zip(remote, shares, strict=True) if k]
        return [float(r) for f in futures for r in f.result()]

    def __call__(self, item: Any) -> Any:
        self._items += 1
        if self.num_episodes == 0 or self._items % self.every:
            return item
        metrics = self.metrics
        with metrics.timers["evaluate"]:
            returns = np.asarray(self.evaluate(), dtype=np.float64)
        if returns.size:
            metrics.info["evaluation/episode_return_mean"] = float(returns.mean())
            metrics.info["evaluation/episode_return_min"] = float(returns.min())
            metrics.info["evaluation/episode_return_max"] = float(returns.max())
        metrics.info["evaluation/num_episodes"] = int(returns.size)
        metrics.counters["evaluation_episodes"] += int(returns.size)
        return item
