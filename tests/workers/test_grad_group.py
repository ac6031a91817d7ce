"""Gradient groups: the mean over members, in place; rank 0's tensors by broadcast."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from rldataflow.policies import TorchPolicy
from rldataflow.workers.grad_group import GroupSpec
from rldataflow.workers.rollout_worker import RolloutWorker


def _run_members(world_size, fn):
    spec = GroupSpec("thread", world_size, tag=f"t{world_size}-{id(fn)}")
    out, errors = [None] * world_size, []

    def member(rank):
        try:
            group = spec.join(rank)
            out[rank] = fn(group, rank)
            group.close()
        except Exception as exc:  # surfaced in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


@pytest.mark.parametrize("world_size", [1, 3])
def test_thread_group_allreduce_mean_and_broadcast(world_size):
    def fn(group, rank):
        a, b = torch.full((2, 3), float(rank)), torch.tensor([rank * 10.0])
        group.allreduce_mean([a, b])
        c = torch.tensor([rank + 1.0])
        group.broadcast([c], src=0)
        return a, b, c

    mean = (world_size - 1) / 2
    for a, b, c in _run_members(world_size, fn):
        assert torch.equal(a, torch.full((2, 3), mean))
        assert torch.equal(b, torch.tensor([10 * mean]))
        assert torch.equal(c, torch.tensor([1.0]))


def test_bad_rank_and_kind_are_named():
    with pytest.raises(ValueError, match="rank 2"):
        GroupSpec("thread", 2, "x").join(2)
    with pytest.raises(ValueError, match="'nccl'"):
        GroupSpec("nccl", 1, "x").join(0)


def test_learner_grad_reducer_sees_every_minibatch_before_the_step():
    worker = RolloutWorker("CartPole-v1", num_envs=2, rollout_fragment_length=16, seed=0)
    batch = worker.sample()
    policy: TorchPolicy = worker.policy
    before = {k: v.copy() for k, v in policy.get_weights().items()}
    calls = []

    def zero(grads):  # a group whose mean gradient is 0: no step may move the weights
        calls.append(len(grads))
        for g in grads:
            g.zero_()

    stats = policy.learn_on_batch(batch, num_epochs=2, minibatch_size=8, grad_reducer=zero)
    assert len(calls) == stats["num_grad_updates"] == 8
    assert stats["grad_gnorm"] == 0.0  # clipping saw the reduced gradient
    for k, v in policy.get_weights().items():
        np.testing.assert_array_equal(v, before[k])


def test_sample_and_learn_needs_a_group():
    worker = RolloutWorker("CartPole-v1", num_envs=1, rollout_fragment_length=8, seed=0)
    with pytest.raises(RuntimeError, match="join_group"):
        worker.sample_and_learn()
