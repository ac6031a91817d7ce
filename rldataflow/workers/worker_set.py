"""WorkerSet: one local worker in the driver plus N remote rollout workers on a runtime.

The local worker holds the policy that learns; remote workers sample with copies of its
weights. The set is also the failure policy of the plans that read from it: when a remote
worker dies, :meth:`WorkerSet.replace_dead_worker` starts a new one (fresh seed, current weights)
and the gather operator reissues the lost requests to it, so the plan and its counters go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from rldataflow.runtime import ActorDiedError, ActorHandle, Runtime
from rldataflow.runtime.base import ALL_COMPLETED
from rldataflow.workers.rollout_worker import RolloutWorker

logger = logging.getLogger(__name__)

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
    """

    def __init__(self, runtime: Runtime, num_workers: int, worker_kwargs: dict[str, Any],
                 restart_failed: bool = True, worker_cls: type = RolloutWorker) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.runtime = runtime
        self.worker_cls = worker_cls
        self.worker_kwargs = dict(worker_kwargs)
        self.restart_failed = restart_failed
        self.num_restarts = 0
        self._local = worker_cls(**self.worker_kwargs, worker_index=0)
        self._remote: list[ActorHandle] = []
        self._restarts_of: list[int] = []
        for index in range(1, num_workers + 1):
            self._remote.append(self._create(index, restarts=0))
            self._restarts_of.append(0)
        if self._remote:
            # Surface constructor errors (bad env id, ...) now, with the worker named.
            self.runtime.wait([a.call("ping") for a in self._remote], ALL_COMPLETED)
            for actor in self._remote:
                actor.call("ping").result()
            self.sync_weights()

    def _create(self, index: int, restarts: int) -> ActorHandle:
        kwargs = dict(self.worker_kwargs)
        kwargs["seed"] = int(kwargs.get("seed", 0)) + restarts * RESTART_SEED_STRIDE
        return self.runtime.create_actor(self.worker_cls, **kwargs, worker_index=index,
                                         name=f"{self.worker_cls.__name__}-{index}")

    # -- access ---------------------------------------------------------------------------
    def local_worker(self) -> RolloutWorker:
        return self._local

    def remote_workers(self) -> list[ActorHandle]:
        return list(self._remote)

    @property
    def num_remote_workers(self) -> int:
        return len(self._remote)

    def index_of(self, actor: ActorHandle) -> int:
        for i, a in enumerate(self._remote):
            if a is actor or a.actor_id == actor.actor_id:
                return i
        raise KeyError(f"{actor!r} is not a worker of this WorkerSet")

    # -- weights ----------------------------------------------------------------------------
    def sync_weights(self, actors: Sequence[ActorHandle] | None = None,
                     wait: bool = False) -> None:
        """Send the local policy's weights to remote workers (serialized once for all).

        With ``wait=False`` the call returns at once; the actor applies the weights before its
        next queued request (calls on one actor run in order).
        """
        targets = self._remote if actors is None else list(actors)
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
        futures = [a.call("ping") for a in self._remote]
        self.runtime.wait(futures, ALL_COMPLETED, timeout=timeout)
        bad = []
        for i, fut in enumerate(futures):
            try:
                if not fut.done() or fut.result() != "ok":
                    bad.append(i)
            except Exception:
                bad.append(i)
        return bad

    def replace_dead_worker(self, shard_index: int, actor: ActorHandle,
                            error: ActorDiedError) -> ActorHandle | None:
        """Failure policy for gather operators: recreate the worker behind ``actor``.

        The new worker gets the next seed in line and the local policy's current weights; the
        restart is counted in :attr:`num_restarts`. Raises the error when restarts are off.
        """
        if not self.restart_failed:
            raise error
        try:
            i = self.index_of(actor)
        except KeyError:
            raise error from None
        self._restarts_of[i] += 1
        self.num_restarts += 1
        logger.warning("%s; restarting it (restart #%d)", error, self.num_restarts)
        self.runtime.kill(actor)
        replacement = self._create(i + 1, self._restarts_of[i])
        self._remote[i] = replacement
        self.sync_weights([replacement])
        return replacement

    def recreate_dead_workers(self) -> int:
        """Replace every remote worker that fails a health check; returns how many."""
        bad = self.health_check()
        for i in bad:
            actor = self._remote[i]
            self.replace_dead_worker(i, actor, ActorDiedError(actor.name, actor.class_name,
                                                              "failed its health check"))
        return len(bad)

    # -- calls on all workers -------------------------------------------------------------------
    def foreach_worker(self, fn: Callable[[Any], Any], local: bool = True) -> list[Any]:
        """``fn(worker)`` on the local worker (first) and every remote worker; the results."""
        results = [fn(self._local)] if local else []
        futures = [a.call("apply", fn) for a in self._remote]
        return results + [f.result() for f in futures]

    def stop(self) -> None:
        for actor in self._remote:
            self.runtime.kill(actor)
        self._remote = []
        self._local.stop()

    def __repr__(self) -> str:
        return f"WorkerSet(local + {len(self._remote)} remote on {self.runtime.name})"
