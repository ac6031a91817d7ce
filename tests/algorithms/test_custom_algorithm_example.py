"""The algorithm of docs/adding_an_algorithm.md (examples/custom_algorithm.py) registers,
builds on the roles and learns."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import cloudpickle
import pytest

import rldataflow
from rldataflow.algorithms import algorithm_names, get_algorithm
from rldataflow.utils.config import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_algorithm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_algorithm_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    # as for a script run as __main__: its functions travel to worker processes by value
    cloudpickle.register_pickle_by_value(module)
    yield module
    cloudpickle.unregister_pickle_by_value(module)


def test_it_registers_and_its_config_is_checked(example):
    assert "multi_epoch_ac" in algorithm_names()
    assert isinstance(get_algorithm("multi_epoch_ac"), example.MultiEpochAC)
    with pytest.raises(ConfigError, match="minibatch_size"):
        rldataflow.build("multi_epoch_ac", env="CartPole-v1", minibatch_size=4096,
                         runtime="inline")
    with pytest.raises(ConfigError, match="num_epoch"):
        rldataflow.build("multi_epoch_ac", env="CartPole-v1", num_epoch=2, runtime="inline")


def test_its_plan_describes_without_starting_and_trains(example):
    with rldataflow.build("multi_epoch_ac", env="CartPole-v1", runtime="inline", num_workers=0,
                          train_batch_size=256, minibatch_size=64, start=False) as algo:
        text = algo.plan.describe()
        assert "TrainOneStep" in text and "custom_algorithm.py" in text
        result = algo.train()
        assert result["env_steps_trained"] >= 256
        rows = result["env_steps_trained"]  # 4 epochs of minibatches of 64 rows
        assert result["learner"]["num_grad_updates"] == 4 * math.ceil(rows / 64)


@pytest.mark.learning
def test_it_learns_cartpole(example):
    """Mean return >= 400 within 100k env steps (2 worker processes, seed 0)."""
    with rldataflow.build("multi_epoch_ac", env="CartPole-v1", num_workers=2, seed=0) as algo:
        while True:
            result = algo.train()
            if result["episode_return_mean"] >= 400:
                break
            assert result["env_steps_sampled"] < 100_000, result["episode_return_mean"]
