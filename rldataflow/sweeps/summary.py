"""The record of a sweep's trials and the table printed at its end (``sweep.json`` too)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rldataflow.utils.config_sources import to_jsonable

SUMMARY_FILE = "sweep.json"


@dataclass
class TrialRecord:
    """One trial: its number, swept ``params``, ``status`` (complete / pruned / failed /
    interrupted), the best value of the sweep metric over its iterations, its run directory."""

    number: int
    params: dict[str, Any]
    status: str = "complete"
    best: float = math.nan
    iterations: int = 0
    run_dir: str = ""
    error: str = ""
    history: list[float] = field(default_factory=list)


def best_of(values: list[float], mode: str) -> float:
    """The best finite value (``max`` or ``min``), NaN if there is none."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan
    return max(finite) if mode == "max" else min(finite)


def best_trial(trials: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The trial with the best metric (pruned trials count with what they reached)."""
    scored = [t for t in trials if math.isfinite(t.best)]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t.best)


def write_summary(sweep_dir: Path, trials: list[TrialRecord], metric: str, mode: str,
                  backend: str) -> Path:
    best = best_trial(trials, mode)
    data = {"metric": metric, "mode": mode, "backend": backend,
            "best_trial": best.number if best else None,
            "trials": [asdict(t) for t in trials]}
    path = sweep_dir / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=True) + "\n")
    tmp.replace(path)
    return path


def print_summary(trials: list[TrialRecord], metric: str, mode: str, stream: TextIO,
                  sweep_dir: Path) -> None:
    """A rich table of the trials (params, best metric, status, run dir) and the best one."""
    from rich.console import Console
    from rich.table import Table

    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    best = best_trial(trials, mode)
    table = Table(title=f"sweep: best {metric} ({mode}) per trial")
    table.add_column("trial", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column(f"best {metric}", justify="right")
    table.add_column("iters", justify="right")
    table.add_column("status")
    table.add_column("run dir", no_wrap=True)
    for t in trials:
        mark = " *" if best is not None and t is best else ""
        table.add_row(f"{t.number}{mark}", *(format_value(t.params.get(k)) for k in keys),
                      "n/a" if not math.isfinite(t.best) else f"{t.best:.4g}",
                      str(t.iterations), t.status + (f": {t.error}" if t.error else ""),
                      t.run_dir)
    # Wide enough for whole run directories: the table is only as wide as its cells.
    console = Console(file=stream, width=400, force_terminal=False, no_color=True)
    console.print(table)
    if best is None:
        print(f"no trial reported {metric}", file=stream)
    else:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
        print(f"best trial: {best.number} ({params}) {metric}={best.best:.4g} "
              f"run dir: {best.run_dir}", file=stream)
    print(f"sweep directory: {sweep_dir}", file=stream)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
