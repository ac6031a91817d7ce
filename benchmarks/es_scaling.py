"""ES evaluations per second with 1, 2, 4 and 8 workers, on an env whose step sleeps.

``rldataflow/SleepCartPole-v0`` sleeps ``--sleep-ms`` per step (default 2 ms), so a worker's
time goes to its "simulator", not to the CPU, and a 2-core machine can host 8 workers: the
figure measures the dataflow (asynchronous gather, stale-result dropping, the driver's update
and weight broadcast), not the machine. The policy is frozen (``lr`` ~ 0) and episodes are
capped at ``--max-steps`` so that every run sees the same episode lengths.

"useful" evaluations are the perturbed episodes that went into an update; "sampled" adds the
ones dropped as stale (computed around a ``theta`` that had changed meanwhile). The ratio is
useful evaluations/s against ``n`` times the 1-worker figure of the same run.

Usage::

    python benchmarks/es_scaling.py                  # 1, 2, 4, 8 workers, 10 s each
    python benchmarks/es_scaling.py --workers 1 8 --seconds 5
"""

from __future__ import annotations

import argparse
import time

import rldataflow


def measure(num_workers: int, seconds: float, sleep_ms: float, max_steps: int,
            episodes_per_batch: int) -> dict[str, float]:
    with rldataflow.build("es", env="rldataflow/SleepCartPole-v0",
                          env_config={"sleep_s": sleep_ms / 1000.0}, runtime="process",
                          num_workers=num_workers, seed=0, lr=1e-12, l2_coeff=0.0,
                          episodes_per_batch=episodes_per_batch, max_episode_steps=max_steps,
                          noise_size=1_000_000) as algo:
        algo.train()  # warm up: workers started, first broadcast done
        c = algo.metrics.counters
        start_used, start_pairs = c["env_steps_trained"], c["perturbation_pairs"]
        start_stale = c["stale_pairs_dropped"]
        start_steps = c["env_steps_sampled"]
        updates, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            algo.train()
            updates += 1
        wall = time.perf_counter() - t0
        pairs = c["perturbation_pairs"] - start_pairs
        stale = c["stale_pairs_dropped"] - start_stale
        return {"workers": num_workers, "updates": updates, "wall_s": wall,
                "useful_evals_per_s": 2 * (pairs - stale) / wall,
                "sampled_evals_per_s": 2 * pairs / wall,
                "stale_fraction": stale / pairs if pairs else 0.0,
                "env_steps_per_s": (c["env_steps_sampled"] - start_steps) / wall,
                "trained_steps_per_s": (c["env_steps_trained"] - start_used) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sleep-ms", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=25)
    parser.add_argument("--episodes-per-batch", type=int, default=200)
    args = parser.parse_args()
    rows = [measure(n, args.seconds, args.sleep_ms, args.max_steps, args.episodes_per_batch)
            for n in args.workers]
    base = rows[0]["useful_evals_per_s"] / rows[0]["workers"]
    print(f"ES on SleepCartPole ({args.sleep_ms} ms/step, episodes <= {args.max_steps} steps, "
          f"{args.episodes_per_batch} episodes per update)")
    print(f"{'workers':>7} {'useful evals/s':>14} {'sampled evals/s':>15} {'stale':>6} "
          f"{'env steps/s':>11} {'updates':>7} {'ratio vs linear':>15}")
    for r in rows:
        ratio = r["useful_evals_per_s"] / (base * r["workers"])
        print(f"{r['workers']:>7} {r['useful_evals_per_s']:>14.1f} "
              f"{r['sampled_evals_per_s']:>15.1f} {r['stale_fraction']:>6.1%} "
              f"{r['env_steps_per_s']:>11.0f} {r['updates']:>7} {ratio:>15.2f}")


if __name__ == "__main__":
    main()
