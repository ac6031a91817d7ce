"""IMPALA: importance-weighted actor-learner architecture with V-trace (Espeholt et al. 2018,
"IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner Architectures",
ICML, arXiv:1802.01561).

Workers sample without waiting for the learner; a learner thread in the driver trains on whatever
arrives, correcting for the lag between the weights that sampled a batch and its own with V-trace
(:mod:`rldataflow.algorithms.vtrace`). V-trace runs on the learner with its *current* value
network, over whole trajectories: ``V(x_s)`` of every row, and ``V(next obs)`` where a fragment
was cut or an episode truncated (the workers ship ``next_obs``); no bootstrap after a
termination. The loss (section 4.2)::

    loss = -mean(A_s * log pi(a_s|x_s)) + vf_loss_coeff * 0.5 * mean((V(x_s) - v_s)^2)
           - entropy_coeff * mean(H[pi(.|x_s)])

Dataflow (``plan``; ``build_flow`` is the training sub-flow APPO extends)::

    async rollouts (num_async per worker) -> NoteSource -> [MixInReplay] -> ConcatBatches
      -> Enqueue(learner.inqueue) -> BroadcastLearnerWeights(sources)      (branch 0)
    Dequeue(learner.outqueue) -> RecordLearnerResult                        (branch 1)
    Concurrently([branch 0, branch 1], mode="async", output_indexes=[1]) -> report

With ``num_aggregation_workers > 0`` the rollouts come from aggregator actors that each own a
group of workers and concatenate their batches (:mod:`rldataflow.ops.aggregation`). With
``learner_thread=False`` learning runs in the driver in-line (``... -> ConcatBatches ->
LearnInline -> BroadcastLearnerWeights -> RecordLearnerResult``): slower, but on the inline
runtime bit-reproducible. With the learner thread, which batch meets which weights depends on
thread timing, so runs are *not* reproducible, on any runtime.

Policy lag (result keys ``policy_lag_mean`` / ``policy_lag_max``, over the last 100 train
batches): for each row, the number of learner updates (train batches learned) between the
broadcast of the weights that sampled it (``weights_version`` column, stamped by the worker) and
the update that learns on it. ``policy_sgd_lag_mean`` / ``_max`` count optimizer steps instead
(``num_epochs`` x minibatches per update). Replayed rows (``replay_proportion > 0``) count with
their age.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from rldataflow.algorithms.base import AlgorithmBuilder, dataset_output
from rldataflow.algorithms.registry import register_algorithm
from rldataflow.algorithms.vtrace import next_values_from, trajectory_ends, vtrace
from rldataflow.data import SampleBatch as SB
from rldataflow.flow import Concurrently, Dequeue, Enqueue, LocalIterator, Operator, Plan
from rldataflow.flow.provenance import source_actors
from rldataflow.ops import (
    ConcatBatches,
    LearnerThread,
    ParallelRollouts,
    StandardMetricsReporting,
)
from rldataflow.ops.aggregation import AggregatorSet
from rldataflow.ops.mixin_replay import MixInReplay
from rldataflow.ops.weights import SyncWeights
from rldataflow.policies import TorchPolicy
from rldataflow.policies.losses import actor_critic_loss
from rldataflow.policies.recurrent import (
    SEQ_LENS,
    SEQ_STARTS,
    STATE_IN_C,
    STATE_IN_H,
    Sequences,
    sequence_starts,
)
from rldataflow.runtime import ActorHandle
from rldataflow.utils.config import AlgorithmConfig, ConfigError, describe_field
from rldataflow.workers import WorkerSet

#: Column the learner adds: V-trace's clipped importance weights min(rho_bar, pi/mu).
CLIPPED_RHOS = "vtrace_clipped_rhos"


_h = describe_field  # help text and numeric bounds of a config field


@dataclass
class Config(AlgorithmConfig):
    """IMPALA settings; the defaults reach a CartPole-v1 mean return of 400 (see the learning
    tests for the step counts)."""

    lr: float = field(default=5e-4, metadata=_h("learning rate"))
    gamma: float = field(default=0.99, metadata=_h("discount factor"))
    optimizer: Literal["adam", "rmsprop"] = field(default="adam", metadata=_h("optimizer"))
    train_batch_size: int = field(
        default=512, metadata=_h("rows per learner step (sample batches are concatenated)"))
    num_envs_per_worker: int = field(default=8, metadata=_h("envs stepped by each worker"))
    rollout_fragment_length: int = field(
        default=32, metadata=_h("steps per env per sample (the n of the n-step V-trace)"))
    num_async: int = field(
        default=2, metadata=_h("sample requests in flight per worker (more: busier workers, "
                               "more policy lag)"))
    num_epochs: int = field(
        default=3, metadata=_h("passes over each train batch (V-trace recomputed per pass)"))
    minibatch_size: int | None = field(
        default=256, metadata=_h("rows per SGD step within a pass (None: the whole batch)"))
    vtrace_clip_rho_threshold: float | None = field(
        default=1.0, metadata=_h("rho-bar: clip of the importance weights in the targets", gt=0))
    vtrace_clip_c_threshold: float | None = field(
        default=1.0, metadata=_h("c-bar: clip of the trace-cutting weights", gt=0))
    vtrace_clip_pg_rho_threshold: float | None = field(
        default=1.0, metadata=_h("rho-bar of the policy-gradient importance weights", gt=0))
    vtrace_lambda: float = field(
        default=1.0, metadata=_h("lambda multiplying the traces c_s (1.0: the paper's V-trace)"))
    vf_loss_coeff: float = field(default=0.5, metadata=_h("weight of the value loss", ge=0))
    entropy_coeff: float = field(default=0.01, metadata=_h("weight of the entropy bonus", ge=0))
    grad_clip: float | None = field(default=0.5, metadata=_h("max global gradient norm", gt=0))
    vf_share_layers: bool = field(default=False, metadata=_h("one trunk for policy and value"))
    action_mode: Literal["clip", "squash"] = field(
        default="clip", metadata=_h("Box actions: clip a Gaussian sample, or tanh-squash it"))
    init_log_std: float = field(default=0.0, metadata=_h("initial log std of Box actions"))
    reward_scale: float = field(
        default=1.0, metadata=_h("rewards are multiplied by this on the learner", gt=0))
    learner_thread: bool = field(
        default=True, metadata=_h("learn in a driver thread, overlapping sampling (False: "
                                  "learn in-line, deterministic on the inline runtime)"))
    learner_queue_size: int = field(
        default=4, metadata=_h("train batches waiting for the learner at most (back-pressure "
                               "on the workers beyond that)"))
    broadcast_interval: int = field(
        default=1, metadata=_h("learner updates between two weight snapshots sent to workers"))
    replay_proportion: float = field(
        default=0.0, metadata=_h("replayed sample batches per new one (0: no replay)"))
    replay_buffer_num_slots: int = field(
        default=100, metadata=_h("sample batches kept for replay at most"))
    num_aggregation_workers: int = field(
        default=0, metadata=_h("aggregator actors between workers and learner (0: off)"))
    use_lstm: bool = field(
        default=False, metadata=_h("encoder -> LSTM -> heads (memory); V-trace then runs over "
                                   "sequences; see docs/recurrent.md"))
    lstm_cell_size: int = field(default=64, metadata=_h("LSTM cell size (use_lstm)", ge=1))
    max_seq_len: int = field(
        default=20, metadata=_h("use_lstm: rows per training sequence at most; minibatches "
                                "hold minibatch_size // max_seq_len sequences", ge=1))

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size is not None and not 1 <= self.minibatch_size:
            raise ConfigError("config key 'minibatch_size' must be >= 1 or None")
        for key in ("num_async", "num_epochs", "learner_queue_size", "broadcast_interval",
                    "replay_buffer_num_slots"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1 (got {getattr(self, key)})")
        if self.replay_proportion < 0:
            raise ConfigError("config key 'replay_proportion' must be >= 0")
        if not 0 <= self.vtrace_lambda <= 1:
            raise ConfigError("config key 'vtrace_lambda' must be in [0, 1]")
        if self.num_aggregation_workers < 0:
            raise ConfigError("config key 'num_aggregation_workers' must be >= 0")
        if self.num_aggregation_workers > self.num_workers:
            raise ConfigError(f"config key 'num_aggregation_workers' "
                              f"({self.num_aggregation_workers}) must be <= num_workers "
                              f"({self.num_workers}): each aggregator needs a worker")


# ---------------------------------------------------------------------------------------------
# policy and loss
# ---------------------------------------------------------------------------------------------
def stamp_weights_version(policy: TorchPolicy, batch: SB) -> SB:
    """Worker-side postprocessing: a ``weights_version`` column (the version that sampled each
    row), so the policy lag survives concatenation. V-trace itself runs on the learner."""
    batch[SB.WEIGHTS_VERSION] = np.full(batch.count, policy.weights_version, dtype=np.int64)
    return batch


def impala_loss(policy: TorchPolicy, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Policy gradient with V-trace advantages + value regression to ``v_s`` - entropy bonus.

    ``advantages`` already hold ``rho^pg_s * (r_s + gamma v_{s+1} - V(x_s))`` and
    ``value_targets`` the ``v_s`` (both from :meth:`VTraceLearner.prepare`), so this is the
    plain actor-critic loss.
    """
    return actor_critic_loss(policy, batch)


