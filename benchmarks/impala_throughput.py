"""IMPALA throughput: learner utilization, env steps/s vs PPO's bulk-sync plan, and scaling
with the number of workers on a sleeping env; every figure and ratio measured in this run.

1. Learner utilization: IMPALA (default config) on CartPole-v1, 2 workers, process runtime;
   the fraction of wall time the learner thread spends inside its learning step, measured
   after a warm-up (target >= 0.8), with the policy lag and the learner queue's fill. For
   contrast, the same with one SGD step per train batch, where sampling is the bottleneck.
2. Env steps/s of IMPALA vs PPO's bulk-sync plan on the same workers (2 x 8 envs, fragment
   32) doing the same SGD work per sampled row (3 passes of 256-row minibatches over 512-row
   train batches): what overlapping sampling with learning buys. PPO runs before and after
   IMPALA and the ratio uses their mean (a shared machine's load drifts).
3. ``rldataflow/SleepCartPole-v0`` (``sleep_s`` 0.002 per step: a simulator-bound env that
   leaves the CPU free): IMPALA's env steps/s with 1, 2, 4, 8 workers and the ratio to linear
   scaling from 1 worker (target >= 0.8 at 8); plus 8 workers behind 2 aggregators.

Usage: ``python benchmarks/impala_throughput.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import rldataflow  # noqa: E402
from rldataflow.algorithms import impala  # noqa: E402

CARTPOLE_WORKERS = dict(env="CartPole-v1", num_workers=2, num_envs_per_worker=8,
                        rollout_fragment_length=32, seed=0)
SGD = dict(train_batch_size=512, num_epochs=3, minibatch_size=256)


def measure(algo_name: str, warmup_s: float, measure_s: float, **config: Any
            ) -> dict[str, float]:
    """Env steps/s sampled (and trained) after a warm-up; for IMPALA also the learner
    thread's utilization, policy lag and queue fill over the measured window."""
    config.setdefault("min_time_s_per_iteration", 0.5)
    with rldataflow.build(algo_name, runtime="process", **config) as algo:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup_s:
            algo.train()
        thread = None
        if algo_name in ("impala", "appo"):
            thread = impala.parts_of(algo).learner.thread
        counters = algo.metrics.counters
        s0, t0 = counters["env_steps_sampled"], counters["env_steps_trained"]
        busy0 = thread.busy_s if thread is not None else 0.0
        queue_fill: list[int] = []
        lags: list[float] = []
        begin = time.perf_counter()
        while time.perf_counter() - begin < measure_s:
            r = algo.train()
            if thread is not None:
                queue_fill.append(thread.inqueue.qsize())
                lags.append(r["policy_lag_mean"])
        wall = time.perf_counter() - begin
        out = {"sampled_per_s": (counters["env_steps_sampled"] - s0) / wall,
               "trained_per_s": (counters["env_steps_trained"] - t0) / wall}
        if thread is not None:
            out["utilization"] = (thread.busy_s - busy0) / wall
            out["queue_fill"] = sum(queue_fill) / max(len(queue_fill), 1)
            out["policy_lag"] = sum(lags) / max(len(lags), 1)
        return out


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    warm, span = (3.0, 8.0) if args.quick else (5.0, 30.0)
    cores = os.cpu_count() or 1
    print(f"{cores} cores; warm-up {warm:.0f}s, measured {span:.0f}s per setup\n")

    # 1 + 2: CartPole, 2 workers: IMPALA vs PPO on the same workers and SGD work
    # PPO before and after IMPALA: the load of a shared machine may drift, so bracket it
    ppo_before = measure("ppo", warm, span, **CARTPOLE_WORKERS, **SGD)
    imp = measure("impala", warm, span, **CARTPOLE_WORKERS, **SGD)
    ppo_after = measure("ppo", warm, span, **CARTPOLE_WORKERS, **SGD)
    ppo = {k: (ppo_before[k] + ppo_after[k]) / 2 for k in ppo_before}
    # for contrast: one SGD step per train batch, so the learner outpaces the two workers
    light = measure("impala", warm, span, **CARTPOLE_WORKERS, train_batch_size=512,
                    num_epochs=1, minibatch_size=None)
    print("CartPole-v1, 2 workers x 8 envs, fragment 32, train batch 512, 3 x 256-row passes")
    print(f"  IMPALA learner utilization        {imp['utilization']:6.2f}   target >=0.8  "
          f"{verdict(imp['utilization'], 0.8)}")
    print(f"  IMPALA policy lag (mean)          {imp['policy_lag']:6.2f}   learner updates")
    print(f"  IMPALA learner queue fill (mean)  {imp['queue_fill']:6.2f}   of "
          f"{impala.Config().learner_queue_size}")
    print(f"  IMPALA env steps/s                {imp['sampled_per_s']:9,.0f}   (trained "
          f"{imp['trained_per_s']:,.0f}/s)")
    print(f"  PPO (bulk sync) env steps/s       {ppo['sampled_per_s']:9,.0f}   (trained "
          f"{ppo['trained_per_s']:,.0f}/s; {ppo_before['sampled_per_s']:,.0f} before, "
          f"{ppo_after['sampled_per_s']:,.0f} after)")
    print(f"  IMPALA / PPO                      {imp['sampled_per_s'] / ppo['sampled_per_s']:6.2f}")
    print("  contrast, 1 SGD step per 512-row batch (sampling-bound, the learner waits):")
    print(f"    learner utilization {light['utilization']:.2f}, env steps/s "
          f"{light['sampled_per_s']:,.0f}, policy lag {light['policy_lag']:.2f}, "
          f"queue fill {light['queue_fill']:.2f}")
    print()

    # 3: the sleeping env, 1..8 workers
    sleep = dict(env="rldataflow/SleepCartPole-v0", env_config={"sleep_s": 0.002}, seed=0,
                 num_envs_per_worker=8, rollout_fragment_length=32)
    rates = {}
    for n in (1, 2, 4, 8):
        rates[n] = measure("impala", warm, span, num_workers=n, **sleep)["sampled_per_s"]
    agg = measure("impala", warm, span, num_workers=8, num_aggregation_workers=2,
                  **sleep)["sampled_per_s"]
    print("rldataflow/SleepCartPole-v0 (2 ms sleep per step), 8 envs per worker, fragment 32")
    print(f"  {'workers':24s} {'env steps/s':>12s} {'x linear':>9s}")
    for n, rate in rates.items():
        ratio = rate / (n * rates[1])
        mark = f"   target >=0.8  {verdict(ratio, 0.8)}" if n == 8 else ""
        print(f"  {n:<24d} {rate:12,.0f} {ratio:9.2f}{mark}")
    print(f"  {'8 via 2 aggregators':24s} {agg:12,.0f} {agg / (8 * rates[1]):9.2f}")
    print(f"  (ideal per worker: {8 / (8 * 0.002):,.0f} env steps/s from the sleep alone)")


if __name__ == "__main__":
    main()
