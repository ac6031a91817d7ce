"""Learning tier, offline: BC, MARWIL and discrete CQL trained on a dataset recorded from a PPO
policy reach a CartPole-v1 evaluation return of 400; continuous CQL trained on a dataset recorded
from a SAC policy reaches a Pendulum-v1 evaluation return of -400 (seeded; process runtime, two
workers).

The dataset is made once per module: PPO (default config) is trained until its mean return is
475, and 40 of its episodes (sampled actions) are recorded with ``Algorithm.record``.
Run with ``pytest -m learning tests/algorithms/test_offline_learning.py -s`` for the figures.
"""

from __future__ import annotations

import math
import time

import pytest
import yaml

import rldataflow
from rldataflow.data.dataset import DatasetReader
from rldataflow.tuned import tuned_path

pytest.importorskip("pyarrow")
pytestmark = [pytest.mark.learning, pytest.mark.timeout(300)]

PROCESS = dict(runtime="process", num_workers=2, seed=0)
# the offline algorithms sample nothing: their two processes are evaluation workers
OFFLINE = dict(runtime="process", num_workers=0, evaluation_num_workers=2, seed=0)
#: continuous CQL: 4 + 4 sampled actions per state (the default 10 + 10 costs 2x per step)
CQL_PENDULUM = dict(num_sampled_actions=4)
CQL_ITERATIONS = 60     # 100 gradient steps each


@pytest.fixture(scope="module")
def expert_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("offline") / "ppo_cartpole"
    start = time.perf_counter()
    with rldataflow.build("ppo", env="CartPole-v1", **PROCESS) as algo:
        while True:
            result = algo.train()
            if result["episode_return_mean"] >= 475 or result["env_steps_sampled"] > 150_000:
                break
        assert result["episode_return_mean"] >= 475, result["episode_return_mean"]
        trained = time.perf_counter() - start
        info = algo.record(40, out)
    print(f"\nPPO: return {result['episode_return_mean']:.1f} after "
          f"{result['env_steps_sampled']} steps, {trained:.1f} s; recorded {info['rows']} "
          f"steps (mean return {info['episode_return_mean']:.1f}) in "
          f"{time.perf_counter() - start - trained:.1f} s")
    assert DatasetReader(out).num_rows() == info["rows"]
    return out


@pytest.mark.parametrize("name", ["bc", "marwil"])
def test_offline_cartpole(name, expert_dataset, record_property):
    start = time.perf_counter()
    best = -math.inf
    with rldataflow.build(name, env="CartPole-v1", input=str(expert_dataset),
                          evaluation_interval=5, evaluation_num_episodes=10,
                          **OFFLINE) as algo:
        for _ in range(100):
            result = algo.train()
            ret = result.get("evaluation/episode_return_mean", math.nan)
            if not math.isnan(ret):
                best = max(best, ret)
                if ret >= 400:
                    break
    wall = time.perf_counter() - start
    print(f"\n{name}: evaluation return {ret:.1f} (best {best:.1f}) after {algo.iteration} "
          f"iterations, {result['env_steps_trained']} rows trained, {wall:.1f} s")
    record_property("wall_time_s", round(wall, 1))
    assert result["env_steps_sampled"] == 0     # learned from the dataset only
    assert ret >= 400, f"{name}: evaluation return {ret:.1f} < 400 (best {best:.1f})"


def test_cql_dqn_cartpole(expert_dataset, record_property):
    start = time.perf_counter()
    with rldataflow.build("cql_dqn", env="CartPole-v1", input=str(expert_dataset),
                          evaluation_interval=2, evaluation_num_episodes=10,
                          off_policy_estimation_episodes=10, **OFFLINE) as algo:
        for _ in range(30):   # 100 gradient steps per iteration
            result = algo.train()
            ret = result.get("evaluation/episode_return_mean", math.nan)
            if ret >= 400:
                break
    wall = time.perf_counter() - start
    print(f"\ncql_dqn: evaluation return {ret:.1f} after {algo.iteration} iterations, "
          f"{result['env_steps_trained']} rows trained, {wall:.1f} s; WIS estimate "
          f"{result['off_policy_estimation/wis_return']:.1f}")
    record_property("wall_time_s", round(wall, 1))
    assert result["env_steps_sampled"] == 0
    assert ret >= 400, f"cql_dqn: evaluation return {ret:.1f} < 400"


@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory):
    """SAC trained to a mean return of -300 (at most 12k steps), then 50 of its episodes
    (10k rows; sampled actions, so the data is the stochastic policy's)."""
    out = tmp_path_factory.mktemp("offline") / "sac_pendulum"
    # SAC's defaults are MuJoCo-sized; the collector uses the packaged Pendulum settings
    tuned = yaml.safe_load(tuned_path("sac-pendulum").read_text())
    settings = {k: v for k, v in tuned.items() if k not in ("algorithm", "stop", "expected")}
    with rldataflow.build("sac", runtime="inline", num_workers=0, seed=0, **settings) as algo:
        while True:
            result = algo.train()
            if result["episode_return_mean"] >= -300 or result["env_steps_sampled"] >= 12_000:
                break
        info = algo.record(50, out)
    print(f"\nSAC: return {result['episode_return_mean']:.1f} after "
          f"{result['env_steps_sampled']} steps; recorded {info['rows']} steps (mean return "
          f"{info['episode_return_mean']:.1f})")
    return out


@pytest.mark.timeout(1500)   # SAC to -300 first (~20 s on a free machine, minutes when loaded)
def test_cql_pendulum(pendulum_dataset, record_property):
    start = time.perf_counter()
    best = -math.inf
    with rldataflow.build("cql", env="Pendulum-v1", input=str(pendulum_dataset),
                          evaluation_interval=2, evaluation_num_episodes=10,
                          **CQL_PENDULUM, **OFFLINE) as algo:
        for _ in range(CQL_ITERATIONS):
            result = algo.train()
            ret = result.get("evaluation/episode_return_mean", math.nan)
            if not math.isnan(ret):
                best = max(best, ret)
                if ret >= -400:
                    break
    wall = time.perf_counter() - start
    print(f"\ncql: evaluation return {ret:.1f} (best {best:.1f}) after {algo.iteration} "
          f"iterations, {result['env_steps_trained']} rows trained, {wall:.1f} s")
    record_property("wall_time_s", round(wall, 1))
    assert result["env_steps_sampled"] == 0
    assert ret >= -400, f"cql: evaluation return {ret:.1f} < -400 (best {best:.1f})"
