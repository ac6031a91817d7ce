"""DD-PPO vs PPO: env steps/s with the same workers and the same SGD work, measured in one run.

Both on CartPole-v1, process runtime, ``n`` workers x 8 envs x fragment 64 (512 rows per
worker per round), 6 epochs. DD-PPO: each worker runs SGD on its own 512 rows in 128-row
minibatches, gradients all-reduced (gloo) so the group's step averages ``n`` x 128 rows. PPO:
the driver runs SGD on the ``n`` x 512-row train batch in ``n`` x 128-row minibatches, then
broadcasts the weights. So both take 24 steps per round on ``n`` x 128 rows each; what differs
is where the gradient is computed (spread over the workers, or all in the driver while the
workers wait). PPO is measured before and after DD-PPO and the ratio uses the mean (the load of
a shared machine drifts).

Usage: ``python benchmarks/ddppo.py [--quick] [--workers 1 2 4] [--hiddens 64 64]``
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import rldataflow  # noqa: E402

ROWS = dict(num_envs_per_worker=8, rollout_fragment_length=64)
PER_WORKER_MINIBATCH = 128
EPOCHS = 6


def measure(name: str, warmup_s: float, measure_s: float, **config: Any) -> float:
    """Env steps/s sampled (all trained on) after a warm-up."""
    with rldataflow.build(name, env="CartPole-v1", runtime="process", seed=0, **config) as algo:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup_s:
            algo.train()
        counters = algo.metrics.counters
        s0 = counters["env_steps_sampled"]
        begin = time.perf_counter()
        while time.perf_counter() - begin < measure_s:
            algo.train()
        return (counters["env_steps_sampled"] - s0) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--hiddens", type=int, nargs="+", default=[64, 64],
                        help="hidden layer sizes of both networks (bigger: costlier gradients)")
    args = parser.parse_args()
    warm, span = (3.0, 8.0) if args.quick else (5.0, 20.0)
    print(f"{os.cpu_count()} cores; warm-up {warm:.0f}s, measured {span:.0f}s per setup")
    print(f"CartPole-v1, hiddens {tuple(args.hiddens)}, per worker 8 envs x 64 steps, "
          f"{EPOCHS} epochs, minibatch "
          f"{PER_WORKER_MINIBATCH} per worker (n x {PER_WORKER_MINIBATCH} for PPO)\n")
    print(f"{'workers':>7s} {'PPO steps/s':>12s} {'DD-PPO steps/s':>15s} {'DD-PPO/PPO':>11s}"
          f"   PPO before / after")
    for n in args.workers:
        rows = n * ROWS["num_envs_per_worker"] * ROWS["rollout_fragment_length"]
        ppo_cfg = dict(num_workers=n, **ROWS, hiddens=tuple(args.hiddens),
                       train_batch_size=rows, num_epochs=EPOCHS,
                       minibatch_size=n * PER_WORKER_MINIBATCH)
        dd_cfg = dict(num_workers=n, **ROWS, hiddens=tuple(args.hiddens), num_epochs=EPOCHS,
                      minibatch_size=PER_WORKER_MINIBATCH)
        before = measure("ppo", warm, span, **ppo_cfg)
        dd = measure("ddppo", warm, span, **dd_cfg)
        after = measure("ppo", warm, span, **ppo_cfg)
        ppo = (before + after) / 2
        print(f"{n:7d} {ppo:12,.0f} {dd:15,.0f} {dd / ppo:11.2f}   {before:,.0f} / {after:,.0f}",
              flush=True)


if __name__ == "__main__":
    main()
