"""LearnerThread with Enqueue/Dequeue: back-pressure, results, and a death that names itself."""

from __future__ import annotations

import time

import pytest

from rldataflow.flow import Dequeue, Enqueue, OperatorError, from_local_iterable
from rldataflow.ops import LearnerThread


def test_results_flow_through_bounded_queues():
    learner = LearnerThread(lambda x: x * 2, inqueue_size=2, outqueue_size=2)
    learner.start()
    fed = from_local_iterable(range(50)).for_each(Enqueue(learner.inqueue))
    out = Dequeue(learner.outqueue, check=learner)
    got = []
    for _ in range(50):
        next(fed)
        got.append(next(out))
        assert learner.inqueue.qsize() <= 2 and learner.outqueue.qsize() <= 2
    assert got == [2 * i for i in range(50)]
    assert learner.num_steps == 50 and 0 < learner.utilization <= 1
    learner.stop()
    assert not learner.is_alive()


def test_learner_death_is_one_error_naming_the_thread():
    def learn(x):
        if x == 3:
            raise ValueError("bad batch 3")
        return x

    learner = LearnerThread(learn, name="my-learner")
    learner.start()
    for i in range(5):
        learner.inqueue.put(i)
    out = Dequeue(learner.outqueue, check=learner)
    start = time.perf_counter()
    with pytest.raises(OperatorError, match="my-learner.*ValueError: bad batch 3") as info:
        for _ in range(10):
            next(out)
    assert isinstance(info.value.__cause__, ValueError)
    assert time.perf_counter() - start < 3