def policy_config(config: Config) -> dict[str, Any]:
    return dict(hiddens=config.hiddens, activation=config.activation, lr=config.lr,
                gamma=config.gamma, grad_clip=config.grad_clip, optimizer=config.optimizer,
                vf_share_layers=config.vf_share_layers, action_mode=config.action_mode,
                init_log_std=config.init_log_std, vf_loss_coeff=config.vf_loss_coeff,
                entropy_coeff=config.entropy_coeff, use_lstm=config.use_lstm,
                lstm_cell_size=config.lstm_cell_size, max_seq_len=config.max_seq_len)


def policy_factory(config: Config, policy_cls: type = TorchPolicy, loss_fn: Any = impala_loss,
                   **extra_config: Any):
    cfg = {**policy_config(config), **extra_config}

    def make(obs_space, action_space) -> TorchPolicy:
        return policy_cls(obs_space, action_space, cfg, loss_fn=loss_fn,
                          postprocess_fn=stamp_weights_version, seed=config.seed)

    return make


def make_workers(config: Config, runtime: Any, factory: Any = None) -> WorkerSet:
    """Rollout workers that ship ``next_obs`` (for the learner's bootstrap values); with
    aggregation the remote workers belong to the aggregators instead (built by the plan)."""
    kwargs = dict(env=config.env, env_config=config.env_config,
                  num_envs=config.num_envs_per_worker,
                  policy_factory=factory or policy_factory(config),
                  rollout_fragment_length=config.rollout_fragment_length, seed=config.seed,
                  include_next_obs=True)
    remote = 0 if config.num_aggregation_workers else config.num_workers
    return WorkerSet(runtime, remote, kwargs, restart_failed=config.restart_failed_workers,
                     output=dataset_output(config))


