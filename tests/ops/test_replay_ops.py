"""Replay ops: storing to a local buffer or to shard actors, replaying, priority updates reaching
the right rows of the right shard, waiting for learning_starts, and throttled sampling."""

from __future__ import annotations

import numpy as np
import pytest

from rldataflow.data import LinearSchedule, PrioritizedReplayBuffer, ReplayBuffer, SampleBatch
from rldataflow.flow import NOT_READY, Concurrently, FlowError, Operator, from_local_iterable
from rldataflow.flow.provenance import source_actor
from rldataflow.ops import (
    Replay,
    ReplayActor,
    StoreToReplayBuffer,
    ThrottleSampling,
    UpdatePriorities,
)
from rldataflow.ops.replay import PRIORITY_EPS, ROWS_ADDED, ROWS_LOST, TD_ERROR


def rows(value: float, n: int = 10) -> SampleBatch:
    """A batch whose every row carries ``value`` (so a replayed row tells where it came from)."""
    return SampleBatch({"obs": np.full((n, 2), value, np.float32),
                        "rewards": np.full(n, value, np.float32)})


def batches(values, n: int = 10):
    return from_local_iterable([rows(v, n) for v in values], name="batches")


# -- ReplayActor ---------------------------------------------------------------------------------
def test_replay_actor_add_replay_update_stats(runtime):
    shard = runtime.create_actor(ReplayActor, 100, batch_size=8, alpha=0.6,
                                 learning_starts=15, seed=0)
    assert shard.call("add", rows(1.0)).result() == 10
    assert shard.call("replay").result() is None  # below learning_starts
    shard.call("add", rows(2.0))
    batch = shard.call("replay").result()
    assert batch.count == 8 and {"batch_indexes", "weights"} <= set(batch)
    td = np.arange(8, dtype=np.float32) - 4
    shard.call("update_priorities", batch["batch_indexes"], td).result()
    prios = shard.call("priorities").result()
    # last write wins for repeated rows; every other row keeps the initial priority 1.0
    expected = np.ones(20)
    for i, t in zip(batch["batch_indexes"], td, strict=True):
        expected[i] = (abs(t) + PRIORITY_EPS + 1e-6) ** 0.6
    np.testing.assert_allclose(prios, expected, rtol=1e-6)
    stats = shard.call("stats").result()
    assert stats["size"] == 20 and stats["num_added"] == 20 and stats["num_replayed"] == 8
    assert stats["num_priority_updates"] == 1


def test_uniform_replay_actor_has_no_weights_and_ignores_priorities(runtime):
    shard = runtime.create_actor(ReplayActor, 50, batch_size=4, prioritized=False, seed=0)
    shard.call("add", rows(3.0))
    batch = shard.call("replay").result()
    assert "weights" not in batch and batch.count == 4
    shard.call("update_priorities", batch["batch_indexes"], np.ones(4)).result()
    assert shard.call("priorities").result() is None


# -- local buffer ------------------------------------------------------------------------------
def test_store_and_replay_with_a_local_buffer_in_round_robin():
    buffer = PrioritizedReplayBuffer(1000, seed=0)
    store_op = batches(range(10)).for_each(StoreToReplayBuffer(local_buffer=buffer))
    replay_op = Replay(local_buffer=buffer, batch_size=4, learning_starts=30)
    seen = []
    replay_op = replay_op.for_each(lambda b: seen.append(len(buffer)) or b)
    out = Concurrently([store_op, replay_op], mode="round_robin", output_indexes=[1],
                       round_robin_weights=[1, 2])
    replayed = out.take(6)
    # the replay flow passed its turns until 3 batches (30 rows) were stored, then took 2
    # batches per stored one: it never blocked the store flow, and ran in a fixed order
    assert seen == [30, 30, 40, 40, 50, 50]
    assert all(b.count == 4 and "weights" in b for b in replayed)
    assert out.metrics.counters[ROWS_ADDED] == 50
    assert out.metrics.counters["replay_rows_sampled"] == 24


def test_local_replay_alone_below_learning_starts_is_a_clear_error():
    replay_op = Replay(local_buffer=ReplayBuffer(100), batch_size=4, learning_starts=10)
    with pytest.raises(FlowError, match="replay buffer has 0 < learning_starts=10"):
        next(replay_op)


