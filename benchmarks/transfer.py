"""MB/s of sending a large uint8 SampleBatch between processes (process runtime): out-of-band
pickle buffers (the default) vs the old in-band pickling, measured in the same run.

Each mode runs in a fresh driver process (``RLDATAFLOW_WIRE_OUT_OF_BAND=1`` / ``=0``, read by
the driver and its actors). Directions: actor -> driver (``sample()``-like: the actor returns
a batch it holds) and driver -> actor (an ``add(batch)``-like call returning the row count).
A batch is ``--mb`` MB of 84x84x4 frames (obs only) plus rewards; each figure is the best of
``--repeats`` transfers (the least disturbed by other load).

Usage::

    python benchmarks/transfer.py               # 100 MB batches
    python benchmarks/transfer.py --quick       # 20 MB, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

FRAME = 84 * 84 * 4


class Holder:
    """An actor holding one batch."""

    def __init__(self, rows: int) -> None:
        from rldataflow.data import SampleBatch

        rng = np.random.default_rng(0)
        self.batch = SampleBatch({"obs": rng.integers(0, 256, (rows, 84, 84, 4), np.uint8),
                                  "rewards": np.ones(rows, np.float32)})

    def get(self):
        return self.batch

    def put(self, batch) -> int:
        return int(batch["obs"][-1, 0, 0, 0]) + batch.count


def _run_mode(mb: float, repeats: int) -> dict:
    from rldataflow.data import SampleBatch
    from rldataflow.runtime import get_runtime

    rows = int(mb * 1e6 / FRAME)
    nbytes = rows * FRAME
    rt = get_runtime("process")
    try:
        actor = rt.create_actor(Holder, rows)
        local = SampleBatch({"obs": np.ones((rows, 84, 84, 4), np.uint8),
                             "rewards": np.ones(rows, np.float32)})
        get_s, put_s = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            got = actor.call("get").result(timeout=600)
            get_s.append(time.perf_counter() - t0)
            assert got["obs"].dtype == np.uint8 and got.count == rows
            del got
            t0 = time.perf_counter()
            assert actor.call("put", local).result(timeout=600) == rows + 1
            put_s.append(time.perf_counter() - t0)
    finally:
        rt.shutdown()
    return {"mb": nbytes / 1e6, "get": nbytes / 1e6 / min(get_s),
            "put": nbytes / 1e6 / min(put_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeats = 20.0, 3
    if args.child:
        print(json.dumps(_run_mode(args.mb, args.repeats)))
        return
    results = {}
    for name, flag in (("in-band (old)", "0"), ("out-of-band", "1")):
        env = dict(os.environ, RLDATAFLOW_WIRE_OUT_OF_BAND=flag)
        out = subprocess.run([sys.executable, __file__, "--child", "--mb", str(args.mb),
                              "--repeats", str(args.repeats)],
                             env=env, check=True, capture_output=True, text=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"batch: {results['out-of-band']['mb']:.0f} MB of uint8 84x84x4 frames, best of "
          f"{args.repeats}")
    print(f"{'path':<16}{'actor->driver MB/s':>20}{'driver->actor MB/s':>20}")
    for name, r in results.items():
        print(f"{name:<16}{r['get']:>20.0f}{r['put']:>20.0f}")
    old, new = results["in-band (old)"], results["out-of-band"]
    print(f"speed-up: actor->driver {new['get'] / old['get']:.2f}x, "
          f"driver->actor {new['put'] / old['put']:.2f}x")


if __name__ == "__main__":
    main()
