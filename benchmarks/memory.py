"""Memory over a long run: is the resident memory of Ape-X / IMPALA flat after warm-up?

Runs one algorithm (process runtime, CartPole-v1, 2 rollout workers) for ``--minutes`` and
samples the resident set size of the driver plus all its child processes (psutil, summed: the
forkserver, rollout workers, replay shards, aggregators) every ``--period`` seconds.

* Ape-X: 2 replay shards, 100k-row replay (the default ``buffer_size``). Warm-up ends when
  every shard is at capacity or after ``--warmup-minutes``, whichever is later.
* IMPALA: ``replay_proportion`` 0.5 over a 100-slot replay of sample batches (so the bounded
  ``MixInReplay`` buffer is in the picture too), learner thread, 4-batch learner queue. Warm-up
  ends after ``--warmup-minutes`` (the replay slots fill within seconds).

Reported over the samples after warm-up: RSS at the start and end of that window, min, max,
mean; drift = (end - start) / mean, and the excursions (min - mean) / mean and
(max - mean) / mean. Goal: all within +-5%. Every buffer and queue in these plans is bounded
(design rule 6), so what remains should be allocator noise.

Usage::

    nice -n 10 python benchmarks/memory.py --algo apex --minutes 30 > apex_memory.log
    nice -n 10 python benchmarks/memory.py --algo impala --minutes 30 > impala_memory.log
    python benchmarks/memory.py --algo apex --minutes 1 --warmup-minutes 0.3   # quick check
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

import rldataflow  # noqa: E402
from rldataflow.ops.replay import ROWS_ADDED  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "apex": dict(env="CartPole-v1", num_workers=2, num_replay_shards=2, buffer_size=100_000,
                 min_time_s_per_iteration=1.0),
    "impala": dict(env="CartPole-v1", num_workers=2, replay_proportion=0.5,
                   replay_buffer_num_slots=100, min_time_s_per_iteration=1.0),
}


def total_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of a process and all its descendants in bytes, number of descendants)."""
    total, children = 0, proc.children(recursive=True)
    for p in [proc, *children]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, len(children)


class Sampler(threading.Thread):
    """Samples the summed RSS every ``period`` seconds: ``samples`` is [(time, bytes)]."""

    def __init__(self, period: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.num_children = 0
        self.done = threading.Event()
        self.proc = psutil.Process(os.getpid())

    def run(self) -> None:
        while not self.done.is_set():
            rss, self.num_children = total_rss(self.proc)
            self.samples.append((time.perf_counter(), rss))
            self.done.wait(self.period)


def mb(x: float) -> str:
    return f"{x / 2**20:8.1f} MB"


def buffers_full(algo: Any) -> bool:
    stats = [s.call("stats").result() for s in algo.plan.replay_shards]
    return all(s["size"] == s["capacity"] for s in stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(CONFIGS), default="apex")
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of training")
    parser.add_argument("--warmup-minutes", type=float, default=5.0,
                        help="minutes before the measured window (Ape-X: at least until the "
                             "replay buffers are full)")
    parser.add_argument("--period", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = dict(CONFIGS[args.algo], runtime="process", seed=args.seed)
    duration, warmup = 60 * args.minutes, 60 * args.warmup_minutes
    print(f"{args.algo}: {duration / 60:.1f} min, warm-up >= {warmup / 60:.1f} min, RSS every "
          f"{args.period:.0f} s; config {config}", flush=True)
    sampler = Sampler(args.period)
    sampler.start()
    start = time.perf_counter()
    warm_at = None
    full_at = None if args.algo == "apex" else start
    next_log = start
    with rldataflow.build(args.algo, **config) as algo:
        while time.perf_counter() - start < duration:
            result = algo.train()
            now = time.perf_counter()
            if full_at is None and result["counters"].get(ROWS_ADDED, 0) >= \
                    config["buffer_size"] and buffers_full(algo):
                full_at = now
                print(f"replay full after {full_at - start:.0f} s "
                      f"({result['env_steps_sampled']} env steps)", flush=True)
            if warm_at is None and full_at is not None and now - start >= warmup:
                warm_at = now
                print(f"warm-up over after {warm_at - start:.0f} s", flush=True)
            if now >= next_log:  # a progress line a minute, so a log shows a run is alive
                print(f"  {(now - start) / 60:5.1f} min  RSS {mb(sampler.samples[-1][1])}  "
                      f"sampled {result['env_steps_sampled']}  "
                      f"trained {result['env_steps_trained']}  "
                      f"return {result['episode_return_mean']:.0f}", flush=True)
                next_log = now + 60
        end = time.perf_counter()
        sampler.done.set()
        sampler.join()
    if warm_at is None or end - warm_at < 10 * args.period:
        print("warm-up did not end early enough (replay never full?): run longer")
        return
    window = [v for t, v in sampler.samples if warm_at <= t <= end]
    first, last = window[0], window[-1]
    lo, hi = min(window), max(window)
    mean = sum(window) / len(window)

    def pct(x: float) -> float:
        return 100 * x / mean

    print(f"\nrun: {(end - start) / 60:.1f} min, {result['env_steps_sampled']} env steps "
          f"sampled, {result['env_steps_trained']} trained, return "
          f"{result['episode_return_mean']:.0f}")
    print(f"RSS of the driver + {sampler.num_children} child processes (summed), "
          f"{len(window)} samples over the {(end - warm_at) / 60:.1f} min after warm-up:")
    print(f"  start {mb(first)}   end {mb(last)}   min {mb(lo)}   max {mb(hi)}   "
          f"mean {mb(mean)}")
    drift, low, high = pct(last - first), pct(lo - mean), pct(hi - mean)
    ok = all(abs(x) <= 5 for x in (drift, low, high))
    print(f"drift (end - start) / mean: {drift:+.2f}%; min vs mean {low:+.2f}%; "
          f"max vs mean {high:+.2f}%  (goal: within +-5%: {'PASS' if ok else 'MISS'})")


if __name__ == "__main__":
    main()