def test_round_robin_of_inputs_that_all_pass_their_turn_is_a_clear_error():
    a = Replay(local_buffer=ReplayBuffer(100), batch_size=4, learning_starts=10)
    b = Replay(local_buffer=ReplayBuffer(100), batch_size=4, learning_starts=20)
    with pytest.raises(FlowError, match="cannot make progress.*learning_starts=10.*=20"):
        next(Concurrently([a, b], mode="round_robin"))


def test_local_replay_anneals_beta_with_env_steps_sampled():
    buffer = PrioritizedReplayBuffer(100, seed=0)
    buffer.add(rows(1.0, 20))
    buffer.update_priorities(np.arange(20), np.arange(1, 21, dtype=np.float64))
    replay_op = Replay(local_buffer=buffer, batch_size=64, beta=LinearSchedule(0.0, 1.0, 100))
    assert np.all(next(replay_op)["weights"] == 1.0)  # beta 0 at step 0
    replay_op.metrics.counters["env_steps_sampled"] = 100
    assert next(replay_op)["weights"].min() < 0.2  # beta 1: full correction


def test_update_priorities_on_a_local_buffer():
    buffer = PrioritizedReplayBuffer(100, alpha=1.0, seed=0, eps=0.0)
    buffer.add(rows(1.0, 10))
    batch = buffer.sample(4)
    batch[TD_ERROR] = np.array([-2.0, 0.0, 3.0, 0.5], np.float32)
    op = UpdatePriorities(local_buffer=buffer)
    it = from_local_iterable([(batch, {"loss": 1.0})]).for_each(op)
    assert next(it)[0] is batch  # passes (batch, stats) on
    expected = np.ones(10)
    for i, t in zip(batch["batch_indexes"], batch[TD_ERROR], strict=True):
        expected[i] = abs(t) + PRIORITY_EPS  # a zero TD error still gets a positive priority
    np.testing.assert_allclose(buffer.priorities(), expected, rtol=1e-6)
    assert it.metrics.counters["num_priority_updates"] == 1


def test_update_priorities_needs_td_errors():
    buffer = PrioritizedReplayBuffer(100, seed=0)
    buffer.add(rows(1.0))
    it = from_local_iterable([buffer.sample(2)]).for_each(UpdatePriorities(local_buffer=buffer))
    with pytest.raises(Exception, match="td_error"):
        next(it)


def test_store_and_replay_need_exactly_one_target():
    with pytest.raises(ValueError, match="exactly one"):
        StoreToReplayBuffer()
    with pytest.raises(ValueError, match="exactly one"):
        Replay(local_buffer=ReplayBuffer(10), actors=["x"])


# -- shards ----------------------------------------------------------------------------------
def make_shards(runtime, n=2, **kwargs):
    kwargs = {"batch_size": 16, "learning_starts": 1, "seed": 0, **kwargs}
    return [runtime.create_actor(ReplayActor, 1000, **kwargs) for _ in range(n)]


def test_store_spreads_batches_round_robin_over_shards(runtime):
    shards = make_shards(runtime, 3)
    store = batches([0, 1, 2, 0, 1, 2, 0]).for_each(StoreToReplayBuffer(actors=shards))
    assert len(store.take(7)) == 7
    sizes = [s.call("size").result() for s in shards]
    assert sizes == [30, 20, 20]
    # every row of shard k came from a batch with value k
    for k, shard in enumerate(shards):
        assert set(shard.call("replay").result()["rewards"].tolist()) == {float(k)}
    assert store.metrics.counters[ROWS_ADDED] == 70


