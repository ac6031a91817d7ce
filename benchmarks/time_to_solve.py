"""Time to solve CartPole-v1 with PPO: wall time and env steps to a mean return of 475.

Each seed runs the real command, ``rldataflow train ppo --env CartPole-v1 --stop-return 475``,
as a subprocess (start-up included), on the process runtime with 2 workers. Measured per seed:
wall time from launch to the solved checkpoint, env steps, the steps/s of sampling and of
learning shown apart (from the run's timers), and the peak memory of all its processes together
(driver + workers + forkserver, sampled every 50 ms). Prints the median over seeds.

Targets on a 2-core machine: < 15 s wall, < 100k env steps, < 400 MB total.

Usage: ``python benchmarks/time_to_solve.py [--seeds 0 1 2] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            # unique set size would undercount shared torch pages; RSS overcounts them:
            # report PSS where the kernel offers it (shared pages split among sharers)
            mem = p.memory_full_info()
            total += getattr(mem, "pss", mem.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_seed(seed: int, out_dir: Path, max_steps: int) -> dict:
    cmd = [sys.executable, "-m", "rldataflow", "train", "ppo", "--env", "CartPole-v1",
           "--stop-return", "475", "--stop-steps", str(max_steps), "--seed", str(seed),
           "--out", str(out_dir), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{stdout}\n{stderr}")
    results = [json.loads(line) for line in (out_dir / "result.jsonl").read_text().splitlines()]
    last = results[-1]
    learn = last["timers"].get("learn", {})
    learn_s = learn.get("mean_ms", 0) * learn.get("count", 0) / 1e3
    train_s = last["time_total_s"]
    sample_s = max(train_s - learn_s, 1e-9)  # the rest of train time: sampling and plumbing
    return {
        "seed": seed,
        "solved": last["episode_return_mean"] >= 475,
        "wall_s": wall,
        "startup_s": wall - train_s,
        "env_steps": last["env_steps_sampled"],
        "sample_steps_per_s": last["env_steps_sampled"] / sample_s,
        "learn_steps_per_s": last["env_steps_trained"] / max(learn_s, 1e-9),
        "learn_share": learn_s / train_s,
        "peak_mb": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--max-steps", type=int, default=300_000)
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            row = run_seed(seed, Path(tmp) / f"seed{seed}", args.max_steps)
            rows.append(row)
            print(f"seed {seed}: solved={row['solved']} wall {row['wall_s']:.1f}s "
                  f"(start-up {row['startup_s']:.1f}s) steps {row['env_steps']:,} "
                  f"sampling {row['sample_steps_per_s']:,.0f}/s learning "
                  f"{row['learn_steps_per_s']:,.0f}/s (learning {row['learn_share']:.0%} of "
                  f"train time) peak {row['peak_mb']:.0f} MB", flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\nmedian over {len(rows)} seed(s), PPO CartPole-v1, process runtime, 2 workers")
    checks = [("wall time to 475 (s)", med("wall_s"), 15.0),
              ("env steps to 475", med("env_steps"), 100_000),
              ("peak memory, all processes (MB)", med("peak_mb"), 400.0)]
    for name, value, target in checks:
        print(f"  {name:34s} {value:12,.1f}  target < {target:,.0f}  "
              f"{'PASS' if value < target else 'MISS'}")
    print(f"  {'start-up (s)':34s} {med('startup_s'):12,.1f}")
    print(f"  {'sampling env steps/s':34s} {med('sample_steps_per_s'):12,.0f}")
    print(f"  {'learning env steps/s':34s} {med('learn_steps_per_s'):12,.0f}")
    print(f"  {'share of train time learning':34s} {med('learn_share'):12.0%}")


if __name__ == "__main__":
    main()
