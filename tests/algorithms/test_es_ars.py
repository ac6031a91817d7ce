"""ES and ARS: the updates against hand-computed numbers, the plan, checkpoints, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rldataflow
from rldataflow.algorithms.ars import ars_step
from rldataflow.algorithms.es import centered_ranks, es_gradient
from rldataflow.trainer import Algorithm
from rldataflow.utils.config import ConfigError
from rldataflow.workers.perturbation_worker import PerturbationResult

SMALL = dict(env="CartPole-v1", runtime="inline", num_workers=2, seed=1, noise_size=100_000)


# -- the update rules ------------------------------------------------------------------------
def test_centered_ranks_hand_computed():
    ranks = centered_ranks(np.array([[1.0, 5.0], [3.0, 2.0]]))
    # flattened 1, 5, 3, 2 -> ranks 0, 3, 2, 1 -> / 3 - 0.5
    np.testing.assert_allclose(ranks, [[-0.5, 0.5], [1 / 6, -1 / 6]])
    assert centered_ranks(np.array([[7.0, 7.0]])).tolist() == [[-0.5, 0.5]]  # ties by position


def test_es_gradient_hand_computed():
    g = es_gradient(np.array([[1.0, 5.0], [3.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    # (u+ - u-) = (-1, 1/3); sum over pairs of (u+ - u-) eps / (2n = 4)
    np.testing.assert_allclose(g, [-0.25, 1 / 12])


def test_ars_step_hand_computed():
    returns = np.array([[1.0, 3.0], [10.0, 4.0], [2.0, 2.0]])
    noise = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    step, sigma_r = ars_step(returns, noise, lr=0.1, top=2)
    # best by max(r+, r-): directions 1 (10) and 0 (3); their returns 10, 4, 1, 3 have std
    # sqrt(45 / 4); differences 6 and -2 -> 6 * (0, 1) - 2 * (1, 0) = (-2, 6)
    assert sigma_r == pytest.approx(np.sqrt(45 / 4))
    np.testing.assert_allclose(step, 0.1 / (2 * np.sqrt(45 / 4)) * np.array([-2.0, 6.0]))
    flat, sigma0 = ars_step(np.full((2, 2), 5.0), noise[:2], lr=0.1, top=2)
    assert sigma0 == 0.0 and not flat.any()


def _result(indices, returns, version):
    returns = np.asarray(returns, dtype=np.float64)
    return PerturbationResult(np.asarray(indices, dtype=np.int64), returns,
                              np.full(returns.shape, 10, dtype=np.int64), version)


def test_es_update_on_a_tiny_example():
    """Linear policy (theta0 = 0, so no weight decay): the first Adam step moves every
    coordinate by lr in the direction of the rank-weighted noise sum."""
    from rldataflow.algorithms.es import ESUpdate
    from rldataflow.flow import Metrics

    with rldataflow.build("es", **{**SMALL, "num_workers": 0}, hiddens=(), lr=0.1) as algo:
        worker = algo.workers.local_worker()
        dim = worker.policy.num_params  # 4 obs x 2 actions + 2 biases
        assert dim == 10 and not worker.policy.theta.any()
        eps = np.stack([worker.noise.get(i, dim) for i in (3, 50)]).astype(np.float64)
        update = ESUpdate(algo.workers, algo.config)
        update.metrics = Metrics()
        update(_result([3, 50], [[1.0, 5.0], [3.0, 2.0]], worker.weights_version))
        g = (-1.0 * eps[0] + (1 / 3) * eps[1]) / 4
        np.testing.assert_allclose(worker.policy.theta, 0.1 * np.sign(g), rtol=1e-4)
        assert worker.weights_version == 1
        assert update.metrics.counters["env_steps_trained"] == 40


def test_ars_update_on_a_tiny_example():
    from rldataflow.algorithms.ars import ARSUpdate
    from rldataflow.flow import Metrics

    with rldataflow.build("ars", **{**SMALL, "num_workers": 0}, lr=0.1, num_directions=3,
                          top_directions=2) as algo:
        worker = algo.workers.local_worker()
        dim = worker.policy.num_params
        rows = np.stack([worker.noise.get(i, dim) for i in (0, 7, 9)]).astype(np.float64)
        update = ARSUpdate(algo.workers, algo.config)
        update.metrics = Metrics()
        _, stats = update(_result([0, 7, 9], [[1.0, 3.0], [10.0, 4.0], [2.0, 2.0]], 0))
        expected = 0.1 / (2 * np.sqrt(45 / 4)) * (6 * rows[1] - 2 * rows[0])
        np.testing.assert_allclose(worker.policy.theta, expected, rtol=1e-5, atol=1e-7)
        assert stats["sigma_returns"] == pytest.approx(np.sqrt(45 / 4))


def test_ars_merges_worker_observation_statistics():
    """ARS V2: the driver's normalizer counts exactly the states of the results it used, and
    the workers act with its frozen mean / std."""
    with rldataflow.build("ars", **SMALL, num_directions=4, top_directions=2) as algo:
        r = algo.train()
        policy = algo.workers.local_worker().policy
        assert policy.obs_stats.count == r["env_steps_trained"] > 0
        np.testing.assert_allclose(policy.obs_mean, policy.obs_stats.mean, rtol=1e-6)
        remote = algo.workers.remote_workers()[0].call("get_weights").result()
        np.testing.assert_allclose(remote["obs_mean"], policy.obs_mean)
        np.testing.assert_allclose(remote["theta"], policy.theta)


def test_stale_results_are_dropped():
    with rldataflow.build("es", **{**SMALL, "runtime": "process"},
                          episodes_per_batch=4) as algo:
        for _ in range(4):
            r = algo.train()
        # one request per worker is in flight when theta changes: its pair is dropped; every
        # update used exactly its 2 pairs of the current theta
        counters = r["counters"]
        assert counters["stale_pairs_dropped"] >= 1
        assert counters["perturbation_pairs"] == 4 * 2 + counters["stale_pairs_dropped"]
        assert r["learner"]["pairs"] == 2


# -- both action spaces, config checks ---------------------------------------------------------
@pytest.mark.parametrize("name", ["es", "ars"])
@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_trains_on_discrete_and_continuous_actions(name, env):
    with rldataflow.build(name, **{**SMALL, "env": env}, max_episode_steps=50) as algo:
        before = algo.workers.local_worker().policy.theta.copy()
        r = algo.train()
        assert r["env_steps_sampled"] > 0 and r["episodes_total"] >= 2
        assert not np.array_equal(before, algo.workers.local_worker().policy.theta)
        ev = algo.evaluate(2)
        assert ev["evaluation/num_episodes"] == 2
        assert np.isfinite(ev["evaluation/episode_return_mean"])


def test_evaluation_is_deterministic():
    with rldataflow.build("es", **SMALL) as algo:
        algo.train()
        worker = algo.workers.local_worker()
        theta = worker.policy.theta
        a = worker.rollout(theta, seed=123, record_obs=False)
        b = worker.rollout(theta, seed=123, record_obs=False)
        assert a == b


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="top_directions"):
        rldataflow.build("ars", num_directions=4, top_directions=5, runtime="inline")
    with pytest.raises(ConfigError, match="noise_stdev"):
        rldataflow.build("es", noise_stdev=0.0, runtime="inline")
    with pytest.raises(ConfigError, match="episodes_per_batch"):
        rldataflow.build("es", episodes_per_batch=1, runtime="inline")


# -- plan, checkpoints, the noise table's lifetime, restarts --------------------------------------
def test_plan_prints_without_sampling():
    proc = subprocess.run([sys.executable, "-m", "rldataflow", "plan", "es"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("PerturbationRollouts", "AccumulateUntil", "ESUpdate", "BroadcastWeights",
                 "es.py:"):
        assert name in proc.stdout
    with rldataflow.build("ars", **SMALL, start=False) as algo:
        text = algo.plan.describe()
        assert "ARSUpdate" in text and "DropStale" in text
        assert algo.workers.local_worker().num_steps_sampled == 0
        assert all(w.call("apply", lambda w: w.num_steps_sampled).result() == 0
                   for w in algo.workers.remote_workers())


def test_the_plan_frees_the_noise_table_on_stop():
    algo = rldataflow.build("es", **SMALL)
    path = algo.workers.local_worker().noise.shared.path
    assert os.path.exists(path)
    algo.stop()
    assert not os.path.exists(path)


@pytest.mark.parametrize("name", ["es", "ars"])
def test_checkpoint_round_trip(tmp_path, name):
    with rldataflow.build(name, **SMALL) as algo:
        for _ in range(2):
            algo.train()
        algo.save(tmp_path / "ck")
        policy = algo.workers.local_worker().policy
        saved = policy.get_state()
        counters = dict(algo.metrics.counters)
    restored = Algorithm.restore(tmp_path / "ck")
    try:
        policy2 = restored.workers.local_worker().policy
        np.testing.assert_array_equal(policy2.theta, saved["theta"])
        np.testing.assert_array_equal(policy2.obs_mean, saved["obs_mean"])
        assert policy2.weights_version == saved["weights_version"] == 2
        assert policy2.obs_stats.count == saved["obs_stats"]["count"]
        if name == "es":
            opt = policy2.optimizer(restored.config.lr)
            assert opt.t == saved["optimizer"]["t"] == 2
            np.testing.assert_array_equal(opt.m, saved["optimizer"]["m"])
        assert restored.metrics.counters["env_steps_sampled"] == counters["env_steps_sampled"]
        remote = restored.workers.remote_workers()[0].call("get_weights").result()
        np.testing.assert_array_equal(remote["theta"], saved["theta"])
        r = restored.train()
        assert r["env_steps_sampled"] > counters["env_steps_sampled"]
        assert policy2.weights_version == 3
    finally:
        restored.stop()


def test_dead_worker_is_replaced_and_training_goes_on():
    with rldataflow.build("es", **{**SMALL, "runtime": "process"},
                          episodes_per_batch=8) as algo:
        algo.train()
        victim = algo.workers.remote_workers()[0]
        os.kill(algo.runtime.pid(victim), signal.SIGKILL)
        restarts, deadline = 0, time.monotonic() + 60
        while not restarts and time.monotonic() < deadline:
            r = algo.train()
            restarts = r["worker_restarts"]
        assert restarts == 1
        before = r["env_steps_trained"]
        replacement = algo.workers.remote_workers()[0]
        assert replacement is not victim
        assert algo.train()["env_steps_trained"] > before
        # the replacement works with the current weights
        np.testing.assert_array_equal(replacement.call("get_weights").result()["theta"],
                                      algo.workers.local_worker().policy.theta)


# -- the worker's options --------------------------------------------------------------------------
def _worker(index: int, noise, **kwargs):
    from rldataflow.workers.perturbation_worker import PerturbationWorker

    return PerturbationWorker("Pendulum-v1", noise=noise, noise_stdev=1e-9, seed=5,
                              worker_index=index, policy_options={"hiddens": (8,)}, **kwargs)


@pytest.mark.parametrize("common", [True, False])
def test_common_env_seeds_give_every_worker_the_same_start_states(common):
    """With a negligible sigma every pair's return is theta's return from its start state:
    equal on two workers exactly when they share the env seeds."""
    from rldataflow.data.noise_table import NoiseTable

    noise = NoiseTable.create(10_000, seed=0)
    try:
        a, b = (_worker(i, noise, common_env_seeds=common) for i in (1, 2))
        ra, rb = a.sample(), b.sample()
        assert ra.returns[0, 0] == pytest.approx(ra.returns[0, 1])  # a pair shares its seed
        assert bool(ra.returns[0, 0] == pytest.approx(rb.returns[0, 0])) is common
        # same version again: the same start states with common seeds, fresh ones without
        assert bool(a.sample().returns[0, 0] == pytest.approx(ra.returns[0, 0])) is common
        a.set_weights(a.get_weights(), version=1)  # a new version: new start states
        assert a.sample().returns[0, 0] != pytest.approx(ra.returns[0, 0])
    finally:
        noise.release()


def test_rollouts_per_perturbation_average_several_episodes():
    from rldataflow.data.noise_table import NoiseTable

    noise = NoiseTable.create(10_000, seed=0)
    try:
        worker = _worker(1, noise, rollouts_per_perturbation=3, pairs_per_sample=2,
                         max_episode_steps=20)
        r = worker.sample()
        assert r.returns.shape == (2, 2) and r.rollouts == 3
        assert r.num_episodes == 12 and r.count == 12 * 20
        assert worker.num_steps_sampled == 240
    finally:
        noise.release()


@pytest.mark.parametrize("name", ["es", "ars"])
def test_every_config_field_is_documented(name):
    import dataclasses

    from rldataflow.trainer import algorithm_module
    from rldataflow.utils.config import config_help

    cls = algorithm_module(name).Config
    text = config_help(cls)
    for f in dataclasses.fields(cls):
        line = next(row for row in text.splitlines() if row.split()[0] == f.name)
        assert len(line.split()) > 3, f"{name}.Config.{f.name} has no help text"


def test_es_counts_episodes_with_several_rollouts_per_perturbation():
    with rldataflow.build("es", **{**SMALL, "num_workers": 0}, episodes_per_batch=12,
                          rollouts_per_perturbation=3) as algo:
        r = algo.train()
        assert r["learner"]["pairs"] == 2  # 2 pairs x 2 signs x 3 rollouts = 12 episodes
        assert r["episodes_total"] == 12
