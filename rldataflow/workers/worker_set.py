"""WorkerSet: one local worker in the driver plus N remote rollout workers on a runtime.

The local worker holds the policy that learns; remote workers sample with copies of its
weights, in an :class:`~rldataflow.runtime.actor_pool.ActorPool`. The set is also the failure
policy of the plans that read from it: when a remote
worker dies, :meth:`WorkerSet.replace_dead_worker` starts a new one (fresh seed, current weights)
and the gather operator reissues the lost requests to it, so the plan and its counters go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rldataflow.data.dataset import DatasetOutput
from rldataflow.runtime import ActorDiedError, ActorHandle, Runtime
from rldataflow.runtime.actor_pool import ActorPool
from rldataflow.workers.rollout_worker import RolloutWorker

#: A recreated worker's seed moves this far per restart, so it does not replay its predecessor.
RESTART_SEED_STRIDE = 1_000_003


class WorkerSet:
    """A local :class:`RolloutWorker` plus ``num_workers`` remote ones.

    Example::

        with get_runtime("process") as rt:
            workers = WorkerSet(rt, num_workers=2,
                                worker_kwargs=dict(env="CartPole-v1", num_envs=8, seed=0))
            batches = ParallelRollouts(workers, mode="bulk_sync")
            print(next(batches).count)
            workers.stop()

    Args:
        runtime: where the remote workers live.
        num_workers: remote workers; with 0 the local worker samples.
        worker_kwargs: :class:`RolloutWorker` arguments shared by all workers (``worker_index``
            is set per worker: 0 local, 1..N remote).
        restart_failed: replace dead remote workers (otherwise their death is an error).
        worker_cls: the worker class (a RolloutWorker subclass, e.g. a multi-agent one).
        kind: what the remote workers are, for log lines and actor names ("rollout worker";
            "evaluation worker" names them ``evaluation-<class>-<i>``).
        output: where sampled batches are also written (a
            :class:`~rldataflow.data.dataset.DatasetOutput`; the ``output`` config key), by
            each worker for its own batches (``ParallelRollouts`` applies the writing).
    """

    def __init__(self, runtime: Runtime, num_workers: int, worker_kwargs: dict[str, Any],
                 restart_failed: bool = True, worker_cls: type = RolloutWorker,
                 output: DatasetOutput | None = None, kind: str = "rollout worker") -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.runtime = runtime
        self.output = output
        self.worker_cls = worker_cls
        self.worker_kwargs = dict(worker_kwargs)
        self.kind = kind
        # remote actors are named after what they are ("evaluation-RolloutWorker-1"), so the
        # error of a dead one says which set it belonged to
        self._name_prefix = "" if kind == "rollout worker" else kind.split()[0] + "-"
        self._local = worker_cls(**self.worker_kwargs, worker_index=0)
        # Remote worker i + 1 holds slot i; a replacement gets the next seed in line and the
        # local policy's current weights.
        try:
            self.pool = ActorPool(runtime, num_workers,
                                  lambda slot, restarts: self._create(slot + 1, restarts),
                                  on_restart=lambda slot, actor: self.sync_weights([actor]),
                                  restart_failed=restart_failed, kind=kind)
        except BaseException:
            self._local.stop()
            raise
        if self.pool.actors:
            self.sync_weights()

    def _create(self, index: int, restarts: int) -> ActorHandle:
        kwargs = dict(self.worker_kwargs)
        kwargs["seed"] = int(kwargs.get("seed", 0)) + restarts * RESTART_SEED_STRIDE
        return self.runtime.create_actor(self.worker_cls, **kwargs, worker_index=index,
                                         name=f"{self._name_prefix}{self.worker_cls.__name__}-{index}")

    # -- access ---------------------------------------------------------------------------
    def local_worker(self) -> RolloutWorker:
        return self._local

    def remote_workers(self) -> list[ActorHandle]:
        return list(self.pool.actors)

    @property
    def num_remote_workers(self) -> int:
        return len(self.pool)

    @property
    def restart_failed(self) -> bool:
        """Whether dead remote workers are replaced (else their death is an error)."""
        return self.pool.restart_failed

    @restart_failed.setter
    def restart_failed(self, value: bool) -> None:
        self.pool.restart_failed = bool(value)

    @property
    def num_restarts(self) -> int:
        """Remote workers restarted so far (over all slots)."""
        return self.pool.num_restarts

    def index_of(self, actor: ActorHandle) -> int:
        try:
            return self.pool.slot_of(actor)
        except KeyError:
            raise KeyError(f"{actor!r} is not a worker of this WorkerSet") from None

    # -- weights ----------------------------------------------------------------------------
    def sync_weights(self, actors: Sequence[ActorHandle] | None = None,
                     wait: bool = False) -> None:
        """Send the local policy's weights to remote workers (serialized once for all).

        With ``wait=False`` the call returns at once; the actor applies the weights before its
        next queued request (calls on one actor run in order).
        """
        targets = self.pool.actors if actors is None else list(actors)
        if not targets:
            return
        local = self._local
        futures = self.runtime.call_many(targets, "set_weights", local.get_weights(),
                                         local.weights_version)
        if wait:
            for fut in futures:
                try:
                    fut.result()
                except ActorDiedError:
                    pass  # the gather's failure policy replaces it when it is next read

    # -- health and restarts ------------------------------------------------------------------
    def health_check(self, timeout: float = 10.0) -> list[int]:
        """Indexes (0-based, remote) of workers that are dead or do not answer ``ping``."""
        return self.pool.health_check(timeout)

    def replace_dead_worker(self, shard_index: int, actor: ActorHandle,
                            error: ActorDiedError) -> ActorHandle | None:
        """Failure policy for gather operators: recreate the worker behind ``actor``.

        The new worker gets the next seed in line and the local policy's current weights; the
        restart is counted in :attr:`num_restarts`. Raises the error when restarts are off.
        """
        return self.pool.replace_dead(shard_index, actor, error)

    def recreate_dead_workers(self) -> int:
        """Replace every remote worker that fails a health check; returns how many."""
        return self.pool.recreate_dead()

    # -- calls on all workers -------------------------------------------------------------------
    def foreach_worker(self, fn: Callable[[Any], Any], local: bool = True) -> list[Any]:
        """``fn(worker)`` on the local worker (first) and every remote worker; the results."""
        results = [fn(self._local)] if local else []
        futures = [a.call("apply", fn) for a in self.pool.actors]
        return results + [f.result() for f in futures]

    def stop(self) -> None:
        self.pool.stop()
        self._local.stop()

    def __repr__(self) -> str:
        return f"WorkerSet(local + {len(self.pool)} remote on {self.runtime.name})"