# ---------------------------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------------------------
class VTraceLearner:
    """Learns on train batches: V-trace with the current networks, then SGD.

    ``learn(batch)`` is what the learner thread runs for each batch (or the driver, with
    ``learner_thread=False``); it returns a small result dict (rows, learner stats, policy lag,
    time). After every ``broadcast_interval`` updates it publishes a weights snapshot
    (``snapshot = (weights, version)``) for the driver to send to workers, so the driver never
    reads weights while they change.
    """

    #: columns SGD needs (the rest stays out of the minibatch shuffling)
    TRAIN_COLUMNS = (SB.OBS, SB.ACTIONS, SB.ACTION_LOGP, SB.ACTION_DIST_INPUTS, SB.ADVANTAGES,
                     SB.VALUE_TARGETS)

    def __init__(self, policy: TorchPolicy, config: Config) -> None:
        self.policy = policy
        self.config = config
        self.num_updates = 0
        self.snapshot: tuple[Any, int] = (None, -1)
        self._versions: list[int] = []
        self._updates_at: list[int] = []
        self.publish()
        self.thread: LearnerThread | None = None
        if config.learner_thread:  # started with the plan that owns this learner
            self.thread = LearnerThread(self.learn, inqueue_size=config.learner_queue_size,
                                        outqueue_size=16, name="impala-learner")

    # -- weights ------------------------------------------------------------------------------
    def publish(self) -> None:
        """Take a weights snapshot for broadcasting (called by the learner itself)."""
        with self.policy.lock:
            version = self.policy.weights_version
            self.snapshot = (self.policy.get_weights(), version)
            # Which learner update each broadcast version came after (for the lag in updates).
            if self._versions and self._versions[-1] >= version:
                self._versions.clear()  # restored to an older version: start over
                self._updates_at.clear()
            self._versions.append(version)
            self._updates_at.append(self.num_updates)
            if len(self._versions) > 4096:
                del self._versions[:2048], self._updates_at[:2048]

    def lag_in_updates(self, versions: np.ndarray) -> np.ndarray:
        """Learner updates (train batches) since each weights version was broadcast."""
        known = np.asarray(self._versions)
        at = np.asarray(self._updates_at)
        pos = np.searchsorted(known, versions, side="right") - 1
        return self.num_updates - at[np.maximum(pos, 0)]

    @property
    def utilization(self) -> float:
        return self.thread.utilization if self.thread is not None else 0.0

    # -- V-trace --------------------------------------------------------------------------------
    def _target_logp(self, obs: torch.Tensor, actions: torch.Tensor, dist_inputs: torch.Tensor,
                     batch: SB) -> torch.Tensor:
        """log pi(a|x) of the policy V-trace evaluates (IMPALA: the current one)."""
        return self.policy.action_dist(dist_inputs).logp(actions)

    def model_rows(self, model: torch.nn.Module, batch: SB, obs: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dist_inputs, values)`` of every row of ``batch`` by ``model`` (the policy's or
        a target network): a feed-forward pass, or for a recurrent policy an unroll of the
        batch's sequences (its ``seq_starts`` column, set by :meth:`prepare`) from their
        stored start states."""
        if not self.policy.is_recurrent:
            out = model(obs)
            return out if isinstance(out, tuple) else (out, None)
        dist_inputs, values, _ = self._unroll(model, batch, obs)
        return dist_inputs, values

    def _unroll(self, model: torch.nn.Module, batch: SB, obs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Per-row outputs of a recurrent model, and the LSTM state after each sequence."""
        seqs = Sequences(batch[SEQ_STARTS])
        mb = seqs.pad({SB.OBS: obs, STATE_IN_H: torch.from_numpy(batch[STATE_IN_H]),
                       STATE_IN_C: torch.from_numpy(batch[STATE_IN_C])})
        s = seqs.count
        di, values, final = model.forward_seq(mb[SB.OBS].reshape(s, seqs.max_len, *obs.shape[1:]),
                                              mb[STATE_IN_H], mb[STATE_IN_C], mb[SEQ_LENS])
        valid = torch.from_numpy(seqs.mask.reshape(-1))
        # padded slots are in sequence order, so the valid ones are the rows in batch order
        return (di.reshape(-1, di.shape[-1])[valid], values.reshape(-1)[valid], final)

    def prepare(self, batch: SB) -> SB:
        """Add ``advantages`` (V-trace policy-gradient advantages), ``value_targets``
        (``v_s``) and :data:`CLIPPED_RHOS`, computed with the current networks. In place;
        also returned."""
        policy, cfg = self.policy, self.config
        if SB.NEXT_OBS not in batch:
            raise KeyError("V-trace on the learner needs the 'next_obs' column (rollout workers "
                           "built with include_next_obs=True; see impala.make_workers)")
        term = np.asarray(batch[SB.TERMINATEDS], dtype=bool)
        ends = trajectory_ends(batch)
        boot_rows = np.flatnonzero(ends & ~term)
        with torch.no_grad():
            obs = policy._obs_tensor(batch[SB.OBS])
            actions = torch.from_numpy(np.require(batch[SB.ACTIONS], requirements=["C", "W"]))
            if policy.is_recurrent:
                # sequences end where trajectories do (the same breaks), so a bootstrap row is
                # the last of its sequence and V(next obs) goes on from that sequence's state
                starts = sequence_starts(batch, policy.max_seq_len)
                batch[SEQ_STARTS] = starts
                dist_inputs, values, (hn, cn) = self._unroll(policy.model, batch, obs)
                if len(boot_rows):
                    seq_of = np.cumsum(starts)[boot_rows] - 1
                    _, boot, _ = policy.model.forward_step(
                        policy._obs_tensor(batch[SB.NEXT_OBS][boot_rows]), hn[seq_of],
                        cn[seq_of])
                else:
                    boot = torch.zeros(0)
            else:
                dist_inputs, values = policy.model(obs)
                if len(boot_rows):
                    boot = policy.model.value(policy._obs_tensor(batch[SB.NEXT_OBS][boot_rows]))
                else:
                    boot = torch.zeros(0)
            target_logp = self._target_logp(obs, actions, dist_inputs, batch)
        values_np = values.numpy().astype(np.float64)
        next_values = next_values_from(values_np, ends, term, boot_rows,
                                       boot.numpy().astype(np.float64))
        log_rhos = target_logp.numpy().astype(np.float64) - np.asarray(
            batch[SB.ACTION_LOGP], dtype=np.float64)
        discounts = np.where(term, 0.0, cfg.gamma)
        out = vtrace(log_rhos, discounts,
                     np.asarray(batch[SB.REWARDS], np.float64) * cfg.reward_scale,
                     values_np, next_values, ends,
                     clip_rho_threshold=cfg.vtrace_clip_rho_threshold,
                     clip_c_threshold=cfg.vtrace_clip_c_threshold,
                     clip_pg_rho_threshold=cfg.vtrace_clip_pg_rho_threshold,
                     trace_lambda=cfg.vtrace_lambda)
        batch[SB.ADVANTAGES] = out.pg_advantages
        batch[SB.VALUE_TARGETS] = out.vs
        batch[CLIPPED_RHOS] = out.clipped_rhos
        return batch

    # -- hooks for subclasses (APPO) -------------------------------------------------------------
    def before_update(self) -> None:
        """Runs under the policy lock before each train batch."""

    def after_update(self, stats: dict[str, float]) -> None:
        """Runs under the policy lock after each train batch, with its learner stats."""

    def train_columns(self) -> tuple[str, ...]:
        if self.policy.is_recurrent:  # SGD cuts the sequences V-trace ran over
            return (*self.TRAIN_COLUMNS, STATE_IN_H, STATE_IN_C, SEQ_STARTS)
        return self.TRAIN_COLUMNS

    # -- one learner step ---------------------------------------------------------------------
    def learn(self, batch: SB) -> dict[str, Any]:
        start = time.perf_counter()
        policy, cfg = self.policy, self.config
        batch = SB(batch)  # new columns go on a shallow copy: a replay buffer may hold `batch`
        with policy.lock:
            self.before_update()
            if SB.WEIGHTS_VERSION in batch:
                sampled_by = np.asarray(batch[SB.WEIGHTS_VERSION], dtype=np.int64)
            else:
                sampled_by = np.full(1, int(batch.info.get("weights_version",
                                                           policy.weights_version)))
            sgd_lags = policy.weights_version - sampled_by
            lags = self.lag_in_updates(sampled_by)
            grad_updates = 0
            stats: dict[str, float] = {}
            for _ in range(cfg.num_epochs):
                self.prepare(batch)
                slim = SB({k: batch[k] for k in self.train_columns()})
                stats = policy.learn_on_batch(slim, num_epochs=1,
                                              minibatch_size=cfg.minibatch_size)
                grad_updates += int(stats.get("num_grad_updates", 1))
            stats["vtrace_mean_rho"] = float(np.mean(batch[CLIPPED_RHOS]))
            stats["num_grad_updates"] = grad_updates
            self.num_updates += 1
            self.after_update(stats)
            if self.num_updates - self._updates_at[-1] >= cfg.broadcast_interval:
                self.publish()
        return {"count": batch.count, "stats": stats, "num_grad_updates": grad_updates,
                "lag_mean": float(lags.mean()), "lag_max": int(lags.max()),
                "sgd_lag_mean": float(sgd_lags.mean()), "sgd_lag_max": int(sgd_lags.max()),
                "learn_time_s": time.perf_counter() - start}

    def start(self) -> None:
        """Start the learner thread (if there is one and it is not running yet)."""
        if self.thread is not None and self.thread.ident is None:
            self.thread.start()

    @property
    def name(self) -> str:
        return self.thread.name if self.thread is not None else "learner"

    @property
    def error(self) -> BaseException | None:
        """What ended the learner thread, if it failed."""
        return self.thread.error if self.thread is not None else None

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()


