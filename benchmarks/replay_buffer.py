"""Replay buffer throughput vs plain-numpy baselines measured in the same run.

Figures (transitions per second, capacity 100k, CartPole-like columns: obs/next_obs float32[4],
actions int64, rewards float32, terminateds/truncateds bool):

* add, batches of 200: ``ReplayBuffer.add`` and ``PrioritizedReplayBuffer.add`` vs the minimum
  possible cost, slice copies into preallocated arrays with no class around them;
* sample, batches of 512: ``ReplayBuffer.sample`` vs ``rng.integers`` + fancy indexing;
  ``PrioritizedReplayBuffer.sample`` vs the naive prioritized sampler, ``rng.choice`` with
  ``p = priorities / priorities.sum()`` over the full array (+ the same gather and weights);
* sample + ``update_priorities`` (the learner's real loop) vs the naive sampler + a priority
  write, as a separate figure.

Each figure is the best of several timed repeats (the least disturbed by the OS). The uniform
sampler can beat its baseline: it gathers 2-D columns with ``np.take``, which numpy runs several
times faster than the baseline's ``arr[idx]``.

Usage::

    python benchmarks/replay_buffer.py            # full run
    python benchmarks/replay_buffer.py --quick    # a few seconds, smaller repeat counts
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from rldataflow.data import PrioritizedReplayBuffer, ReplayBuffer, SampleBatch

CAPACITY = 100_000
ADD_BATCH = 200
SAMPLE_BATCH = 512
ALPHA, BETA = 0.6, 0.4


def cartpole_batch(n: int, rng: np.random.Generator) -> SampleBatch:
    return SampleBatch(
        {
            SampleBatch.OBS: rng.standard_normal((n, 4), dtype=np.float32),
            SampleBatch.NEXT_OBS: rng.standard_normal((n, 4), dtype=np.float32),
            SampleBatch.ACTIONS: rng.integers(0, 2, n),
            SampleBatch.REWARDS: np.ones(n, dtype=np.float32),
            SampleBatch.TERMINATEDS: rng.random(n) < 0.05,
            SampleBatch.TRUNCATEDS: np.zeros(n, dtype=bool),
        }
    )


def best_rate(step: Callable[[], None], items_per_step: int, steps: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` timed runs of `steps` calls."""
    for _ in range(max(1, steps // 10)):  # warm caches and lazy allocations
        step()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - t0)
    return items_per_step * steps / best


class NumpyBaseline:
    """The least a ring buffer can do: preallocated arrays, slice copies, integer fancy indexing."""

    def __init__(self, template: SampleBatch, capacity: int, seed: int) -> None:
        self.cols = {k: np.zeros((capacity, *v.shape[1:]), v.dtype) for k, v in template.items()}
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.rng = np.random.default_rng(seed)
        self.prio = np.zeros(capacity)  # for the naive prioritized sampler

    def add(self, batch: SampleBatch) -> None:
        n = batch.count  # assumes n <= capacity (the benchmark's batches are)
        first = min(n, self.capacity - self.pos)
        for k, v in batch.items():
            col = self.cols[k]
            col[self.pos : self.pos + first] = v[:first]
            col[: n - first] = v[first:]
        self.prio[self.pos : self.pos + first] = 1.0
        self.prio[: n - first] = 1.0
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, n)
        out = {k: v[idx] for k, v in self.cols.items()}
        out["batch_indexes"] = idx
        return out

    def sample_naive_prioritized(self, n: int) -> dict[str, np.ndarray]:
        p = self.prio[: self.size] / self.prio[: self.size].sum()
        idx = self.rng.choice(self.size, size=n, p=p)
        out = {k: v[idx] for k, v in self.cols.items()}
        out["batch_indexes"] = idx
        out["weights"] = ((p[idx] / p.min()) ** -BETA).astype(np.float32)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    add_steps = 100 if args.quick else 1000  # 1000 x 200 = 2 capacity wraps
    sample_steps = 100 if args.quick else 1000
    naive_steps = 10 if args.quick else 60  # the naive sampler is O(capacity) per call

    rng = np.random.default_rng(0)
    batches = [cartpole_batch(ADD_BATCH, rng) for _ in range(64)]
    counter = iter(range(10**12))

    def next_batch() -> SampleBatch:
        return batches[next(counter) % len(batches)]

    base = NumpyBaseline(batches[0], CAPACITY, seed=0)
    uni = ReplayBuffer(CAPACITY, seed=0)
    per = PrioritizedReplayBuffer(CAPACITY, alpha=ALPHA, seed=0)

    results: dict[str, float] = {}
    results["add numpy baseline"] = best_rate(lambda: base.add(next_batch()), ADD_BATCH,
                                              add_steps, repeats)
    results["add uniform"] = best_rate(lambda: uni.add(next_batch()), ADD_BATCH, add_steps,
                                       repeats)
    results["add prioritized"] = best_rate(lambda: per.add(next_batch()), ADD_BATCH, add_steps,
                                           repeats)
    # sampling from full buffers
    while base.size < CAPACITY or len(uni) < CAPACITY or len(per) < CAPACITY:
        b = next_batch()
        base.add(b)
        uni.add(b)
        per.add(b)
    # realistic priorities: spread over orders of magnitude, as |TD errors| are
    spread = rng.lognormal(0.0, 1.5, CAPACITY) + 1e-3
    per.update_priorities(np.arange(CAPACITY), spread)
    base.prio[:] = spread**ALPHA

    results["sample numpy baseline"] = best_rate(lambda: base.sample(SAMPLE_BATCH), SAMPLE_BATCH,
                                                 sample_steps, repeats)
    results["sample uniform"] = best_rate(lambda: uni.sample(SAMPLE_BATCH), SAMPLE_BATCH,
                                          sample_steps, repeats)
    results["sample prioritized"] = best_rate(lambda: per.sample(SAMPLE_BATCH, beta=BETA),
                                              SAMPLE_BATCH, sample_steps, repeats)
    results["sample naive prioritized"] = best_rate(
        lambda: base.sample_naive_prioritized(SAMPLE_BATCH), SAMPLE_BATCH, naive_steps, repeats)

    def per_loop() -> None:
        s = per.sample(SAMPLE_BATCH, beta=BETA)
        per.update_priorities(s["batch_indexes"], rng.random(SAMPLE_BATCH) + 0.01)

    def naive_loop() -> None:
        s = base.sample_naive_prioritized(SAMPLE_BATCH)
        # duplicates in idx: numpy keeps one of the writes, fine for a baseline
        base.prio[s["batch_indexes"]] = (rng.random(SAMPLE_BATCH) + 0.01) ** ALPHA

    results["sample+update prioritized"] = best_rate(per_loop, SAMPLE_BATCH, sample_steps,
                                                     repeats)
    results["sample+update naive"] = best_rate(naive_loop, SAMPLE_BATCH, naive_steps, repeats)

    print(f"replay buffer benchmark: capacity {CAPACITY:,}, add batch {ADD_BATCH}, "
          f"sample batch {SAMPLE_BATCH}, CartPole-like columns{' (quick)' if args.quick else ''}")
    print(f"{'figure':<28}{'transitions/s':>16}{'us/call':>10}")
    for name, rate in results.items():
        per_call = (ADD_BATCH if name.startswith("add") else SAMPLE_BATCH) / rate * 1e6
        print(f"{name:<28}{rate:>16,.0f}{per_call:>10.1f}")
    print("ratios:")
    ratios = [
        ("add uniform / numpy baseline", "add uniform", "add numpy baseline"),
        ("add prioritized / numpy baseline", "add prioritized", "add numpy baseline"),
        ("sample uniform / numpy baseline", "sample uniform", "sample numpy baseline"),
        ("sample prioritized / numpy baseline", "sample prioritized", "sample numpy baseline"),
        ("sample prioritized / naive prioritized", "sample prioritized",
         "sample naive prioritized"),
        ("sample+update prioritized / naive", "sample+update prioritized",
         "sample+update naive"),
    ]
    for label, num, den in ratios:
        print(f"  {label:<42}{results[num] / results[den]:>8.2f}x")


if __name__ == "__main__":
    main()
