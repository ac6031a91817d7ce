"""Run-directory outputs: ``config.yaml``, ``result.jsonl``, ``progress.csv`` and TensorBoard.

One :class:`RunLogger` per run directory::

    run_dir/
      config.yaml      # the resolved config, written once
      result.jsonl     # one JSON object per result, nested as given (strict JSON: NaN -> null)
      progress.csv     # one row per result: scalar values, nested keys flattened with "/"
      events.out.tfevents.*   # TensorBoard scalars (when tensorboard is installed)

CSV columns: the header is the union of all keys seen so far, in first-seen order. When a result
brings a new key (metrics often appear a few iterations in, e.g. the first finished episode),
the file is rewritten once with the wider header and earlier rows get empty cells for it; the
rewrite goes through a temp file and ``os.replace`` so a crash cannot leave a half-written CSV.

Every result is flushed to disk before :meth:`RunLogger.log` returns, so a killed run keeps all
its logs up to its last result.

Example::

    with RunLogger("runs/ppo", config_to_dict(cfg)) as logger:
        for _ in range(10):
            logger.log(algo.train())
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rldataflow.utils.config_sources import to_jsonable

__all__ = ["RunLogger", "flatten_dict"]

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.jsonl"
PROGRESS_FILE = "progress.csv"
# Looked up in order for the TensorBoard global step.
STEP_KEYS = ("env_steps_sampled", "counters/env_steps_sampled", "num_env_steps_sampled",
             "timesteps_total")


def flatten_dict(d: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level, joining keys with ``sep``.

    Example::

        flatten_dict({"info": {"learner": {"loss": 0.5}}, "iter": 3})
        # {'info/learner/loss': 0.5, 'iter': 3}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, sep, key + sep))
        else:
            out[key] = v
    return out


class RunLogger:
    """Writes a run's config and results to ``run_dir`` (see the module docstring for files).

    ``resume=True`` appends to existing ``result.jsonl`` / ``progress.csv`` (keeping their
    header) and leaves an existing ``config.yaml`` as it is; otherwise they are truncated.
    ``tensorboard=False`` skips TensorBoard; if it is wanted but cannot be imported, a warning is
    issued once and the other files are still written.

    Example::

        logger = RunLogger("runs/ppo", {"lr": 3e-4}, resume=False)
        logger.log({"training_iteration": 1, "env_steps_sampled": 1024,
                    "episode_return_mean": 21.5, "info": {"learner": {"loss": 0.3}}})
        logger.close()
    """

    def __init__(self, run_dir: str | os.PathLike[str], config: Any = None, *,
                 resume: bool = False, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self._closed = False
        self._num_logged = 0

        config_file = self.run_dir / CONFIG_FILE
        if config is not None and not (resume and config_file.exists()):
            text = yaml.safe_dump(to_jsonable(config), sort_keys=False, default_flow_style=False)
            _write_atomic(config_file, text)

        mode = "a" if resume else "w"
        self._jsonl = open(self.run_dir / RESULT_FILE, mode, encoding="utf-8")
        self._csv_path = self.run_dir / PROGRESS_FILE
        self._columns: list[str] = []
        if resume and self._csv_path.exists():
            self._columns = _read_csv_header(self._csv_path)
        self._csv = open(self._csv_path, mode, encoding="utf-8", newline="")
        self._csv_writer: csv.DictWriter | None = None
        if self._columns:
            self._csv_writer = self._make_writer(self._csv)

        self._tb: Any = None
        self._tb_wanted = tensorboard

    # -- public ----------------------------------------------------------------------------

    def log(self, result: Mapping[str, Any]) -> None:
        """Append one result to ``result.jsonl``, ``progress.csv`` and TensorBoard, then flush.

        Example::

            logger.log({"training_iteration": 2, "episode_return_mean": 40.0})
        """
        if self._closed:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed")
        safe = to_jsonable(dict(result))
        # NaN and infinities are not JSON: other readers (jq, JSON.parse, pandas) reject them
        self._jsonl.write(json.dumps(_strict_json(safe), allow_nan=False) + "\n")
        self._jsonl.flush()

        flat = flatten_dict(safe)
        self._write_csv_row(flat)
        self._write_tensorboard(flat)
        self._num_logged += 1

    def close(self) -> None:
        """Flush and close all files (idempotent).

        Example::

            logger.close()
        """
        if self._closed:
            return
        self._closed = True
        for fh in (self._jsonl, self._csv):
            try:
                fh.close()
            except OSError:
                pass
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() still flushes
        try:
            self.close()
        except Exception:
            pass

    # -- csv -------------------------------------------------------------------------------

    def _make_writer(self, fh: io.TextIOBase) -> csv.DictWriter:
        return csv.DictWriter(fh, fieldnames=self._columns, restval="", extrasaction="ignore")

    def _write_csv_row(self, flat: dict[str, Any]) -> None:
        row = {k: _csv_cell(v) for k, v in flat.items()}
        new = [k for k in row if k not in self._columns]
        if self._csv_writer is None:
            self._columns = list(row)
            self._csv_writer = self._make_writer(self._csv)
            self._csv_writer.writeheader()
        elif new:
            self._widen_csv(new)
        self._csv_writer.writerow(row)
        self._csv.flush()

    def _widen_csv(self, new_columns: list[str]) -> None:
        """Rewrite progress.csv with the union header; earlier rows get empty new cells."""
        self._csv.close()
        with open(self._csv_path, encoding="utf-8", newline="") as fh:
            old_rows = list(csv.DictReader(fh))
        self._columns = self._columns + new_columns
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old_rows)
        _write_atomic(self._csv_path, buf.getvalue())
        self._csv = open(self._csv_path, "a", encoding="utf-8", newline="")
        self._csv_writer = self._make_writer(self._csv)

    # -- tensorboard -----------------------------------------------------------------------

    def _write_tensorboard(self, flat: dict[str, Any]) -> None:
        if not self._tb_wanted:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as e:  # ImportError, or a broken tensorboard install
                warnings.warn(f"TensorBoard logging disabled: cannot import it ({e})",
                              RuntimeWarning, stacklevel=3)
                self._tb_wanted = False
                return
            self._tb = SummaryWriter(log_dir=str(self.run_dir))
        step = self._global_step(flat)
        for key, value in flat.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, numbers.Real):
                self._tb.add_scalar(key, float(value), global_step=step)
        self._tb.flush()

    def _global_step(self, flat: dict[str, Any]) -> int:
        for key in STEP_KEYS:
            value = flat.get(key)
            if isinstance(value, numbers.Real) and not isinstance(value, bool) \
                    and math.isfinite(value):
                return int(value)
        return self._num_logged


def _strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        # histograms and the like: keep them readable in one cell
        return json.dumps(value, allow_nan=True)
    return value


def _read_csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
