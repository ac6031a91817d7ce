"""Evaluation: run episodes with the learning policy, inside a plan or beside it.

:class:`Evaluator` is what ``evaluation_interval`` and ``Algorithm.evaluate()`` use: its own
evaluation workers (a :class:`~rldataflow.workers.WorkerSet` of ``evaluation_num_workers``
remote workers, supervised by the same failure policy as rollout workers), given the learning
policy's current weights before each evaluation, started (:meth:`Evaluator.start`) and
collected (:meth:`Evaluator.collect`) separately so an evaluation can run while training goes
on. Results are ``evaluation/*`` keys (:func:`summarize`).


Inside a plan, :class:`EvaluateOnWorkers` evaluates on the plan's own rollout workers: every
``every`` items it sends the local policy's
weights to the workers, runs episodes there (deterministic actions, ``Worker.evaluate``) and
records the returns as ``evaluation/*`` entries of the plan's metrics, which
:class:`~rldataflow.ops.CollectMetrics` copies into every result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rldataflow.flow import Operator
from rldataflow.runtime import ActorDiedError, ActorHandle, Future
from rldataflow.workers import WorkerSet

__all__ = ["EvaluateOnWorkers", "Evaluator", "summarize"]

logger = logging.getLogger(__name__)

#: The evaluation set's seeds are this far from the run's, so its workers do not replay the
#: rollout workers' episodes.
EVALUATION_SEED_OFFSET = 7_777

#: How many times one evaluation reissues the episodes of a worker that died under it.
MAX_REISSUES = 3


def summarize(episodes: Sequence[tuple[float, int]], prefix: str = "evaluation/"
              ) -> dict[str, Any]:
    """The ``evaluation/*`` result keys of ``(return, length)`` pairs. Example::

        summarize([(10.0, 10), (20.0, 20)])["evaluation/episode_return_mean"]   # 15.0
    """
    returns = np.asarray([r for r, _ in episodes], dtype=np.float64)
    lengths = np.asarray([n for _, n in episodes], dtype=np.float64)
    some = returns.size > 0
    return {
        f"{prefix}episode_return_mean": float(returns.mean()) if some else math.nan,
        f"{prefix}episode_return_min": float(returns.min()) if some else math.nan,
        f"{prefix}episode_return_max": float(returns.max()) if some else math.nan,
        f"{prefix}episode_len_mean": float(lengths.mean()) if some else math.nan,
        f"{prefix}num_episodes": int(returns.size),
    }


@dataclass
class PendingEvaluation:
    """An evaluation in flight: one request per evaluation worker (or none: driver-side)."""

    num_episodes: int
    requests: list[tuple[int, ActorHandle, int, Future]] = field(default_factory=list)


class Evaluator:
    """Evaluation workers for the policy that ``workers`` (the training set) learns.

    ``num_workers == 0`` evaluates in the driver, on the evaluation set's own local worker
    (a copy of the learning policy, so an env override does not touch the training envs).
    ``overrides`` change the workers' ``env``, ``env_config`` or ``seed``. A dead evaluation
    worker is replaced (``restart_failed``) with the current weights and its episodes
    reissued; with restarts off its death is raised, naming the ``evaluation-...`` actor.

    Example::

        evaluator = Evaluator(algo.workers, num_workers=2)
        pending = evaluator.start(10)      # the workers play while the driver goes on
        result = algo.train()
        print(evaluator.collect(pending)["evaluation/episode_return_mean"])
        evaluator.stop()
    """

    def __init__(self, workers: WorkerSet, num_workers: int = 0, *, explore: bool = False,
                 overrides: Mapping[str, Any] | None = None, restart_failed: bool = True
                 ) -> None:
        if num_workers < 0:
            raise ValueError(f"Evaluator: num_workers must be >= 0, got {num_workers}")
        self.source = workers
        self.explore = bool(explore)
        kwargs = dict(workers.worker_kwargs)
        kwargs["seed"] = int(kwargs.get("seed", 0)) + EVALUATION_SEED_OFFSET
        kwargs.update(overrides or {})
        if "num_envs" in kwargs:  # evaluate() makes its own env; the sampling ones idle
            kwargs["num_envs"] = 1
        self.workers = WorkerSet(workers.runtime, num_workers, kwargs,
                                 restart_failed=restart_failed, worker_cls=workers.worker_cls,
                                 kind="evaluation worker")
        self.num_evaluations = 0

    @property
    def num_restarts(self) -> int:
        """Evaluation workers restarted so far."""
        return self.workers.num_restarts

    def sync_weights(self) -> None:
        """Give the evaluation workers the learning policy's current weights."""
        local = self.source.local_worker()
        self.workers.local_worker().set_weights(local.get_weights(), local.weights_version)
        self.workers.sync_weights()  # applied before the evaluate calls queued behind it

    def start(self, num_episodes: int) -> PendingEvaluation:
        """Send the current weights and start ``num_episodes`` episodes on the evaluation
        workers (split among them); returns at once. Driver-side evaluations run in
        :meth:`collect`."""
        self.sync_weights()
        pending = PendingEvaluation(int(num_episodes))
        remote = self.workers.remote_workers()
        for slot, actor in enumerate(remote):
            k = num_episodes // len(remote) + (slot < num_episodes % len(remote))
            if k:
                pending.requests.append((slot, actor, k, self._call(actor, k)))
        return pending

    def _call(self, actor: ActorHandle, k: int) -> Future:
        return actor.call("evaluate_episodes", k, self.explore)

    def collect(self, pending: PendingEvaluation) -> dict[str, Any]:
        """Wait for ``pending`` and return its ``evaluation/*`` keys."""
        episodes: list[tuple[float, int]] = []
        if not self.workers.remote_workers():
            ran = self.workers.local_worker().evaluate_episodes(pending.num_episodes,
                                                                self.explore)
            episodes = [(float(r), int(n)) for r, n, _ in ran]
        for slot, actor, k, future in pending.requests:
            for attempt in range(MAX_REISSUES + 1):
                try:
                    episodes += [(float(r), int(n)) for r, n, _ in future.result()]
                    break
                except ActorDiedError as error:
                    if attempt == MAX_REISSUES:
                        raise
                    # raises the death when restarts are off; else a fresh worker, given
                    # the current weights by the set's restart hook
                    actor = self.workers.replace_dead_worker(slot, actor, error)
                    future = self._call(actor, k)
        self.num_evaluations += 1
        return summarize(episodes)

    def evaluate(self, num_episodes: int) -> dict[str, Any]:
        """Run ``num_episodes`` episodes now; their ``evaluation/*`` keys."""
        return self.collect(self.start(num_episodes))

    def stop(self) -> None:
        self.workers.stop()

    def __repr__(self) -> str:
        return f"Evaluator({self.workers!r}, explore={self.explore})"


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
