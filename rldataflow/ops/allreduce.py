"""Decentralized training: the rollout workers learn together, averaging gradients among
themselves; the driver only starts the steps and collects their metrics.

:func:`AllReduceTraining` is a source of training results. On its first ``next`` it forms a
gradient group of the remote workers (:class:`~rldataflow.workers.grad_group.GroupSpec`):

* process runtime -- gloo on ``127.0.0.1`` at a port the driver picks free;
* Ray runtime -- gloo at the first worker's node IP and a port free on that node (the group
  works across nodes);
* inline runtime -- an in-process thread group: each worker's step runs on its own driver
  thread and the gradients are averaged in rank order (the same math, bit-reproducible).

Every step, each worker samples, prepares its batch and runs minibatch SGD with every
minibatch's gradient all-reduced (``RolloutWorker.sample_and_learn``). Equal starting weights
(rank 0's, broadcast within the group when it forms) plus equal averaged steps keep the workers
identical: no weights travel from the driver. The driver keeps a mirror of rank 0's weights in
its local worker, for evaluation and checkpoints.

A dead worker: the pool restarts it, the restarted worker gets a survivor's policy state
(weights and optimizer), the group is formed again (new rendezvous) and the step is run again;
the survivors' partial step of the failed round is overwritten by the new group's broadcast.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rldataflow.flow import LocalIterator, Operator
from rldataflow.flow.local_iterator import from_local_iterable
from rldataflow.ops.rollouts import record_sampled
from rldataflow.runtime import ActorDiedError, ActorHandle
from rldataflow.runtime.base import ALL_COMPLETED
from rldataflow.workers import WorkerSet
from rldataflow.workers.grad_group import GroupSpec, abort_thread_group, free_port

__all__ = ["AllReduceTraining", "GradientGroupOwner"]

#: a failed round is retried at most this many times in a row before the error is raised
MAX_REFORMS_PER_STEP = 3


class GradientGroupOwner:
    """Forms (and re-forms) the gradient group of a WorkerSet's remote workers; a plan
    resource (``stop()`` makes the workers leave it)."""

    def __init__(self, workers: WorkerSet, timeout_s: float = 60.0) -> None:
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.spec: GroupSpec | None = None
        self.generation = 0
        #: how many times the group was formed again after a worker died
        self.num_reforms = 0

    def results(self, futures: list[Any], spec: GroupSpec | None = None
                ) -> list[tuple[Any, BaseException | None]]:
        """``(value, error)`` of each call. Inline calls run when asked for, one at a time;
        group members block on each other, so there each one is forced on its own thread
        (and a failed one wakes its peers in the thread group ``spec``)."""
        runtime = self.workers.runtime
        if runtime.completes_on_demand and len(futures) > 1:
            by_actor: dict[Any, list[Any]] = {}
            for fut in futures:  # one thread per actor: its calls still run in order
                by_actor.setdefault(fut.actor.actor_id, []).append(fut)

            def force(fs: list[Any]) -> None:
                for f in fs:
                    if f.exception() is not None and spec is not None:
                        abort_thread_group(spec.tag)

            with ThreadPoolExecutor(len(by_actor)) as pool:
                list(pool.map(force, by_actor.values()))
        else:
            runtime.wait(futures, ALL_COMPLETED)
        out: list[tuple[Any, BaseException | None]] = []
        for fut in futures:
            err = fut.exception()
            out.append((None if err is not None else fut.result(), err))
        return out

    def _spec(self, actors: list[ActorHandle]) -> GroupSpec:
        runtime = self.workers.runtime
        self.generation += 1
        tag = f"g{self.generation}-{id(self):x}"
        if runtime.name == "inline":
            return GroupSpec("thread", len(actors), tag, timeout_s=self.timeout_s)
        if runtime.name == "ray":  # rank 0 hosts the store: its node, a port free there
            addr, port = actors[0].call("group_address").result()
        else:
            addr, port = "127.0.0.1", free_port()
        return GroupSpec("gloo", len(actors), tag, addr, int(port), self.timeout_s)

    def form(self) -> None:
        """Every remote worker joins a new group (ranks in slot order)."""
        actors = self.workers.remote_workers()
        spec = self._spec(actors)
        outcomes = self.results([a.call("join_group", spec, rank)
                                 for rank, a in enumerate(actors)], spec)
        if self.replace_dead(actors, outcomes):
            return self.form()
        raise_first_cause(outcomes)
        self.spec = spec

    def replace_dead(self, actors: list[ActorHandle],
                     outcomes: list[tuple[Any, BaseException | None]]) -> bool:
        """Restart the workers whose call died (raising if restarts are off), give them a
        survivor's policy state; True if any died (the group must then be formed again)."""
        dead = [(i, a, err) for i, (a, (_, err)) in enumerate(zip(actors, outcomes, strict=True))
                if isinstance(err, ActorDiedError)]
        if not dead:
            return False
        survivors = [a for a, (_, err) in zip(actors, outcomes, strict=True)
                     if not isinstance(err, ActorDiedError)]
        restarted = [self.workers.replace_dead_worker(i, a, err) for i, a, err in dead]
        if survivors:
            self.set_member_state(self.member_state(survivors[0]), restarted)
        self.spec = None
        self.num_reforms += 1
        return True

    def member_state(self, actor: ActorHandle | None = None) -> dict[str, Any]:
        """A member's policy state (weights, optimizer, counters; default: rank 0's) without
        its RNG states: a worker given it still explores its own way."""
        actor = actor if actor is not None else self.workers.remote_workers()[0]
        state = actor.call("get_state").result()["policy"]
        state.pop("generator_state", None)
        state.pop("np_rng_state", None)
        return state

    def set_member_state(self, state: dict[str, Any],
                         actors: list[ActorHandle] | None = None) -> None:
        """Give ``actors`` (default: every member) the policy state ``state``."""
        targets = self.workers.remote_workers() if actors is None else actors
        for fut in [a.call("apply", _set_policy_state, state) for a in targets]:
            fut.result()

    def stop(self) -> None:
        if self.spec is None:
            return
        self.spec = None
        futures = [a.call("leave_group") for a in self.workers.remote_workers()]
        self.results(futures)  # errors of dead workers do not matter here


