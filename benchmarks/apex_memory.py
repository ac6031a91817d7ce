"""Ape-X memory over a long run: is the resident memory flat once the replay buffers are full?

Runs Ape-X on CartPole-v1 (process runtime, 2 workers, 2 replay shards, 100k-row replay) and
samples the resident set size of the driver and all its child processes (psutil, summed; the
forkserver, rollout workers and replay shards) every 0.5 s. Reported:

* RSS when the replay buffers are first full (every shard at capacity), and 5 s later (the
  baseline: the first replays and weight syncs have touched their buffers by then);
* peak RSS after the baseline, and RSS at the end;
* growth = (end - baseline) / baseline and (peak - baseline) / baseline (target <= 5%).

Every buffer and queue in the plan is bounded (replay shards, learner queues, in-flight requests,
metrics windows), so the growth should be allocator noise.

Usage::

    python benchmarks/apex_memory.py                 # 60 s
    python benchmarks/apex_memory.py --duration 600  # the 10-minute version
    python benchmarks/apex_memory.py --quick         # 40 s
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psutil

import rldataflow

BUFFER_SIZE = 100_000
SETTLE_S = 5.0


def total_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants, in bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class Sampler(threading.Thread):
    """Samples the summed RSS every ``period`` seconds: ``samples`` is [(time, bytes)]."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.proc = psutil.Process(os.getpid())

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.perf_counter(), total_rss(self.proc)))
            self.done.wait(self.period)


def mb(x: float) -> str:
    return f"{x / 2**20:8.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of training")
    parser.add_argument("--quick", action="store_true", help="a 40 s run")
    args = parser.parse_args()
    duration = 40.0 if args.quick else args.duration
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    full_at = None
    config = dict(env="CartPole-v1", runtime="process", num_workers=2, num_replay_shards=2,
                  buffer_size=BUFFER_SIZE, min_time_s_per_iteration=1.0, seed=0)
    with rldataflow.build("apex", **config) as algo:
        shards = algo.plan.replay_shards
        while time.perf_counter() - start < duration:
            result = algo.train()
            if full_at is None and result["counters"]["replay_rows_added"] >= BUFFER_SIZE:
                stats = [s.call("stats").result() for s in shards]
                if all(s["size"] == s["capacity"] for s in stats):
                    full_at = time.perf_counter()
                    print(f"replay full after {full_at - start:.1f} s "
                          f"({result['env_steps_sampled']} env steps)")
        end = time.perf_counter()
        num_children = len(psutil.Process().children(recursive=True))
        sampler.done.set()
        sampler.join()
        last = result
    if full_at is None or end - full_at < 2 * SETTLE_S:
        print("the replay buffers did not fill early enough: run longer (--duration)")
        return
    samples = sampler.samples
    at_full = next(v for t, v in samples if t >= full_at)
    baseline_t, baseline = next((t, v) for t, v in samples if t >= full_at + SETTLE_S)
    after = [v for t, v in samples if baseline_t <= t <= end]
    peak, final = max(after), after[-1]
    print(f"run: {end - start:.0f} s, {last['env_steps_sampled']} env steps sampled, "
          f"{last['env_steps_trained']} rows trained, return {last['episode_return_mean']:.0f}")
    print(f"RSS (driver + {num_children} child processes, summed), sampled every "
          f"{sampler.period} s:")
    print(f"  when the buffers filled   {mb(at_full)}")
    print(f"  baseline ({SETTLE_S:.0f} s later)     {mb(baseline)}")
    print(f"  peak after the baseline   {mb(peak)}")
    print(f"  at the end                {mb(final)}")
    print(f"growth end vs baseline:  {100 * (final - baseline) / baseline:+.2f}%  (target <= 5%)")
    print(f"growth peak vs baseline: {100 * (peak - baseline) / baseline:+.2f}%")


if __name__ == "__main__":
    main()
