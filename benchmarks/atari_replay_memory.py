"""Replay memory of Atari-shaped transitions (obs/next_obs uint8 84x84x4): plain vs frame-dedup.

Each buffer is filled in a fresh process (so peak RSS is its own) from ``FrameStackDummyEnv``
streams (8 envs, fragments of 25 steps, episodes of 20-200 steps, n-step 3 like DQN) until it
holds ``--rows`` transitions, then sampled once. Printed per buffer: peak RSS of the process
minus its RSS before the buffer existed, bytes per stored row, frames stored per row, and the
add rate. A plain buffer of 1M rows needs 1M x 2 x 28,224 B = 56 GB, which no small machine
holds: it is measured at ``--plain-rows`` and its per-row figure scaled to 1M (printed as an
estimate); the dedup buffer is measured at ``--rows`` and scaled the same way when that is
below 1M. The ratio printed is of the two per-row figures, both measured in this run.

Usage::

    python benchmarks/atari_replay_memory.py                       # rows=250k, plain 20k
    python benchmarks/atari_replay_memory.py --rows 1000000        # needs ~8 GB free
    python benchmarks/atari_replay_memory.py --quick               # seconds
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np

FULL = 1_000_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _fill(kind: str, rows: int, out: mp.Queue) -> None:
    from rldataflow.data import SampleBatch
    from rldataflow.data.frame_stack_buffer import PrioritizedFrameStackReplayBuffer
    from rldataflow.envs.frame_stack_env import FrameStackDummyEnv
    from rldataflow.policies.postprocessing import compute_nstep

    n_envs, frag = 8, 25
    envs = [FrameStackDummyEnv(size=84, min_len=20, max_len=200) for _ in range(n_envs)]
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    base = _rss_bytes()
    buf = PrioritizedFrameStackReplayBuffer(rows, seed=0, dedup="on" if kind == "dedup" else "off")
    add_s, added = 0.0, 0
    eps = list(range(n_envs))
    while added < rows:
        parts = []
        for i, env in enumerate(envs):
            o, nx, r, te, tr = [], [], [], [], []
            for _ in range(frag):
                nxt, rew, term, trunc, _ = env.step(0)
                o.append(obs[i]), nx.append(nxt), r.append(rew), te.append(term), tr.append(trunc)
                obs[i] = env.reset()[0] if term or trunc else nxt
            parts.append(SampleBatch({"obs": np.array(o), "next_obs": np.array(nx),
                                      "rewards": np.array(r, np.float32),
                                      "terminateds": np.array(te), "truncateds": np.array(tr),
                                      "actions": np.zeros(frag, np.int64),
                                      "eps_id": np.full(frag, eps[i]),
                                      "env_id": np.full(frag, i)}))
            eps[i] += n_envs * int(bool(te[-1] or tr[-1]))
        batch = compute_nstep(SampleBatch.concat_samples(parts), 3, 0.99)
        del batch["eps_id"], batch["env_id"]
        t0 = time.perf_counter()
        buf.add(batch)
        add_s += time.perf_counter() - t0
        added += batch.count
        del batch, parts
    buf.sample(512)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # peak of the whole process minus the RSS before the buffer (imports, envs)
    out.put({"kind": kind, "rows": len(buf), "peak": peak - base,
             "frames_per_row": buf.num_frames_stored / max(added, 1) if kind == "dedup" else 8,
             "add_rows_per_s": added / add_s})


def measure(kind: str, rows: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_fill, args=(kind, rows, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=250_000, help="dedup buffer rows")
    ap.add_argument("--plain-rows", type=int, default=20_000, help="plain buffer rows")
    ap.add_argument("--quick", action="store_true", help="rows=20k, plain-rows=5k")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.plain_rows = 20_000, 5_000
    plain = measure("plain", args.plain_rows)
    dedup = measure("dedup", args.rows)
    print(f"{'buffer':<8}{'rows':>10}{'peak RSS MB':>13}{'B/row':>10}{'frames/row':>12}"
          f"{'add rows/s':>12}{'1M rows GB':>12}")
    per_row = {}
    for r in (plain, dedup):
        per_row[r["kind"]] = r["peak"] / r["rows"]
        est = "" if r["rows"] >= FULL else " (est.)"
        print(f"{r['kind']:<8}{r['rows']:>10}{r['peak'] / 2**20:>13.0f}{per_row[r['kind']]:>10.0f}"
              f"{r['frames_per_row']:>12.2f}{r['add_rows_per_s']:>12.0f}"
              f"{per_row[r['kind']] * FULL / 1e9:>10.1f}{est}")
    print(f"plain / dedup bytes per row: {per_row['plain'] / per_row['dedup']:.1f}x")


if __name__ == "__main__":
    main()