def test_replay_from_shards_waits_for_learning_starts_then_updates_the_source_shard(runtime):
    shards = make_shards(runtime, 2, alpha=1.0)
    # shard 0 gets the 0-valued batches, shard 1 the 1-valued ones
    store_op = batches([0, 1] * 50).for_each(StoreToReplayBuffer(actors=shards))
    replay_op = (Replay(actors=shards, num_async=2, learning_starts=60)
                 .zip_with_source_actor())
    added_when_replayed = []

    def learn(item):
        shard, batch = item
        added_when_replayed.append(replay_op.metrics.counters[ROWS_ADDED])
        batch[TD_ERROR] = np.full(batch.count, 5.0 + shards.index(shard), np.float32)
        return shard, (batch, {})

    train_op = replay_op.for_each(learn).for_each(UpdatePriorities())
    plan = Concurrently([store_op, train_op], mode="async", output_indexes=[1])
    learned = plan.take(8)
    while len({id(s) for s, _ in learned}) < 2 and len(learned) < 200:
        learned.append(next(plan))  # as-ready: one shard may answer first several times
    assert min(added_when_replayed) >= 60  # nothing replayed before learning_starts rows
    for shard, (batch, _) in learned:
        k = shards.index(shard)
        assert set(batch["rewards"].tolist()) == {float(k)}  # the batch came from that shard
    for k, shard in enumerate(shards):
        prios = shard.call("priorities").result()
        touched = {int(i) for s, (b, _) in learned if s is shard for i in b["batch_indexes"]}
        assert touched, "each shard was replayed from"
        # the rows it replayed got its own TD error (5 + k) as priority; the others have the
        # initial 1.0 or, if added later, its max priority: never the other shard's value
        own = 5.0 + k + PRIORITY_EPS + 1e-6
        np.testing.assert_allclose(prios[sorted(touched)], own, rtol=1e-5)
        assert set(np.round(prios, 4).tolist()) <= {1.0, round(own, 4)}


def test_update_priorities_falls_back_to_the_gathered_actor(runtime):
    shards = make_shards(runtime, 2, alpha=1.0)
    for k, shard in enumerate(shards):
        shard.call("add", rows(float(k), 20)).result()

    def add_td(batch):
        batch[TD_ERROR] = np.full(batch.count, 3.0, np.float32)
        return batch

    it = (Replay(actors=shards, num_async=1).for_each(add_td)
          .for_each(UpdatePriorities()))
    for _ in range(4):
        batch = next(it)
        source = source_actor(batch)
        k = shards.index(source)
        assert set(batch["rewards"].tolist()) == {float(k)}
        prios = source.call("priorities").result()
        np.testing.assert_allclose(prios[batch["batch_indexes"]], 3.0 + PRIORITY_EPS + 1e-6,
                                   rtol=1e-5)


# -- throttling ------------------------------------------------------------------------------
class CountSampled(Operator):
    """Counts sampled rows as RecordSampled does."""

    def __call__(self, batch):
        self.metrics.counters["env_steps_sampled"] += batch.count
        return batch


def test_throttle_sampling_waits_for_training():
    src = from_local_iterable([rows(i) for i in range(100)], name="rollouts")
    sampled = src.for_each(CountSampled()).for_each(ThrottleSampling(2.0, warmup_steps=20))
    counters = sampled.metrics.counters
    raw = sampled._internal()
    # pulled while sampled <= warm-up + trained / intensity: 0, 10, 20 rows sampled before
    assert [next(raw)["rewards"][0] for _ in range(3)] == [0.0, 1.0, 2.0]
    assert next(raw) is NOT_READY  # 30 sampled > 20 + 0 / 2
    assert counters["env_steps_sampled"] == 30  # nothing more was pulled from upstream
    counters["env_steps_trained"] = 20  # now 30 may be sampled
    assert next(raw)["rewards"][0] == 3.0
    assert next(raw) is NOT_READY


def test_throttle_sampling_lets_rows_lost_with_a_dead_shard_be_sampled_again():
    """Regression (found by benchmarks/faults.py): with every shard restarted empty the
    learner had nothing to replay and sampling waited for the learner: a deadlock."""
    src = from_local_iterable([rows(i) for i in range(100)], name="rollouts")
    sampled = src.for_each(CountSampled()).for_each(ThrottleSampling(2.0, warmup_steps=20))
    counters = sampled.metrics.counters
    raw = sampled._internal()
    assert [next(raw)["rewards"][0] for _ in range(3)] == [0.0, 1.0, 2.0]
    assert next(raw) is NOT_READY  # 30 sampled > 20 + 0 / 2
    counters[ROWS_LOST] = 20  # a shard died with 20 rows: 2 more batches to refill it
    assert [next(raw)["rewards"][0] for _ in range(2)] == [3.0, 4.0]
    assert next(raw) is NOT_READY
    counters[ROWS_LOST] += 1000  # a big shard died: the warm-up again (20 rows), not 1000
    assert [next(raw)["rewards"][0] for _ in range(2)] == [5.0, 6.0]
    assert next(raw) is NOT_READY


def test_throttle_sampling_rejects_bad_intensity():
    with pytest.raises(ValueError, match="training_intensity"):
        ThrottleSampling(0)
