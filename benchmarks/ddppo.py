"""DD-PPO vs PPO: env steps/s with the same workers and the same SGD work, measured in one run.

Both on CartPole-v1, process runtime, ``n`` workers x 8 envs x fragment 64 (512 rows per
worker per round), 6 epochs. DD-PPO: each worker runs SGD on its own 512 rows in 128-row
minibatches, gradients all-reduced (gloo) so the group's step averages ``n`` x 128 rows. PPO:
the driver runs SGD on the ``n`` x 512-row train batch in ``n`` x 128-row minibatches, then
broadcasts the weights. So both take 24 steps per round on ``n`` x 128 rows each; what differs
is where the gradient is computed (spread over the workers, or all in the driver while the
workers wait). On a shared machine the load drifts, so each worker count runs ``--repeats``
PPO / DD-PPO pairs (alternating which goes first) and prints the median ratio and its range,
plus CPU seconds (driver and workers) per 1,000 env steps, which depends little on the load.

Usage: ``python benchmarks/ddppo.py [--quick] [--workers 1 2 4] [--repeats 3] [--hiddens 64 64]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

import rldataflow  # noqa: E402

ROWS = dict(num_envs_per_worker=8, rollout_fragment_length=64)
PER_WORKER_MINIBATCH = 128
EPOCHS = 6


def _cpu_s() -> float:
    """CPU seconds used so far by this process and all its descendants (the workers)."""
    procs = [psutil.Process()]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(name: str, warmup_s: float, measure_s: float, **config: Any) -> tuple[float, float]:
    """Env steps/s sampled (all trained on) after a warm-up, and CPU seconds (driver plus
    workers) per 1,000 env steps: the latter hardly depends on the machine's load."""
    with rldataflow.build(name, env="CartPole-v1", runtime="process", seed=0, **config) as algo:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup_s:
            algo.train()
        counters = algo.metrics.counters
        s0, cpu0 = counters["env_steps_sampled"], _cpu_s()
        begin = time.perf_counter()
        while time.perf_counter() - begin < measure_s:
            algo.train()
        steps = counters["env_steps_sampled"] - s0
        return steps / (time.perf_counter() - begin), (_cpu_s() - cpu0) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3,
                        help="PPO / DD-PPO pairs per worker count (the median ratio is shown)")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[64, 64],
                        help="hidden layer sizes of both networks (bigger: costlier gradients)")
    args = parser.parse_args()
    warm, span = (3.0, 8.0) if args.quick else (5.0, 20.0)
    print(f"{os.cpu_count()} cores; warm-up {warm:.0f}s, measured {span:.0f}s per setup")
    print(f"CartPole-v1, hiddens {tuple(args.hiddens)}, per worker 8 envs x 64 steps, "
          f"{EPOCHS} epochs, minibatch "
          f"{PER_WORKER_MINIBATCH} per worker (n x {PER_WORKER_MINIBATCH} for PPO)\n")
    print(f"{'workers':>7s} {'PPO steps/s':>12s} {'DD-PPO steps/s':>15s} "
          f"{'DD-PPO/PPO median (range)':>27s} {'CPU-s/1k steps PPO':>19s} {'DD-PPO':>7s}")
    for n in args.workers:
        rows = n * ROWS["num_envs_per_worker"] * ROWS["rollout_fragment_length"]
        ppo_cfg = dict(num_workers=n, **ROWS, hiddens=tuple(args.hiddens),
                       train_batch_size=rows, num_epochs=EPOCHS,
                       minibatch_size=n * PER_WORKER_MINIBATCH)
        dd_cfg = dict(num_workers=n, **ROWS, hiddens=tuple(args.hiddens), num_epochs=EPOCHS,
                      minibatch_size=PER_WORKER_MINIBATCH)
        ppo, dd, ratios = [], [], []
        for r in range(args.repeats):
            # alternate which goes first, so a drifting load favours neither
            order = [("ppo", ppo_cfg), ("ddppo", dd_cfg)][:: 1 if r % 2 == 0 else -1]
            pair = {name: measure(name, warm, span, **cfg) for name, cfg in order}
            ppo.append(pair["ppo"])
            dd.append(pair["ddppo"])
            ratios.append(pair["ddppo"][0] / pair["ppo"][0])
        print(f"{n:7d} {statistics.median(p[0] for p in ppo):12,.0f} "
              f"{statistics.median(d[0] for d in dd):15,.0f} "
              f"{statistics.median(ratios):12.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
              f"{'':5s} {statistics.median(p[1] for p in ppo):19.2f} "
              f"{statistics.median(d[1] for d in dd):7.2f}", flush=True)


if __name__ == "__main__":
    main()
