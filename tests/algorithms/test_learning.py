"""Learning tier: each algorithm, with its default config, reaches a reward threshold within a
step budget (seeded; on the process runtime with two rollout workers, as a user would run it).

Run with ``pytest -m learning tests/algorithms/test_learning.py -s`` to see steps and times.
"""

from __future__ import annotations

import math
import time

import pytest

import rldataflow

pytestmark = [pytest.mark.learning, pytest.mark.timeout(300)]

PROCESS = dict(runtime="process", num_workers=2, seed=0)


def _train_until(name: str, threshold: float, budget: int, record_property=None,
                 **overrides) -> tuple[int, float]:
    """Train until the mean return of the last 100 episodes reaches ``threshold`` or more than
    ``budget`` env steps were sampled; returns ``(steps, mean return)``."""
    start = time.perf_counter()
    best = -math.inf
    with rldataflow.build(name, **{**PROCESS, **overrides}) as algo:
        while True:
            result = algo.train()
            steps, mean_return = result["env_steps_sampled"], result["episode_return_mean"]
            if not math.isnan(mean_return):
                best = max(best, mean_return)
            if mean_return >= threshold or steps > budget:
                break
    wall = time.perf_counter() - start
    print(f"\n{name} on {overrides.get('env', 'CartPole-v1')}: mean return {mean_return:.1f} "
          f"(best {best:.1f}) after {steps} env steps, {algo.iteration} iterations, "
          f"{wall:.1f} s")
    if record_property is not None:
        record_property("env_steps", steps)
        record_property("wall_time_s", round(wall, 1))
    assert mean_return >= threshold, (
        f"{name}: mean return {mean_return:.1f} < {threshold} after {steps} steps "
        f"(budget {budget}, best {best:.1f})")
    assert steps <= budget + 10_000  # the last iteration may overshoot the budget slightly
    return steps, mean_return


def test_pg_cartpole(record_property):
    _train_until("pg", 150, 300_000, record_property, env="CartPole-v1")


def test_a2c_cartpole(record_property):
    _train_until("a2c", 400, 300_000, record_property, env="CartPole-v1")


def test_a3c_cartpole(record_property):
    _train_until("a3c", 150, 300_000, record_property, env="CartPole-v1")


def test_ppo_cartpole(record_property):
    _train_until("ppo", 475, 150_000, record_property, env="CartPole-v1")


def test_ppo_pendulum(record_property):
    # Continuous actions (DiagGaussian: a mean head plus a free log_std). Pendulum wants a
    # shorter horizon than CartPole (gamma 0.95: a swing-up pays off within ~20 steps), longer
    # GAE, bigger batches and more epochs per batch, much as in the RL Baselines3 Zoo's tuned
    # PPO settings for Pendulum-v1 (gamma 0.9, lambda 0.95, 10 epochs, lr 1e-3).
    _train_until("ppo", -400, 500_000, record_property, env="Pendulum-v1",
                 gamma=0.95, lambda_=0.95, lr=1e-3, num_envs_per_worker=8,
                 rollout_fragment_length=128, train_batch_size=2048, minibatch_size=256,
                 num_epochs=10)