def raise_first_cause(outcomes: list[tuple[Any, BaseException | None]]) -> None:
    """Raise the first error that is not a peer's reaction to it (a thread group's broken
    barrier, gloo's closed connection or timeout), else the first error."""
    errors = [err for _, err in outcomes if err is not None]
    if not errors:
        return
    causes = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)
              and "Connection closed by peer" not in str(e) and "Timed out" not in str(e)]
    raise (causes or errors)[0]


def _set_policy_state(worker: Any, state: dict[str, Any]) -> None:
    worker.policy.set_state(state)


class _RecordRound(Operator):
    op_name = "RecordRound"

    def __call__(self, outcome: dict[str, Any]) -> dict[str, float]:
        metrics = self.metrics
        for info in outcome["infos"]:
            record_sampled(metrics, info["count"], info.get("stats", {}))
            metrics.counters["env_steps_trained"] += info["count"]
        stats = [info["learner_stats"] for info in outcome["infos"]]
        # every member took the same steps; their loss stats differ (own data): the mean
        learner = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
        metrics.counters["num_grad_updates"] += int(stats[0].get("num_grad_updates", 1))
        metrics.info["learner"] = learner
        metrics.info["group_size"] = len(stats)
        metrics.info["group_reforms"] = outcome["reforms"]
        metrics.timers["round"].push(outcome["time_s"])
        for name in ("sample", "learn", "allreduce"):  # the workers' mean
            metrics.timers[f"worker_{name}"].push(
                float(np.mean([info["timers"][name] for info in outcome["infos"]])))
        return learner


def AllReduceTraining(workers: WorkerSet, num_epochs: int = 1,
                      minibatch_size: int | None = None,
                      prepare: Callable[[Any], Any] | None = None,
                      owner: GradientGroupOwner | None = None) -> LocalIterator[dict[str, float]]:
    """One decentralized training round per item: every remote worker samples, ``prepare`` s
    its batch and runs ``num_epochs`` x minibatch SGD with gradients averaged over the group.
    Emits the learner stats averaged over the workers. Pass ``owner`` to share (and stop) the
    group with the plan: ``Plan(..., resources=[owner])``. Example::

        owner = GradientGroupOwner(workers)
        train_op = AllReduceTraining(workers, num_epochs=4, minibatch_size=256,
                                     prepare=StandardizeFields(["advantages"]), owner=owner)
        plan = Plan(StandardMetricsReporting(train_op, workers), resources=[owner])
    """
    if not workers.remote_workers():
        raise ValueError("AllReduceTraining trains on the remote workers; num_workers must be "
                         ">= 1")
    group = owner if owner is not None else GradientGroupOwner(workers)

    def one_round() -> dict[str, Any]:
        import time

        start = time.perf_counter()
        for _ in range(MAX_REFORMS_PER_STEP + 1):
            if group.spec is None:
                group.form()
            actors = workers.remote_workers()
            futures = [a.call("sample_and_learn", num_epochs, minibatch_size, prepare)
                       for a in actors]
            mirror = actors[0].call("get_weights")  # queued after rank 0's step
            outcomes = group.results([*futures, mirror], group.spec)
            weights, mirror_err = outcomes.pop()
            if group.replace_dead(actors, outcomes):
                continue  # the peers of a dead worker failed too; run the round again
            if any(err is not None for _, err in outcomes) or mirror_err is not None:
                group.spec = None  # the group is broken: the next round forms a new one
                raise_first_cause([*outcomes, (None, mirror_err)])
            local = workers.local_worker()
            infos = [value for value, _ in outcomes]
            local.set_weights(weights, version=infos[0]["weights_version"])
            return {"infos": infos, "reforms": group.num_reforms,
                    "time_s": time.perf_counter() - start}
        raise RuntimeError(f"AllReduceTraining: workers kept dying; the group was formed again "
                           f"{MAX_REFORMS_PER_STEP} times within one round")

    def rounds() -> Iterator[dict[str, Any]]:
        for _ in itertools.count():
            yield one_round()

    source = from_local_iterable(
        rounds, name=f"AllReduceTraining({workers.num_remote_workers} workers, "
                     f"epochs={num_epochs}, minibatch={minibatch_size})")
    return source.for_each(_RecordRound())
