"""Sampling throughput: rollout workers through the dataflow vs a plain loop, measured together.

CartPole-v1 with the default 64x64 MLP actor-critic policy. The baseline is what a user would
write by hand in one process: a Gymnasium ``SyncVectorEnv`` of the same size, the same torch
forward pass and action sampling, no dataflow, no actors. Figures printed:

* env steps/s of the plain loop (one core);
* 1 worker through ``ParallelRollouts`` (process runtime): ratio to the plain loop (target >= 0.9);
* 2 process workers: ratio to 2x the plain loop (target >= 0.8 on a 2-core machine);
* env steps/s per core.

Usage: ``python benchmarks/sampling.py [--quick] [--envs 16] [--fragment 256]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rldataflow.envs import obs_preprocessor  # noqa: E402
from rldataflow.ops import ParallelRollouts  # noqa: E402
from rldataflow.policies import TorchPolicy  # noqa: E402
from rldataflow.startup import make_runtime  # noqa: E402
from rldataflow.workers import WorkerSet  # noqa: E402


def plain_loop(num_envs: int, steps_per_env: int, seed: int = 0) -> float:
    """Env steps/s of a hand-written loop: vector env + policy forward + sampling."""
    torch.set_num_threads(1)
    env = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1") for _ in range(num_envs)])
    obs_space = obs_preprocessor(env.single_observation_space).space
    policy = TorchPolicy(obs_space, env.single_action_space, seed=seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(20):  # warm-up
        actions, _ = policy.compute_actions(obs.astype(np.float32))
        obs, *_ = env.step(actions)
    start = time.perf_counter()
    for _ in range(steps_per_env):
        actions, _ = policy.compute_actions(obs.astype(np.float32))
        obs, *_ = env.step(actions)
    elapsed = time.perf_counter() - start
    env.close()
    return num_envs * steps_per_env / elapsed


def through_rollouts(num_workers: int, num_envs: int, fragment: int, rounds: int) -> float:
    """Env steps/s of ``num_workers`` process workers read through ParallelRollouts."""
    with make_runtime("process") as rt:
        workers = WorkerSet(rt, num_workers, dict(env="CartPole-v1", num_envs=num_envs,
                                                  rollout_fragment_length=fragment, seed=0))
        rollouts = ParallelRollouts(workers, mode="async", num_async=2)
        for _ in range(2 * num_workers):  # warm-up
            next(rollouts)
        start = time.perf_counter()
        steps = sum(next(rollouts).count for _ in range(rounds * num_workers))
        elapsed = time.perf_counter() - start
        workers.stop()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--envs", type=int, default=16, help="envs per worker")
    parser.add_argument("--fragment", type=int, default=256, help="steps per env per sample")
    args = parser.parse_args()
    rounds = 6 if args.quick else 20
    steps_per_env = args.fragment * rounds

    base = plain_loop(args.envs, steps_per_env)
    one = through_rollouts(1, args.envs, args.fragment, rounds)
    base_again = plain_loop(args.envs, steps_per_env)  # the machine may drift: bracket it
    baseline = (base + base_again) / 2
    two = through_rollouts(2, args.envs, args.fragment, rounds)
    cores = os.cpu_count() or 1

    rows = [
        ("plain loop (1 process)", baseline, None, None),
        ("1 worker via ParallelRollouts", one, one / baseline, 0.9),
        ("2 workers via ParallelRollouts", two, two / (2 * baseline), 0.8),
    ]
    print(f"CartPole-v1, {args.envs} envs per worker, fragment {args.fragment}, "
          f"64x64 MLP, {cores} cores")
    print(f"{'setup':34s} {'env steps/s':>12s} {'ratio':>7s} {'target':>7s}  result")
    for name, rate, ratio, target in rows:
        ratio_s = f"{ratio:.2f}" if ratio is not None else ""
        target_s = f">={target}" if target is not None else ""
        verdict = "" if target is None else ("PASS" if ratio >= target else "MISS")
        print(f"{name:34s} {rate:12,.0f} {ratio_s:>7s} {target_s:>7s}  {verdict}")
    print(f"per core with 2 workers: {two / min(2, cores):,.0f} env steps/s")


if __name__ == "__main__":
    main()
