"""Does parallel evaluation overlap training? Iteration time with a blocking evaluation (the
baseline) and with ``evaluation_parallel_to_training``, measured in the same run.

PG on ``rldataflow/SleepCartPole-v0`` (every env step sleeps 2 ms, like a slow simulator),
process runtime, one rollout worker (200 steps per iteration), one evaluation worker playing
``--episodes`` deterministic episodes every iteration. Reported per mode: the median iteration
time, and the median time ``train()`` waited for the evaluation (``evaluation/time_s``).
A blocking iteration costs training + evaluation; a parallel one about the longer of the two.

Usage::

    python benchmarks/evaluation_overlap.py              # 5 timed iterations per mode
    python benchmarks/evaluation_overlap.py --iters 10 --episodes 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import rldataflow


def measure(parallel: bool, iters: int, episodes: int) -> tuple[float, float]:
    with rldataflow.build("pg", env="rldataflow/SleepCartPole-v0",
                          env_config={"sleep_s": 0.002}, runtime="process", num_workers=1,
                          num_envs_per_worker=1, rollout_fragment_length=200,
                          train_batch_size=200, evaluation_interval=1,
                          evaluation_num_workers=1, evaluation_num_episodes=episodes,
                          evaluation_parallel_to_training=parallel, seed=0) as algo:
        algo.train()  # warm-up: worker start, first weights
        times, waits = [], []
        for _ in range(iters):
            start = time.perf_counter()
            result = algo.train()
            times.append(time.perf_counter() - start)
            waits.append(result["evaluation/time_s"])
    return statistics.median(times), statistics.median(waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    base_iter, base_wait = measure(False, args.iters, args.episodes)
    par_iter, par_wait = measure(True, args.iters, args.episodes)
    print(f"blocking evaluation: iteration {base_iter:.3f} s, waiting for evaluation "
          f"{base_wait:.3f} s (median of {args.iters})")
    print(f"parallel evaluation: iteration {par_iter:.3f} s, waiting for evaluation "
          f"{par_wait:.3f} s (median of {args.iters})")
    print(f"iteration time parallel / blocking: {par_iter / base_iter:.2f}; "
          f"evaluation wait parallel / blocking: {par_wait / base_wait:.2f}")


if __name__ == "__main__":
    main()
