"""Learning steps: SGD on the local policy, gradients, and getting weights back to workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rldataflow.data import SampleBatch
from rldataflow.flow import Operator
from rldataflow.ops.weights import SyncWeights
from rldataflow.workers import WorkerSet


class TrainOneStep(Operator):
    """SGD on the local policy with each batch; then send the new weights to the workers.

    ``num_epochs`` passes over the batch in minibatches of ``minibatch_size`` rows (the whole
    batch when None). Weights travel once per step, serialized once for all workers; pass
    ``broadcast=False`` and add :class:`BroadcastWeights` where a plan wants that elsewhere.
    ``policy_id`` picks one policy of a multi-agent worker. Emits ``(batch, learner_stats)``.
    Example::

        train_op = batches.for_each(TrainOneStep(workers, num_epochs=10, minibatch_size=256))
    """

    def __init__(self, workers: WorkerSet, num_epochs: int = 1,
                 minibatch_size: int | None = None, broadcast: bool = True,
                 policy_id: str | None = None) -> None:
        self.workers = workers
        self.num_epochs = num_epochs
        self.minibatch_size = minibatch_size
        self.broadcast = broadcast
        self.policy_id = policy_id
        self._sync = SyncWeights(workers, counter=None, timer="broadcast_weights")

    @property
    def op_name(self) -> str:
        return f"TrainOneStep(epochs={self.num_epochs}, minibatch={self.minibatch_size})"

    def __call__(self, batch: SampleBatch) -> tuple[SampleBatch, dict[str, float]]:
        metrics = self.metrics
        timer = metrics.timers["learn"]
        local = self.workers.local_worker()
        for policy in local.policies.values():  # the clock of lr / entropy schedules
            policy.global_timestep = metrics.counters["env_steps_sampled"]
        with timer:
            stats = local.learn_on_batch(
                batch, policy_id=self.policy_id, num_epochs=self.num_epochs,
                minibatch_size=self.minibatch_size)
        timer.push_units(batch.count)
        metrics.counters["env_steps_trained"] += batch.count
        metrics.counters["num_grad_updates"] += stats.get("num_grad_updates", 1)
        if self.policy_id is None:
            metrics.info["learner"] = stats
        else:
            metrics.info.setdefault("learner", {})[self.policy_id] = stats
        if self.broadcast:
            self._sync.sync(batch, metrics)
        return batch, stats


class ComputeGradients(Operator):
    """Gradients of the local policy's loss on each batch: emits ``(grads, info)``.

    Example: ``batches.for_each(ComputeGradients(workers))``
    """

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers

    def __call__(self, batch: SampleBatch) -> tuple[list[np.ndarray], dict[str, Any]]:
        with self.metrics.timers["compute_grads"]:
            grads, stats = self.workers.local_worker().compute_gradients(batch)
        return grads, {"count": batch.count, "learner_stats": stats}


class AverageGradients:
    """Average a list of ``(grads, info)`` into one (counts are summed).

    RLlib's version summed without dividing; this one averages, so the step size does not grow
    with the number of microbatches. Example: ``grads.batch(4).for_each(AverageGradients())``
    """

    __name__ = "AverageGradients"

    def __call__(self, items: list[tuple[list[np.ndarray], dict[str, Any]]]
                 ) -> tuple[list[np.ndarray], dict[str, Any]]:
        if not items:
            raise ValueError("AverageGradients got an empty list")
        n = len(items)
        total = [np.array(g, dtype=np.float32, copy=True) for g in items[0][0]]
        for grads, _ in items[1:]:
            for acc, g in zip(total, grads, strict=True):
                acc += g
        averaged = [g / n for g in total]
        info = dict(items[-1][1])
        info["count"] = sum(i[1]["count"] for i in items)
        return averaged, info


class ApplyGradients(Operator):
    """Apply ``(grads, info)`` to the local policy; send the new weights to the workers.

    ``update_all=False`` (A3C) sends them only to the worker the gradients came from, so each
    worker computes its next gradients with fresh weights while the others keep sampling.
    Example: ``AsyncGradients(workers).for_each(ApplyGradients(workers, update_all=False))``
    """

    def __init__(self, workers: WorkerSet, update_all: bool = True) -> None:
        self.workers = workers
        self.update_all = update_all
        self._sync = SyncWeights(workers, to="all" if update_all else "source", counter=None,
                                 timer=None)

    @property
    def op_name(self) -> str:
        return f"ApplyGradients(update_all={self.update_all})"

    def __call__(self, item: tuple[list[np.ndarray], dict[str, Any]]) -> dict[str, Any]:
        grads, info = item
        metrics = self.metrics
        with metrics.timers["apply_grads"]:
            self.workers.local_worker().apply_gradients(grads)
        metrics.counters["env_steps_trained"] += info["count"]
        metrics.counters["num_grad_updates"] += 1
        if "learner_stats" in info:
            metrics.info["learner"] = info["learner_stats"]
        self._sync.sync(item, metrics)  # A3C: to the source, info["source"]
        return info


class UpdateTargetNetwork(Operator):
    """Call ``update_fn()`` every ``target_update_freq`` env steps sampled (or trained).

    Example: ``train_op.for_each(UpdateTargetNetwork(policy.update_target, 500))``
    """

    def __init__(self, update_fn: Callable[[], Any], target_update_freq: int,
                 by_steps_trained: bool = False) -> None:
        self.update_fn = update_fn
        self.freq = target_update_freq
        self.counter = "env_steps_trained" if by_steps_trained else "env_steps_sampled"
        self.last_update = 0

    def __call__(self, item: Any) -> Any:
        now = self.metrics.counters[self.counter]
        if now - self.last_update >= self.freq:
            self.update_fn()
            self.last_update = now
            self.metrics.counters["num_target_updates"] += 1
        return item
