"""Learning curves from run directories (``rldataflow plot``): training return and, where a
run evaluated (``evaluation_interval``), its evaluation return, against env steps."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_curve(run_dir: str | os.PathLike[str], x_key: str = "env_steps_sampled",
               y_key: str = "episode_return_mean") -> tuple[list[float], list[float]]:
    """The (x, y) points of one run's ``progress.csv`` (rows without a y value are skipped)."""
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        raise FileNotFoundError(f"no progress.csv in {run_dir} (is it a run directory?)")
    xs, ys = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [k for k in (x_key, y_key) if k not in (reader.fieldnames or [])]
        if missing:
            raise KeyError(f"{path} has no column {missing[0]!r}; columns: "
                           f"{', '.join(reader.fieldnames or [])}")
        for row in reader:
            try:
                x, y = float(row[x_key]), float(row[y_key])
            except (TypeError, ValueError):
                continue
            if not math.isnan(y):
                xs.append(x)
                ys.append(y)
    return xs, ys


#: the evaluation curve drawn beside ``episode_return_mean`` when a run has it
EVALUATION_KEY = "evaluation/episode_return_mean"


def has_column(run_dir: str | os.PathLike[str], key: str) -> bool:
    """Whether ``run_dir/progress.csv`` has the column ``key``."""
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        return False
    with open(path, newline="") as fh:
        return key in (next(csv.reader(fh), None) or [])


def build_figure(run_dirs: Sequence[str | os.PathLike[str]],
                 x_key: str = "env_steps_sampled", y_key: str = "episode_return_mean",
                 title: str | None = None, evaluation: bool = True) -> Any:
    """The matplotlib figure of :func:`plot_runs`: one line per run labelled by its directory
    name, plus (``evaluation``, when ``y_key`` is the training return and the run evaluated)
    a dashed ``<run> (evaluation)`` line of ``evaluation/episode_return_mean``.

    Example::

        fig = build_figure(["runs/ppo"])
        [line.get_label() for line in fig.axes[0].lines]   # ['ppo', 'ppo (evaluation)']
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'rldataflow[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for run in run_dirs:
        xs, ys = read_curve(run, x_key, y_key)
        (line,) = ax.plot(xs, ys, label=Path(run).name, linewidth=1.6)
        if evaluation and y_key == "episode_return_mean" and has_column(run, EVALUATION_KEY):
            ex, ey = read_curve(run, x_key, EVALUATION_KEY)
            ax.plot(ex, ey, label=f"{Path(run).name} (evaluation)", linewidth=1.6,
                    linestyle="--", marker="o", markersize=3, color=line.get_color())
    ax.set_xlabel(x_key.replace("_", " "))
    ax.set_ylabel(y_key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_runs(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
              x_key: str = "env_steps_sampled", y_key: str = "episode_return_mean",
              title: str | None = None, evaluation: bool = True) -> Path:
    """Plot ``y_key`` against ``x_key`` for each run into one PNG (or SVG/PDF by suffix), with
    the evaluation curves where runs have them (see :func:`build_figure`).

    Example: ``plot_runs(["runs/ppo_a", "runs/ppo_b"], "curves.png")``
    """
    import matplotlib.pyplot as plt

    fig = build_figure(run_dirs, x_key, y_key, title, evaluation)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
