"""Frames stay uint8 end to end: env -> sample() -> concat -> replay (local and in an actor of
every runtime) -> tensors; only the CNN turns them into floats."""

import numpy as np
import torch

from rldataflow.algorithms import dqn
from rldataflow.data import PrioritizedReplayBuffer, ReplayBuffer, SampleBatch
from rldataflow.envs.frame_stack_env import FrameStackDummyEnv, make_frame_stack_dummy
from rldataflow.ops.replay import ReplayActor
from rldataflow.policies import TorchPolicy
from rldataflow.workers import RolloutWorker

SHAPE = (84, 84, 4)
IMAGE_COLUMNS = (SampleBatch.OBS, SampleBatch.NEXT_OBS)


def _config() -> dqn.Config:
    return dqn.Config(env=make_frame_stack_dummy, env_config={"size": 84}, hiddens=(32,),
                      n_step=3, seed=0)


def _worker_kwargs() -> dict:
    kwargs = dqn.worker_kwargs(_config(), dqn.policy_factory(_config()))
    kwargs.update(num_envs=2, rollout_fragment_length=8)
    return kwargs


def _assert_frames(batch: SampleBatch, rows: int | None = None) -> None:
    for key in IMAGE_COLUMNS:
        col = batch[key]
        assert col.dtype == np.uint8, (key, col.dtype)
        assert col.shape[1:] == SHAPE, (key, col.shape)
        if rows is not None:
            assert len(col) == rows


def test_dummy_env_stacks_channel_last_with_repeat_or_zero_padding():
    for padding in ("repeat", "zero"):
        env = FrameStackDummyEnv(size=6, padding=padding, min_len=3, max_len=3)
        obs, _ = env.reset(seed=1)
        pad = obs[..., -1] if padding == "repeat" else np.zeros((6, 6), np.uint8)
        for c in range(3):
            np.testing.assert_array_equal(obs[..., c], pad)
        nxt, _, _, _, _ = env.step(0)
        np.testing.assert_array_equal(nxt[..., :3], obs[..., 1:])
        assert not np.array_equal(nxt[..., 3], obs[..., 3])


def test_obs_stay_uint8_from_sample_through_replay_and_tensors():
    worker = RolloutWorker(**_worker_kwargs())
    batches = [worker.sample() for _ in range(3)]
    for b in batches:
        _assert_frames(b, rows=16)
    batch = SampleBatch.concat_samples(batches)
    _assert_frames(batch, rows=48)
    for buf in (ReplayBuffer(100, seed=0), PrioritizedReplayBuffer(100, seed=0)):
        buf.add(batch)
        _assert_frames(buf.sample(8), rows=8)
    tensors = TorchPolicy.batch_to_tensors(batch)
    assert tensors[SampleBatch.OBS].dtype == torch.uint8
    # zero-copy: the tensor is a view of the batch's array, not a float copy of it
    assert tensors[SampleBatch.OBS].data_ptr() == batch[SampleBatch.OBS].ctypes.data
    stats = worker.policy.learn_on_batch(buf.sample(8))  # the CNN takes uint8 and scales it
    assert np.isfinite(stats["loss"])


def test_obs_stay_uint8_through_a_worker_and_a_replay_shard_in_each_runtime(runtime):
    worker = runtime.create_actor(RolloutWorker, **_worker_kwargs())
    shard = runtime.create_actor(ReplayActor, 64, batch_size=8, seed=0)
    batch = worker.call("sample").result()
    _assert_frames(batch, rows=16)
    assert shard.call("add", batch).result() == 16
    replayed = shard.call("replay").result()
    _assert_frames(replayed, rows=8)
    assert replayed[SampleBatch.OBS].flags.c_contiguous
    # inline/process: writeable, so torch takes it without a copy; ray: a zero-copy read-only
    # view of the object store (not defeated by a copy on get)
    is_ray = type(runtime).__name__ == "RayRuntime"
    assert replayed[SampleBatch.OBS].flags.writeable != is_ray
    # the shard stored the frames once each (frame_dedup defaults to "auto")
    assert shard.call(_frames_stored).result() < 16 * 2 * 4


def _frames_stored(shard: ReplayActor) -> int:
    assert shard.buffer.frame_dedup_active
    return shard.buffer.num_frames_stored
