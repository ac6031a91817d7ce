"""Regression run of the tuned example configs (``rldataflow/tuned/*.yaml``).

Each chosen config runs the real command, ``rldataflow train --config NAME --seed S``, as a
subprocess, with the budget of its ``stop:`` section. From the run's ``progress.csv`` it reports
the best mean return reached (``episode_return_mean``, the mean over the last 100 episodes),
the env steps and wall time at which the config's target return (``stop: return``) was first
reached, and whether that happened within the budget; then it writes a Markdown table and a PNG
of the learning curves (one panel per config, target drawn as a line).

Usage::

    python benchmarks/regression.py                        # every tuned config
    python benchmarks/regression.py --only ppo-cartpole dqn-cartpole --out /tmp/regression
    python benchmarks/regression.py --list

Writes ``OUT/regression.md`` and ``OUT/regression.png`` (``--out`` defaults to ``docs/``).
Exit status 1 if any config missed its target.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rldataflow.tuned import tuned_configs


def run_config(name: str, path: Path, seed: int, run_dir: Path) -> dict:
    spec = yaml.safe_load(path.read_text())
    stop = spec.get("stop") or {}
    target = stop.get("return")
    cmd = [sys.executable, "-m", "rldataflow", "train", "--config", str(path), "--seed",
           str(seed), "--out", str(run_dir), "--quiet", "--checkpoint-every", "0"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"name": name, "error": " | ".join(tail), "wall_s": wall}
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    steps = [int(float(r["env_steps_sampled"])) for r in rows]
    returns = [float(r["episode_return_mean"] or "nan") for r in rows]
    times = [float(r.get("time_since_start_s") or r["time_total_s"]) for r in rows]
    solved_at = next((i for i, v in enumerate(returns) if target is not None and v >= target),
                     None)
    finite = [v for v in returns if not math.isnan(v)]
    return {
        "name": name, "algorithm": spec.get("algorithm"), "env": spec.get("env"),
        "target": target, "budget": stop.get("steps"),
        "best": max(finite) if finite else math.nan,
        "final": finite[-1] if finite else math.nan,
        "steps_to_target": steps[solved_at] if solved_at is not None else None,
        "time_to_target_s": times[solved_at] if solved_at is not None else None,
        "env_steps": steps[-1] if steps else 0, "wall_s": wall,
        "expected": (spec.get("expected") or {}).get("return"),
        "curve": (steps, returns),
    }


def table(results: list[dict], seed: int) -> str:
    lines = [
        f"Seed {seed}; one run per config, `python benchmarks/regression.py` on "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| config | target | budget (steps) | best return | steps to target | time to target |"
        " wall time | published (expected) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | | | | | | {r['wall_s']:.0f} s | | error: "
                         f"{r['error'][:80]} |")
            continue
        ok = r["steps_to_target"] is not None
        lines.append(
            f"| {r['name']} | {r['target']} | {r['budget'] or '-':,} | {r['best']:.1f} | "
            f"{r['steps_to_target'] or '-':,} | "
            f"{(str(round(r['time_to_target_s'])) + ' s') if ok else '-'} | {r['wall_s']:.0f} s | "
            f"{r['expected'] if r['expected'] is not None else '-'} | "
            f"{'reached' if ok else 'MISSED'} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('note: no PNG (pip install "rldataflow[plot]")', file=sys.stderr)
        return None
    ok = [r for r in results if "curve" in r]
    if not ok:
        return None
    cols = min(3, len(ok))
    rows = math.ceil(len(ok) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, ok, strict=False):
        steps, returns = r["curve"]
        ax.plot(steps, returns, label="episode_return_mean")
        if r["target"] is not None:
            ax.axhline(r["target"], color="grey", linestyle="--", label=f"target {r['target']}")
        ax.set_title(r["name"], fontsize=10)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ok):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="tuned configs to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs", help="directory of regression.md/.png")
    parser.add_argument("--list", action="store_true", help="list the tuned configs")
    args = parser.parse_args()
    configs = tuned_configs()
    if args.list:
        print("\n".join(configs))
        return 0
    names = args.only or list(configs)
    unknown = [n for n in names if n not in configs]
    if unknown:
        print(f"error: unknown tuned config(s) {unknown}; see --list", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"running {name} ...", flush=True)
            r = run_config(name, configs[name], args.seed, Path(tmp) / name)
            results.append(r)
            if "error" in r:
                print(f"  error: {r['error']}")
            else:
                print(f"  best {r['best']:.1f} (target {r['target']}), "
                      f"{r['env_steps']:,} steps, {r['wall_s']:.0f} s, target at "
                      f"{r['steps_to_target'] or '-'} steps", flush=True)
    text = table(results, args.seed)
    (out / "regression.md").write_text(text)
    png = plot(results, out / "regression.png")
    print(text)
    print(f"wrote {out / 'regression.md'}" + (f" and {png}" if png else ""))
    return 0 if all(r.get("steps_to_target") is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
