"""Learning tier for ES and ARS (seeded, process runtime, 2 workers, as test_learning.py).

Run with ``pytest -m learning tests/algorithms/test_learning_es_ars.py -s`` to see steps and
times. CartPole: the mean return of the last 100 *perturbed* episodes (what the workers ran,
``episode_return_mean``) must reach 450. Pendulum: the deterministic evaluation of ``theta``
(``algo.evaluate(20)``: 20 fresh random start states) must reach -400.
"""

from __future__ import annotations

import math
import time

import pytest

import rldataflow

pytestmark = [pytest.mark.learning, pytest.mark.timeout(300)]

PROCESS = dict(runtime="process", num_workers=2, seed=0)

#: ARS on Pendulum: a 32-unit ReLU MLP (linear policies stayed below -650 in 3.7M steps in our
#: runs), larger nu and alpha, and common env seeds per update (not needed, but they cut the
#: steps to -400 from 1.5-1.8M to 1.0-1.6M on seeds 0-2); see docs/algorithms.md.
ARS_PENDULUM = dict(env="Pendulum-v1", hiddens=(32,), activation="relu", num_directions=32,
                    top_directions=16, noise_stdev=0.1, lr=0.1, common_env_seeds=True)


def _train(name: str, threshold: float, budget: int, record_property, evaluate: bool = False,
           **overrides) -> None:
    start = time.perf_counter()
    best = -math.inf
    with rldataflow.build(name, **{**PROCESS, **overrides}) as algo:
        while True:
            result = algo.train()
            steps = result["env_steps_sampled"]
            if evaluate:
                score = (algo.evaluate(20)["evaluation/episode_return_mean"]
                         if algo.iteration % 5 == 0 else -math.inf)
            else:
                score = result["episode_return_mean"]
            best = max(best, score)
            if score >= threshold or steps > budget:
                break
    wall = time.perf_counter() - start
    what = "evaluation" if evaluate else "mean perturbed return"
    print(f"\n{name} on {overrides.get('env', 'CartPole-v1')}: {what} {score:.1f} (best "
          f"{best:.1f}) after {steps} env steps, {algo.iteration} iterations, {wall:.1f} s")
    record_property("env_steps", steps)
    record_property("wall_time_s", round(wall, 1))
    assert score >= threshold, f"{name}: {what} {score:.1f} < {threshold} after {steps} steps"
    assert steps <= budget + 50_000


def test_es_cartpole(record_property):
    _train("es", 450, 1_000_000, record_property, env="CartPole-v1")


def test_ars_cartpole(record_property):
    _train("ars", 450, 1_000_000, record_property, env="CartPole-v1")


def test_ars_pendulum(record_property):
    _train("ars", -400, 3_000_000, record_property, evaluate=True, **ARS_PENDULUM)