# ---------------------------------------------------------------------------------------------
# operators of the plan
# ---------------------------------------------------------------------------------------------
class NoteSource(Operator):
    """Remember the actors each batch came from (until the next broadcast sends them weights).

    Pairs with :class:`BroadcastLearnerWeights` further down the same branch, so that *every*
    worker whose batch went into a concatenated train batch gets the new weights, not only the
    last one. Example::

        sources = NoteSource()
        (rollouts.for_each(sources).for_each(ConcatBatches(512))
                 .for_each(Enqueue(learner.thread.inqueue))
                 .for_each(BroadcastLearnerWeights(workers.runtime, learner, sources)))
    """

    op_name = "NoteSource"

    def __init__(self) -> None:
        self.pending: dict[int, ActorHandle] = {}

    def __call__(self, batch: Any) -> Any:
        for actor in source_actors(batch):
            self.pending[actor.actor_id] = actor
        return batch


class BroadcastLearnerWeights(SyncWeights):
    """Send the learner's newest weights snapshot to the actors noted since the last call.

    An actor gets a snapshot only once (a newer one appears at most every ``broadcast_interval``
    learner updates). Weights are serialized once for all targets. Passes items through.
    Example: see :class:`NoteSource`.
    """

    def __init__(self, runtime: Any, learner: VTraceLearner, sources: NoteSource) -> None:
        super().__init__(to="source", snapshot=lambda: learner.snapshot, runtime=runtime,
                         counter="num_weight_broadcasts", timer="broadcast_weights",
                         name=f"BroadcastLearnerWeights(sources, "
                              f"interval={learner.config.broadcast_interval})")
        self.learner = learner
        self.sources = sources

    def targets(self, item: Any) -> list[ActorHandle]:
        pending = self.sources.pending
        targets = list(pending.values())
        pending.clear()
        return targets


