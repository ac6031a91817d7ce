"""Building algorithms: strict configs, each algorithm's Config, save / restore."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import rldataflow
from rldataflow.trainer import Algorithm, algorithm_module
from rldataflow.utils.config import ConfigError, config_help

ALGOS = ["pg", "a2c", "a3c", "ppo"]
SMALL = dict(env="CartPole-v1", runtime="inline", num_workers=2, num_envs_per_worker=2,
             rollout_fragment_length=16, seed=3)


def test_misspelled_key_is_rejected_with_a_hint():
    with pytest.raises(ConfigError, match="lr_rate") as info:
        rldataflow.build("ppo", lr_rate=1)
    assert "did you mean" in str(info.value)
    assert "'lr'" in str(info.value)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="num_workers"):
        rldataflow.build("ppo", num_workers="x")


def test_unknown_algorithm_is_rejected_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'ppo'"):
        rldataflow.build("ppp")


@pytest.mark.parametrize("name", ALGOS)
def test_every_config_field_is_documented(name):
    cls = algorithm_module(name).Config
    text = config_help(cls)
    for f in dataclasses.fields(cls):
        line = next(row for row in text.splitlines() if row.split()[0] == f.name)
        assert len(line.split()) > 3, f"{name}.Config.{f.name} has no help text"


@pytest.mark.parametrize("name", ["pg", "a2c", "a3c"])
def test_range_checks_name_the_key(name):
    with pytest.raises(ConfigError, match="grad_clip"):
        rldataflow.build(name, grad_clip=-1.0)


def test_a2c_microbatch_larger_than_train_batch_is_rejected():
    with pytest.raises(ConfigError, match="microbatch_size"):
        rldataflow.build("a2c", train_batch_size=100, microbatch_size=200)


def test_a3c_num_async_must_be_positive():
    with pytest.raises(ConfigError, match="num_async"):
        rldataflow.build("a3c", num_async=0)


@pytest.mark.parametrize("name", ALGOS)
def test_each_algorithm_builds_trains_and_describes_its_plan(name):
    overrides = dict(SMALL, min_steps_per_iteration=0)
    if name in ("pg", "a2c", "ppo"):
        overrides["train_batch_size"] = 64
    if name == "ppo":
        overrides["minibatch_size"] = 32
    with rldataflow.build(name, **overrides) as algo:
        result = algo.train()
        assert result["iteration"] == 1 and result["algorithm"] == name
        assert result["env_steps_sampled"] >= 32
        assert result["env_steps_trained"] > 0
        assert "total_loss" in result["learner"]
        assert np.isfinite(result["learner"]["total_loss"])
        assert "ParallelRollouts" in algo.plan.describe() or name == "a3c"
        if name == "a3c":
            assert "AsyncGradients" in algo.plan.describe()


def test_a2c_microbatch_plan_takes_one_step_per_train_batch():
    # rounds of 2 workers x 2 envs x 16 steps = 64 rows; 4 microbatches per 256-row train batch
    with rldataflow.build("a2c", **SMALL, train_batch_size=256, microbatch_size=64,
                          min_steps_per_iteration=0) as algo:
        description = algo.plan.describe()
        for op in ("ComputeGradients", "batch(4)", "AverageGradients", "ApplyGradients"):
            assert op in description
        result = algo.train()
        assert result["env_steps_sampled"] == 256
        assert result["env_steps_trained"] == 256
        assert result["counters"]["num_grad_updates"] == 1


def test_save_restore_round_trip(tmp_path):
    with rldataflow.build("ppo", **SMALL, train_batch_size=128, minibatch_size=64,
                          kl_coeff=0.2) as algo:
        for _ in range(2):
            algo.train()
        algo.save(tmp_path / "ckpt")
        weights = algo.workers.local_worker().get_weights()
        counters = dict(algo.metrics.counters)
        kl_coeff = algo.workers.local_worker().policy.kl_coeff
        returns = list(algo.metrics.window("episode_return"))
        expected_next = algo.train()

    restored = Algorithm.restore(tmp_path / "ckpt")
    try:
        assert restored.name == "ppo"
        assert restored.iteration == 2
        assert restored.config.kl_coeff == 0.2 and restored.config.train_batch_size == 128
        for key, value in counters.items():
            assert restored.metrics.counters[key] == value, key
        assert list(restored.metrics.window("episode_return")) == pytest.approx(returns)
        assert restored.workers.local_worker().policy.kl_coeff == kl_coeff
        restored_weights = restored.workers.local_worker().get_weights()
        assert restored_weights.keys() == weights.keys()
        for key in weights:
            np.testing.assert_array_equal(restored_weights[key], weights[key])
        # the remote workers got the restored weights too
        remote = restored.workers.remote_workers()[0].call("get_weights").result()
        for key in weights:
            np.testing.assert_array_equal(remote[key], weights[key])
        # training goes on from the restored counters
        result = restored.train()
        assert result["iteration"] == 3
        assert result["env_steps_sampled"] > counters["env_steps_sampled"]
        assert result["env_steps_trained"] == expected_next["env_steps_trained"]
        assert np.isfinite(result["learner"]["total_loss"])
    finally:
        restored.stop()


def test_explicit_none_overrides_a_default():
    # grad_clip defaults to 0.5 for A2C; None must switch clipping off, not be ignored
    with rldataflow.build("a2c", **SMALL, grad_clip=None) as algo:
        assert algo.config.grad_clip is None
        assert algo.workers.local_worker().policy.config["grad_clip"] is None
