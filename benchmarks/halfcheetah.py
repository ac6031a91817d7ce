"""SAC / TD3 with their defaults on HalfCheetah-v5 (MuJoCo) for a fixed env-step budget.

Prints, per training iteration, the env steps sampled, the wall seconds and the mean return of
the last 10 finished episodes (1000-step episodes), then a summary line. Needs MuJoCo
(``pip install "rldataflow[mujoco]"``).

Usage::

    nice -n 10 python benchmarks/halfcheetah.py sac --steps 100000 --seed 0
    nice -n 10 python benchmarks/halfcheetah.py td3 --steps 100000 --seed 0
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import rldataflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo", choices=["sac", "td3", "ddpg"])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    mean10 = -math.inf
    with rldataflow.build(args.algo, env="HalfCheetah-v5", runtime="inline", seed=args.seed,
                          min_steps_per_iteration=5000) as algo:
        while True:
            r = algo.train()
            last10 = algo.metrics.window("episode_return")[-10:]
            mean10 = float(np.mean(last10)) if last10 else -math.inf
            steps, wall = r["env_steps_sampled"], time.perf_counter() - start
            print(f"{args.algo} steps {steps} wall {wall:.0f}s last-10 mean {mean10:.1f} "
                  f"({len(last10)} episodes)", flush=True)
            if steps >= args.steps:
                break
    wall = time.perf_counter() - start
    print(f"RESULT {args.algo} HalfCheetah-v5 seed {args.seed}: last-10 mean return "
          f"{mean10:.1f} after {steps} env steps, {wall:.0f} s wall "
          f"({wall / steps * 1e4:.0f} s per 10k steps)", flush=True)


if __name__ == "__main__":
    main()
