"""Determinism tier: on the inline runtime, one seed gives bit-identical training runs."""

from __future__ import annotations

import numpy as np
import pytest

import rldataflow

SETTINGS = {
    "pg": dict(train_batch_size=256),
    "a2c": dict(train_batch_size=128, min_steps_per_iteration=256),
    "a2c_microbatch": dict(train_batch_size=128, microbatch_size=64,
                           min_steps_per_iteration=256),
    "a3c": dict(min_steps_per_iteration=256),
    "ppo": dict(train_batch_size=256, minibatch_size=64, num_epochs=2, kl_coeff=0.2),
    "ddppo": dict(minibatch_size=16, num_epochs=2),
}
COMMON = dict(env="CartPole-v1", runtime="inline", num_workers=2, num_envs_per_worker=2,
              rollout_fragment_length=16)
# keys of a result that depend on wall time, not on the computation
TIMING_KEYS = {"time_this_iter_s", "throughput", "trained_throughput", "timers",
               "time_total_s"}


def _run(name: str, seed: int, iterations: int = 3):
    algo_name = name.split("_")[0]
    results = []
    with rldataflow.build(algo_name, **COMMON, **SETTINGS[name], seed=seed) as algo:
        for _ in range(iterations):
            result = algo.train()
            results.append({k: v for k, v in result.items() if k not in TIMING_KEYS})
        returns = list(algo.metrics.window("episode_return"))
        weights = algo.workers.local_worker().get_weights()
        remote = [w.call("get_weights").result() for w in algo.workers.remote_workers()]
    return results, returns, weights, remote


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_same_seed_gives_identical_runs(name):
    results_a, returns_a, weights_a, remote_a = _run(name, seed=11)
    results_b, returns_b, weights_b, remote_b = _run(name, seed=11)
    assert returns_a == returns_b
    assert len(returns_a) > 0
    for a, b in zip(results_a, results_b, strict=True):
        assert a["learner"] == b["learner"]  # exact float equality: bit-reproducible
        assert a == b
    for key in weights_a:
        np.testing.assert_array_equal(weights_a[key], weights_b[key])
    for ra, rb in zip(remote_a, remote_b, strict=True):
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key])


@pytest.mark.parametrize("name", ["pg", "a3c"])
def test_another_seed_gives_another_run(name):
    results_a, returns_a, *_ = _run(name, seed=11, iterations=1)
    results_b, returns_b, *_ = _run(name, seed=12, iterations=1)
    assert returns_a != returns_b or results_a[0]["learner"] != results_b[0]["learner"]
