"""Ape-X scaling: env steps/s with 1, 2, 4 and 8 rollout workers when the env, not the CPU,
is the limit, and the learner's updates/s alongside.

The env is ``rldataflow/SleepCartPole-v0`` whose ``step`` sleeps 2 ms (``env_config``
``sleep_s``): a worker spends its time asleep, so on any machine N workers should sample N times
as fast as one. The whole Ape-X plan runs (async rollouts -> store to 2 replay shards -> weight
sync; replay -> learner thread -> priorities -> target net) with actors running free
(``training_intensity=None``, as in the paper). Figures:

* env steps/s per worker count, and its ratio to linear scaling: ``rate(N) / (N * rate(1))``,
  with rate(1) measured in the same run (target >= 0.8 at 8 workers);
* learner updates/s per worker count, and its ratio to the 1-worker figure (should stay ~1: the
  learner is fed from replay, whatever the sampling rate).

The same runs on the ray runtime when ``ray`` is importable (shorter).

Usage::

    python benchmarks/apex_scaling.py            # 20 s per point
    python benchmarks/apex_scaling.py --quick    # 6 s per point, ray 4 s
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

import rldataflow

SLEEP_S = 0.002
ENV = "rldataflow/SleepCartPole-v0"


def measure(runtime: str, num_workers: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Steady-state env steps/s and learner updates/s of Ape-X with ``num_workers`` workers."""
    config = dict(
        env=ENV, env_config={"sleep_s": SLEEP_S}, runtime=runtime, num_workers=num_workers,
        num_envs_per_worker=4, rollout_fragment_length=25, num_replay_shards=2,
        learning_starts=500, training_intensity=None, min_steps_per_iteration=0,
        min_time_s_per_iteration=0.5, seed=0)
    with rldataflow.build("apex", **config) as algo:
        start_build = time.perf_counter()
        result = algo.train()
        while time.perf_counter() - start_build < warmup_s or result["env_steps_trained"] == 0:
            result = algo.train()
        c0 = result["counters"]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            result = algo.train()
        wall = time.perf_counter() - t0
        c1 = result["counters"]
    return {
        "workers": num_workers,
        "env_steps_per_s": (c1["env_steps_sampled"] - c0["env_steps_sampled"]) / wall,
        "updates_per_s": (c1["num_grad_updates"] - c0["num_grad_updates"]) / wall,
        "rows_trained_per_s": (c1["env_steps_trained"] - c0["env_steps_trained"]) / wall,
    }


def report(runtime: str, rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    ideal_per_worker = 4 / (4 * SLEEP_S)  # 4 envs stepped in turn: 1 / sleep_s steps/s
    print(f"\n{runtime} runtime (env step sleeps {SLEEP_S * 1e3:.0f} ms; a worker's ceiling "
          f"is {ideal_per_worker:.0f} steps/s)")
    print(f"{'workers':>7} {'env steps/s':>12} {'vs linear':>10} {'updates/s':>10} "
          f"{'vs 1 worker':>12}")
    for row in rows:
        linear = row["env_steps_per_s"] / (row["workers"] * base["env_steps_per_s"])
        learner = row["updates_per_s"] / base["updates_per_s"] if base["updates_per_s"] else 0
        print(f"{row['workers']:>7} {row['env_steps_per_s']:>12.0f} {linear:>10.2f} "
              f"{row['updates_per_s']:>10.1f} {learner:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--no-ray", action="store_true", help="skip the ray runtime")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    seconds, warmup = (6.0, 3.0) if args.quick else (20.0, 5.0)
    rows = [measure("process", n, seconds, warmup) for n in counts]
    report("process", rows)
    if not args.no_ray and importlib.util.find_spec("ray") is not None:
        ray_seconds = 4.0 if args.quick else 10.0
        rows = [measure("ray", n, ray_seconds, warmup) for n in counts]
        report("ray", rows)
    elif not args.no_ray:
        print("\nray is not installed: skipped the ray runtime")


if __name__ == "__main__":
    main()
