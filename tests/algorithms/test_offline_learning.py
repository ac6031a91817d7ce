"""Learning tier, offline: BC and MARWIL trained on a dataset recorded from a PPO policy reach a
CartPole-v1 evaluation return of 400 (seeded; process runtime, two workers).

The dataset is made once per module: PPO (default config) is trained until its mean return is
475, and 40 of its episodes (sampled actions) are recorded with ``Algorithm.record``.
Run with ``pytest -m learning tests/algorithms/test_offline_learning.py -s`` for the figures.
"""

from __future__ import annotations

import math
import time

import pytest

import rldataflow
from rldataflow.data.dataset import DatasetReader

pytest.importorskip("pyarrow")
pytestmark = [pytest.mark.learning, pytest.mark.timeout(300)]

PROCESS = dict(runtime="process", num_workers=2, seed=0)
# the offline algorithms sample nothing: their two processes are evaluation workers
OFFLINE = dict(runtime="process", num_workers=0, evaluation_num_workers=2, seed=0)


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