class LearnInline(Operator):
    """``learner.learn(batch)`` in the driver (``learner_thread=False``). Example::

        batches.for_each(LearnInline(learner)).for_each(RecordLearnerResult(learner))
    """

    op_name = "LearnInline"

    def __init__(self, learner: VTraceLearner) -> None:
        self.learner = learner

    def __call__(self, batch: SB) -> dict[str, Any]:
        return self.learner.learn(batch)


class RecordLearnerResult(Operator):
    """Count what the learner trained on; keep its stats, the policy lag and its utilization.

    ``metrics.info`` gets ``policy_lag_mean`` / ``policy_lag_max`` and ``policy_sgd_lag_mean`` /
    ``policy_sgd_lag_max`` (over the last 100 train batches), ``learner_utilization`` (the
    learner thread's busy fraction of the wall time over its last 100 results) and
    ``learner_queue_size``, which the result dict shows. Example::

        Dequeue(learner.thread.outqueue, check=learner.thread)
            .for_each(RecordLearnerResult(learner))
    """

    op_name = "RecordLearnerResult"

    def __init__(self, learner: VTraceLearner) -> None:
        self.learner = learner
        self._busy: deque[tuple[float, float]] = deque(maxlen=100)

    def __call__(self, out: dict[str, Any]) -> dict[str, Any]:
        m = self.metrics
        m.counters["env_steps_trained"] += out["count"]
        m.counters["num_grad_updates"] += out["num_grad_updates"]
        m.counters["num_learner_steps"] += 1
        m.timers["learn"].push(out["learn_time_s"], out["count"])
        m.info["learner"] = out["stats"]
        for key in ("lag_mean", "lag_max", "sgd_lag_mean", "sgd_lag_max"):
            m.record(f"policy_{key}", out[key])
        m.info["policy_lag_mean"] = float(np.mean(m.window("policy_lag_mean")))
        m.info["policy_lag_max"] = int(np.max(m.window("policy_lag_max")))
        m.info["policy_sgd_lag_mean"] = float(np.mean(m.window("policy_sgd_lag_mean")))
        m.info["policy_sgd_lag_max"] = int(np.max(m.window("policy_sgd_lag_max")))
        thread = self.learner.thread
        if thread is not None:
            # busy fraction of the wall time over (up to) the last 100 learner steps, between
            # marks the thread takes at step ends (a reading taken here could fall mid-step)
            now, busy = thread.busy_mark
            self._busy.append((now, busy))
            then, busy_then = self._busy[0]
            m.info["learner_utilization"] = (
                (busy - busy_then) / (now - then) if now > then else thread.utilization)
            m.info["learner_queue_size"] = thread.inqueue.qsize()
        return out


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
class ImpalaPlan(Plan):
    """IMPALA's (and APPO's) plan: its results, and the learner and aggregators it owns."""

    def __init__(self, results: LocalIterator[dict[str, Any]], learner: VTraceLearner,
                 aggregators: AggregatorSet | None = None) -> None:
        super().__init__(results, [learner] + ([aggregators] if aggregators else []))
        self.learner = learner
        self.aggregators = aggregators

    @staticmethod
    @contextlib.contextmanager
    def building(aggregators: AggregatorSet | None) -> Iterator[None]:
        """Stop the aggregators (started actors) if the rest of the plan fails to build."""
        try:
            yield
        except BaseException:
            if aggregators is not None:
                aggregators.stop()
            raise


