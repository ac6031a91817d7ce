"""FrameStackReplayBuffer returns exactly what a plain buffer returns, storing each frame once."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rldataflow.data import PrioritizedReplayBuffer, ReplayBuffer, SampleBatch
from rldataflow.data.frame_stack_buffer import (
    FrameStackReplayBuffer,
    PrioritizedFrameStackReplayBuffer,
)
from rldataflow.envs.frame_stack_env import FrameStackDummyEnv
from rldataflow.policies.postprocessing import compute_nstep


def _fragments(num_envs, steps, padding, n_step, seed, size=3, colours=256):
    """Env-major fragments of several env streams, like a rollout worker's batches."""
    envs = [FrameStackDummyEnv(size=size, min_len=1, max_len=7, padding=padding)
            for _ in range(num_envs)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    eps = list(range(num_envs))
    out = []
    for frag_len in steps:
        parts = []
        for i, env in enumerate(envs):
            rows = {k: [] for k in ("obs", "next_obs", "rewards", "terminateds", "truncateds",
                                    "eps_id", "env_id")}
            for _ in range(frag_len):
                nxt, r, term, trunc, _ = env.step(0)
                if colours < 256:  # few distinct values: frames repeat by accident too
                    nxt = nxt % colours
                for key, v in (("obs", obs[i]), ("next_obs", nxt), ("rewards", r),
                               ("terminateds", term), ("truncateds", trunc),
                               ("eps_id", eps[i]), ("env_id", i)):
                    rows[key].append(v)
                obs[i] = nxt
                if term or trunc:
                    obs[i] = env.reset()[0] % colours if colours < 256 else env.reset()[0]
                    eps[i] += num_envs
            parts.append(SampleBatch({k: np.array(v) for k, v in rows.items()}))
        batch = SampleBatch.concat_samples(parts)
        out.append(compute_nstep(batch, n_step, 0.9) if n_step > 1 else batch)
    return out


def _assert_same(a: SampleBatch, b: SampleBatch) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@settings(max_examples=25, deadline=None)
@given(num_envs=st.integers(1, 3), steps=st.lists(st.integers(1, 9), min_size=1, max_size=6),
       padding=st.sampled_from(["repeat", "zero"]), n_step=st.sampled_from([1, 3]),
       capacity=st.integers(4, 60), prioritized=st.booleans(), colours=st.sampled_from([2, 256]),
       seed=st.integers(0, 1000))
def test_samples_equal_a_plain_buffers(num_envs, steps, padding, n_step, capacity, prioritized,
                                       colours, seed):
    if prioritized:
        plain, dedup = (PrioritizedReplayBuffer(capacity, seed=seed),
                        PrioritizedFrameStackReplayBuffer(capacity, seed=seed, dedup="on"))
    else:
        plain, dedup = (ReplayBuffer(capacity, seed=seed),
                        FrameStackReplayBuffer(capacity, seed=seed, dedup="on"))
    for batch in _fragments(num_envs, steps, padding, n_step, seed, colours=colours):
        plain.add(batch)
        dedup.add(batch)
        assert len(plain) == len(dedup)
        _assert_same(plain._gather(np.arange(len(plain))), dedup._gather(np.arange(len(dedup))))
        _assert_same(plain.sample(16), dedup.sample(16))
        if prioritized:
            a, b = plain.sample(4), dedup.sample(4)
            _assert_same(a, b)
            for buf in (plain, dedup):
                buf.update_priorities(a["batch_indexes"], np.arange(1, 5.0))
    assert dedup.frame_dedup_active


def test_a_frame_stacked_stream_stores_about_one_frame_per_row():
    batches = _fragments(4, [50] * 4, "repeat", 3, seed=0, size=8)
    buf = FrameStackReplayBuffer(10_000, seed=0)
    rows = 0
    for b in batches:
        buf.add(b)
        rows += b.count
    # per row: the newest frame; per episode (<= 7 steps): the final obs's; never 2 x 4
    assert rows <= buf.num_frames_stored < 1.5 * rows


def test_ring_grows_when_frames_are_not_shared_and_stays_exact():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (40, 3, 3, 4), dtype=np.uint8)  # nothing shared at all
    nxt = rng.integers(0, 256, (40, 3, 3, 4), dtype=np.uint8)
    plain, dedup = ReplayBuffer(30, seed=1), FrameStackReplayBuffer(30, seed=1)
    for part in np.array_split(np.arange(40), 5):
        b = SampleBatch({"obs": obs[part], "next_obs": nxt[part]})
        plain.add(b)
        dedup.add(b)
        _assert_same(plain._gather(np.arange(len(plain))), dedup._gather(np.arange(len(dedup))))
    assert dedup.num_frames_stored == 40 * 8


def test_auto_stores_non_frames_plainly_and_on_rejects_them():
    flat = SampleBatch({"obs": np.zeros((5, 4), np.float32), "rewards": np.ones(5)})
    buf = FrameStackReplayBuffer(10, seed=0)
    buf.add(flat)
    assert not buf.frame_dedup_active and buf.sample(3)["obs"].shape == (3, 4)
    with pytest.raises(ValueError, match="replay_frame_dedup='on' needs an 'obs' column"):
        FrameStackReplayBuffer(10, dedup="on").add(flat)
    with pytest.raises(ValueError, match="dedup must be one of"):
        FrameStackReplayBuffer(10, dedup="yes")


def test_dqn_picks_frame_dedup_automatically_and_trains_on_pixels():
    import rldataflow
    from rldataflow.algorithms import dqn
    from rldataflow.envs.frame_stack_env import make_frame_stack_dummy

    assert isinstance(dqn.make_buffer(dqn.Config()), PrioritizedFrameStackReplayBuffer)
    off = dqn.make_buffer(dqn.Config(replay_frame_dedup="off", prioritized_replay=False))
    assert type(off) is ReplayBuffer
    with rldataflow.build("dqn", env=make_frame_stack_dummy, env_config={"size": 36},
                          runtime="inline", seed=0, learning_starts=64, train_batch_size=16,
                          min_steps_per_iteration=64, num_envs_per_worker=2,
                          training_intensity=1.0) as algo:
        result = algo.train()
    assert result["env_steps_trained"] > 0


def test_checkpointing_a_deduplicating_buffer_is_a_clear_error_and_plain_state_restores():
    batch = _fragments(1, [5], "repeat", 1, seed=0)[0]
    buf = FrameStackReplayBuffer(10, seed=0)
    buf.add(batch)
    with pytest.raises(NotImplementedError, match="replay_frame_dedup='off'"):
        buf.get_state()
    plain = ReplayBuffer(10, seed=0)
    plain.add(batch)
    restored = FrameStackReplayBuffer(10, seed=0)
    restored.set_state(plain.get_state())
    restored.add(batch)  # stored plainly like the restored rows
    assert len(restored) == 10 and not restored.frame_dedup_active
