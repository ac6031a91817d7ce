"""Ape-X: distributed prioritized experience replay (Horgan et al. 2018, "Distributed Prioritized
Experience Replay", ICLR, arXiv:1803.00933), with the DQN loss of :mod:`rldataflow.algorithms.dqn`
(double Q, dueling, n-step, prioritized).

Actors act with fixed epsilons ``eps_i = eps ** (1 + alpha * i / (N - 1))``, ``eps = 0.4``,
``alpha = 7`` (section 4.1 of the paper). In the paper an actor is one env copy with its own
process; here a worker steps ``num_envs_per_worker`` envs, and with ``exploration_per="env"``
(the default) each env copy is one of the ``N = num_workers * num_envs_per_worker`` actors;
``"worker"`` gives all envs of worker ``i`` the same ``eps_i`` (``N = num_workers``; with 2
workers that is 0.4 and 0.4**8, and the first worker's episodes, about twice as many and half as
long on CartPole, then dominate the mean return). Actors send n-step transitions
to sharded replay memories; the learner trains on prioritized batches from the shards in a
thread and sends the new priorities (``|TD error|``) back to the shard each batch came from;
actors fetch the latest weights every ``max_weight_sync_delay`` env steps (400 frames in the
paper). Replay uses ``alpha = 0.6``, ``beta = 0.4`` (not annealed) as in the paper; the other
defaults (64x64 MLP, batch 64, Adam 2e-3, target copy every 4000 rows trained) are tuned for
CartPole on a 2-core machine, not the paper's Atari settings (batch 512, 2M-row replay,
target copy every 2500 batches).

Dataflow: three flows run concurrently (``Concurrently(mode="async")``), the output is the
learner's::

    [0] async rollouts -> ThrottleSampling -> StoreToReplayBuffer(shards) -> SyncWeightsToSource
    [1] Replay(shards, num_async) -> zip_with_source_actor -> Enqueue(learner.inqueue)
    [2] Dequeue(learner.outqueue) -> RecordLearnerStep -> UpdatePriorities -> UpdateTargetNetwork

``ThrottleSampling`` is not in the paper, whose actors run free (``training_intensity=None``):
with a cheap env on a small machine free-running actors sample several times faster than one
learner trains, and the replay ratio (rows trained per row sampled) falls near 1; the default
keeps it at 4 by pausing sampling while the learner is behind.

Checkpoints hold the learner's policy (online and target networks, optimizer); the replay
shards' contents are *not* saved: a restored run refills them (``learning_starts`` rows) first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rldataflow.algorithms.base import AlgorithmBuilder, dataset_output
from rldataflow.algorithms.dqn import (
    DQNPolicy,
    QConfig,
    make_buffer,
    policy_config,
    worker_kwargs,
)
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.data import SampleBatch
from rldataflow.flow import Concurrently, Dequeue, Enqueue, LocalIterator, Operator, Plan
from rldataflow.ops import (
    LearnerThread,
    ParallelRollouts,
    Replay,
    ReplayActor,
    StandardMetricsReporting,
    StoreToReplayBuffer,
    ThrottleSampling,
    UpdatePriorities,
    UpdateTargetNetwork,
)
from rldataflow.ops.replay import ROWS_ADDED, TD_ERROR
from rldataflow.ops.weights import SyncWeights
from rldataflow.runtime import ActorHandle
from rldataflow.runtime.actor_pool import ActorPool
from rldataflow.utils.config import ConfigError, describe_field
from rldataflow.workers import RolloutWorker, WorkerSet
from rldataflow.workers.worker_set import RESTART_SEED_STRIDE

_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class ApexFields:
    """The Ape-X plan's own settings (replay shards, concurrency, weight sync), mixed into the
    configs of Ape-X DQN and Ape-X DDPG (``class Config(ApexFields, SomeConfig)``), which set
    the learner's fields, the sampling fields and ``training_intensity`` themselves."""

    num_replay_shards: int = field(default=2, metadata=_h("replay actors"))
    num_async_rollouts: int = field(
        default=2, metadata=_h("sample requests in flight per rollout worker"))
    num_async_replay: int = field(default=2, metadata=_h("replay requests in flight per shard"))
    learner_queue_size: int = field(
        default=4, metadata=_h("replayed batches waiting for the learner thread"))
    max_weight_sync_delay: int = field(
        default=400, metadata=_h("a worker gets new weights after sampling this many steps"))

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]  # the config class it is mixed into
        if self.num_workers < 1:  # type: ignore[attr-defined]
            raise ConfigError("config key 'num_workers' must be >= 1 for Ape-X (the actors)")
        for key in ("num_replay_shards", "num_async_rollouts", "num_async_replay",
                    "learner_queue_size", "max_weight_sync_delay"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1")
        ti = self.training_intensity  # type: ignore[attr-defined]
        if ti is not None and ti <= 0:
            raise ConfigError("config key 'training_intensity' must be > 0 or None")


@dataclass
class Config(ApexFields, QConfig):
    """Ape-X settings; the defaults reach a CartPole-v1 mean return of 300 within 400k env steps
    with 2 workers and 2 replay shards on a 2-core machine."""

    num_workers: int = field(default=2, metadata=_h("rollout workers (the paper's actors)"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=25, metadata=_h("steps per env per sample (one batch to a replay shard)"))
    train_batch_size: int = field(default=64, metadata=_h("replayed rows per learner step"))
    buffer_size: int = field(
        default=100_000, metadata=_h("replay capacity in rows, split evenly over the shards"))
    learning_starts: int = field(
        default=5_000, metadata=_h("rows stored (over all shards) before replay starts", ge=0))
    target_network_update_freq: int = field(
        default=4_000, metadata=_h("copy the online net to the target net every this many "
                                    "rows trained"))
    training_intensity: float | None = field(
        default=4.0, metadata=_h("rows trained per row sampled: sampling pauses while the "
                                 "learner is behind (None: actors run free, as in the paper; "
                                 "on a small machine a cheap env then outruns the learner)"))
    exploration_epsilon: float = field(
        default=0.4, metadata=_h("eps of eps_i = eps ** (1 + alpha * i / (N - 1))"))
    exploration_alpha: float = field(default=7.0, metadata=_h("alpha of that formula", ge=0))
    exploration_per: Literal["env", "worker"] = field(
        default="env", metadata=_h("who is an actor i of that formula: each env copy, or each "
                                   "worker (all its envs share eps_i)"))
    min_time_s_per_iteration: float = field(
        default=1.0, metadata=_h("report a result no more often than every this many seconds"))
    min_steps_per_iteration: int = field(
        default=5000, metadata=_h("report a result only after at least this many env steps"))

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.exploration_epsilon <= 1:
            raise ConfigError("config key 'exploration_epsilon' must be in [0, 1]")


def worker_epsilon(i: int, n: int, eps: float = 0.4, alpha: float = 7.0) -> float:
    """Ape-X's per-actor exploration: ``eps ** (1 + alpha * i / (n - 1))`` for actor ``i`` of
    ``n`` (``eps`` for a single actor)."""
    return eps if n <= 1 else eps ** (1 + alpha * i / (n - 1))


class ApexWorker(RolloutWorker):
    """A rollout worker whose DQN policy explores with fixed Ape-X epsilons, one per env (or one
    for all its envs), set from its index: a restarted worker explores as its predecessor."""

    def __init__(self, *, num_workers: int, exploration_epsilon: float,
                 exploration_alpha: float, exploration_per: str = "env", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.worker_index > 0:
            w = self.worker_index - 1
            if exploration_per == "env":
                n = num_workers * self.num_envs
                eps = [worker_epsilon(w * self.num_envs + j, n, exploration_epsilon,
                                      exploration_alpha) for j in range(self.num_envs)]
                self.policy.fixed_epsilon = np.asarray(eps)
            else:
                self.policy.fixed_epsilon = worker_epsilon(w, num_workers, exploration_epsilon,
                                                           exploration_alpha)

    def epsilon(self) -> float | list[float]:
        eps = self.policy.epsilon
        return eps.tolist() if isinstance(eps, np.ndarray) else eps


def make_workers(config: Config, runtime: Any) -> WorkerSet:
    cfg = policy_config(config)

    def factory(obs_space: Any, action_space: Any) -> DQNPolicy:
        return DQNPolicy(obs_space, action_space, cfg)

    kwargs = worker_kwargs(config, factory)
    kwargs.update(num_workers=config.num_workers, exploration_epsilon=config.exploration_epsilon,
                  exploration_alpha=config.exploration_alpha,
                  exploration_per=config.exploration_per)
    return WorkerSet(runtime, config.num_workers, kwargs,
                     restart_failed=config.restart_failed_workers, worker_cls=ApexWorker,
                     output=dataset_output(config))


def SyncWeightsToSource(workers: WorkerSet, max_delay: int) -> SyncWeights:
    """Send the learner's weights to the worker a batch came from once it has sampled
    ``max_delay`` steps since its last update (Ape-X's periodic parameter fetch)."""
    return SyncWeights(workers, to="source", every_steps=max_delay,
                       name=f"SyncWeightsToSource(every {max_delay} steps)")


def learn_on_replayed(policy: DQNPolicy):
    """The learner thread's function: ``(shard, batch) -> (shard, (td_batch, stats))``; only
    the row indexes and TD errors travel back (for the priorities)."""

    def learn(item: tuple[ActorHandle, SampleBatch]) -> tuple[ActorHandle, Any]:
        shard, batch = item
        stats = policy.learn_on_batch(batch)
        td = SampleBatch({"batch_indexes": batch["batch_indexes"], TD_ERROR: batch[TD_ERROR]})
        return shard, (td, stats)

    return learn


class RecordLearnerStep(Operator):
    """Count what the learner thread trained and keep its latest stats and load figures."""

    def __init__(self, learner: LearnerThread) -> None:
        self.learner = learner

    def __call__(self, item: Any) -> Any:
        _, (td, stats) = item
        metrics = self.metrics
        metrics.counters["env_steps_trained"] += td.count
        metrics.counters["num_grad_updates"] += stats.get("num_grad_updates", 1)
        metrics.info["learner"] = stats
        metrics.info["learner_queue_size"] = self.learner.inqueue.qsize()
        metrics.info["learner_utilization"] = self.learner.utilization
        return item


class ApexPlan(Plan):
    """Ape-X's plan: its results, the learner thread and the pool of replay shards it owns."""

    def __init__(self, results: LocalIterator[dict[str, Any]], learner: LearnerThread,
                 shards: ActorPool) -> None:
        super().__init__(results, [learner])
        self.learner = learner
        self.shards = shards

    @property
    def replay_shards(self) -> list[ActorHandle]:
        return list(self.shards.actors)

    def stop(self) -> None:
        """Stop the learner thread, then the replay shards."""
        try:
            super().stop()
        finally:
            self.shards.stop()


def apex_plan(workers: WorkerSet, config: Any,
              after_update: Sequence[Operator] = ()) -> ApexPlan:
    """The Ape-X dataflow of the module docstring for any learner whose policy's
    ``learn_on_batch`` writes ``td_error`` into the batch (Ape-X DQN, Ape-X DDPG).
    ``config`` has :class:`ApexFields` and the replay fields; ``after_update`` are operators
    run on each ``(shard, (td_batch, stats))`` after the priority update (DQN: its periodic
    target copy; DDPG's learner moves its targets itself)."""
    policy = workers.local_worker().policy
    shards = make_replay_shards(workers.runtime, config)
    learner = LearnerThread(learn_on_replayed(policy), inqueue_size=config.learner_queue_size,
                            name="apex-learner")

    rollouts = ParallelRollouts(workers, mode="async", num_async=config.num_async_rollouts)
    if config.training_intensity is not None:
        rollouts = rollouts.for_each(ThrottleSampling(config.training_intensity,
                                                      config.learning_starts))
    store_op = (rollouts
                .for_each(StoreToReplayBuffer(actors=shards))
                .for_each(SyncWeightsToSource(workers, config.max_weight_sync_delay)))
    replay_op = (Replay(actors=shards, num_async=config.num_async_replay,
                        learning_starts=config.learning_starts)
                 .zip_with_source_actor()
                 .for_each(Enqueue(learner.inqueue)))
    update_op = (Dequeue(learner.outqueue, check=learner)
                 .for_each(RecordLearnerStep(learner))
                 .for_each(UpdatePriorities()))
    for op in after_update:
        update_op = update_op.for_each(op)
    train_op = Concurrently([store_op, replay_op, update_op], mode="async", output_indexes=[2])
    results = StandardMetricsReporting(train_op, workers,
                                       min_time_s=config.min_time_s_per_iteration,
                                       min_steps=config.min_steps_per_iteration)
    return ApexPlan(results, learner, shards)


def plan(workers: WorkerSet, config: Config) -> ApexPlan:
    policy = workers.local_worker().policy
    return apex_plan(workers, config, [UpdateTargetNetwork(
        policy.update_target, config.target_network_update_freq, by_steps_trained=True)])


def make_replay_shards(runtime: Any, config: Any) -> ActorPool:
    """``num_replay_shards`` ReplayActors, each with an equal part of the capacity. A dead
    shard is replaced by an empty one (``restart_failed_workers``, the one failure policy of
    every actor kind) or is an error naming it."""
    n = config.num_replay_shards
    make_buffer(config, capacity=1)  # validates the replay settings before starting actors

    def make(i: int, restarts: int) -> ActorHandle:
        return runtime.create_actor(
            ReplayActor, capacity=max(config.buffer_size // n, config.train_batch_size),
            batch_size=config.train_batch_size, prioritized=config.prioritized_replay,
            alpha=config.prioritized_replay_alpha, beta=config.prioritized_replay_beta,
            learning_starts=max(config.learning_starts // n, config.train_batch_size) // 2,
            seed=config.seed + 7919 * i + RESTART_SEED_STRIDE * restarts,
            # Ape-X DDPG's config has no replay_frame_dedup: its observations are vectors
            frame_dedup=getattr(config, "replay_frame_dedup", "auto"),
            name=f"ReplayActor-{i}")

    return ActorPool(runtime, n, make, restart_failed=config.restart_failed_workers,
                     ready_method=None, kind="replay shard")


@register_algorithm("apex")
class ApeX(AlgorithmBuilder):
    """Distributed prioritized experience replay (Ape-X DQN)."""

    Config = Config
    worker_options = {"include_next_obs": True}

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return make_workers(config, runtime)

    def make_plan(self, workers: WorkerSet, config: Config) -> ApexPlan:
        return plan(workers, config)

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        """The replay shards restart empty, so the count that gates replay restarts at 0."""
        plan.metrics.counters[ROWS_ADDED] = 0
