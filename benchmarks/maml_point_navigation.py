"""MAML on 2-D point navigation: pre- and post-adaptation returns on held-out tasks.

For second-order MAML and FOMAML (``first_order=True``) with the same seed and budget, prints
the mean return on 10 held-out goals (drawn with a seed the training stream never uses) of the
meta-parameters as they are (pre-adaptation) and after one inner policy-gradient step on each
goal's own 20 episodes (post-adaptation), before meta-training (the baseline, measured in the
same run) and after it, with the wall time.

Usage::

    python benchmarks/maml_point_navigation.py                 # 20 meta-updates, seed 0
    python benchmarks/maml_point_navigation.py --iters 60 --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import rldataflow
from rldataflow.algorithms.maml import adaptation_returns
from rldataflow.envs import POINT_NAVIGATION_ID, make_env, task_env

#: the learning test's configuration (tests/algorithms/test_maml.py)
CONFIG = dict(runtime="process", num_workers=2, meta_batch_size=10, num_envs_per_worker=20,
              hiddens=(64, 64), init_log_std=-2.0, env_config={"horizon": 20})


def run(first_order: bool, seed: int, iters: int) -> None:
    held_out = task_env(make_env(POINT_NAVIGATION_ID, CONFIG["env_config"])).sample_tasks(
        10, seed=987_654)
    start = time.perf_counter()
    with rldataflow.build("maml", **CONFIG, first_order=first_order, seed=seed) as algo:
        before = adaptation_returns(algo.workers, held_out)
        for _ in range(iters):
            result = algo.train()
        after = adaptation_returns(algo.workers, held_out)
    name = "FOMAML" if first_order else "MAML (2nd order)"
    print(f"{name:17s} seed {seed}  before: pre {before['pre_adaptation']:7.2f} post "
          f"{before['post_adaptation']:7.2f} (delta {before['adaptation_delta']:+.2f})  after "
          f"{iters} meta-updates ({result['env_steps_sampled']} env steps, "
          f"{time.perf_counter() - start:.0f} s): pre {after['pre_adaptation']:7.2f} post "
          f"{after['post_adaptation']:7.2f} (delta {after['adaptation_delta']:+.2f})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    for seed in args.seeds:
        for first_order in (False, True):
            run(first_order, seed, args.iters)


if __name__ == "__main__":
    main()