def make_learner(workers: WorkerSet, config: Config,
                 learner_cls: type[VTraceLearner] = VTraceLearner) -> VTraceLearner:
    """The learner for the local worker's policy (its thread started if configured)."""
    return learner_cls(workers.local_worker().policy, config)


def experience(workers: WorkerSet, config: Config, learner: VTraceLearner
               ) -> tuple[LocalIterator[SB], AggregatorSet | None]:
    """The stream of sample batches (from workers, or train batches from aggregators)."""
    if config.num_aggregation_workers > 0:
        aggs = AggregatorSet(
            workers.runtime, config.num_aggregation_workers, workers.worker_cls,
            workers.worker_kwargs, config.num_workers, config.num_async,
            config.train_batch_size, weights_fn=lambda: learner.snapshot,
            runtime_options=config.runtime_options,
            restart_failed=config.restart_failed_workers, output=workers.output)
        return aggs.gather(num_async=1), aggs
    return ParallelRollouts(workers, mode="async", num_async=config.num_async), None


def build_flow(batches: LocalIterator[SB], workers: WorkerSet, config: Config,
               learner: VTraceLearner) -> LocalIterator[dict[str, Any]]:
    """IMPALA's training sub-flow: sample batches in, learner results out (one per train
    batch). Every worker that sent a new batch gets the learner's next weights snapshot."""
    sources = NoteSource()
    batches = batches.for_each(sources)
    if config.replay_proportion > 0:
        batches = batches.for_each(MixInReplay(config.replay_proportion,
                                               config.replay_buffer_num_slots, seed=config.seed))
    batches = batches.for_each(ConcatBatches(config.train_batch_size))
    broadcast = BroadcastLearnerWeights(workers.runtime, learner, sources)
    if learner.thread is None:
        return (batches.for_each(LearnInline(learner))
                .for_each(broadcast)
                .for_each(RecordLearnerResult(learner)))
    enqueue_op = batches.for_each(Enqueue(learner.thread.inqueue)).for_each(broadcast)
    dequeue_op = (Dequeue(learner.thread.outqueue, check=learner.thread)
                  .for_each(RecordLearnerResult(learner)))
    return Concurrently([enqueue_op, dequeue_op], mode="async", output_indexes=[1])


def report(train_op: LocalIterator[Any], workers: WorkerSet, config: Config
           ) -> LocalIterator[dict[str, Any]]:
    return StandardMetricsReporting(train_op, workers,
                                    min_time_s=config.min_time_s_per_iteration,
                                    min_steps=config.min_steps_per_iteration)


def plan(workers: WorkerSet, config: Config) -> ImpalaPlan:
    learner = make_learner(workers, config)
    batches, aggregators = experience(workers, config, learner)
    with ImpalaPlan.building(aggregators):
        train_op = build_flow(batches, workers, config, learner)
        return ImpalaPlan(report(train_op, workers, config), learner, aggregators)


def parts_of(algo: Any) -> ImpalaPlan:
    """The plan (learner, aggregators) of a built IMPALA/APPO algorithm."""
    return algo.plan


# ---------------------------------------------------------------------------------------------
# the algorithm
# ---------------------------------------------------------------------------------------------
@register_algorithm("impala")
class IMPALA(AlgorithmBuilder):
    """Importance-weighted actor-learner architecture (V-trace on a learner thread)."""

    Config = Config

    def policy_factory(self, config: Config) -> Any:
        return policy_factory(config)

    def make_workers(self, config: Config, runtime: Any) -> WorkerSet:
        return make_workers(config, runtime, self.policy_factory(config))

    def make_plan(self, workers: WorkerSet, config: Config) -> ImpalaPlan:
        return plan(workers, config)

    def extra_state(self, plan: Plan, workers: WorkerSet, config: Config) -> dict[str, Any]:
        assert isinstance(plan, ImpalaPlan)
        return {"num_learner_updates": plan.learner.num_updates}

    def restore_extra_state(self, plan: Plan, workers: WorkerSet, config: Config,
                            state: Mapping[str, Any]) -> None:
        assert isinstance(plan, ImpalaPlan)
        plan.learner.num_updates = int(state.get("num_learner_updates", 0))
        plan.learner.publish()  # restored weights: the snapshot workers get must be these
