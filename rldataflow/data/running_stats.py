"""``RunningMeanStd``: count, mean and sum of squared deviations of a stream of vectors,
mergeable across workers.

ARS V2 normalizes observations by the mean and standard deviation of *all* states seen so far
by any worker (Mania et al. 2018, arXiv:1803.07055, Algorithm 2, line 8). Each worker keeps the
statistics of the states it saw since its last report; the driver merges them with the
pairwise update of Chan, Golub and LeVeque (1979), which is exact:

    n = n_a + n_b,   d = mean_b - mean_a,
    mean = mean_a + d * n_b / n,   M2 = M2_a + M2_b + d^2 * n_a * n_b / n.

Example::

    stats = RunningMeanStd((3,))
    stats.push(np.random.randn(100, 3))
    total = RunningMeanStd((3,)).merge(stats)
    total.mean, total.std
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["RunningMeanStd"]


class RunningMeanStd:
    """Mean and variance of vectors of ``shape``, updated by :meth:`push` and :meth:`merge`."""

    def __init__(self, shape: tuple[int, ...] | int) -> None:
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        self.count = 0
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.m2 = np.zeros(self.shape, dtype=np.float64)

    def push(self, rows: np.ndarray) -> RunningMeanStd:
        """Add a batch of rows (shape ``(B, *shape)``); returns self."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, *self.shape)
        if len(rows) == 0:
            return self
        other = RunningMeanStd(self.shape)
        other.count = len(rows)
        other.mean = rows.mean(axis=0)
        other.m2 = ((rows - other.mean) ** 2).sum(axis=0)
        return self.merge(other)

    def merge(self, other: RunningMeanStd) -> RunningMeanStd:
        """Fold ``other``'s statistics into these (Chan et al.); returns self."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge statistics of shape {other.shape} into {self.shape}")
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        self.count = n
        return self

    @property
    def var(self) -> np.ndarray:
        """Population variance (ones before any data, so normalizing is the identity)."""
        if self.count < 2:
            return np.ones(self.shape, dtype=np.float64)
        return self.m2 / self.count

    def std(self, min_std: float = 1e-2) -> np.ndarray:
        """Standard deviation, at least ``min_std`` (a constant feature is not blown up)."""
        return np.maximum(np.sqrt(self.var), min_std)

    def state_dict(self) -> dict[str, Any]:
        return {"count": int(self.count), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean = np.asarray(state["mean"], dtype=np.float64).reshape(self.shape).copy()
        self.m2 = np.asarray(state["m2"], dtype=np.float64).reshape(self.shape).copy()

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunningMeanStd:
        stats = cls(np.shape(state["mean"]))
        stats.load_state_dict(state)
        return stats

    def __repr__(self) -> str:
        return f"RunningMeanStd(shape={self.shape}, count={self.count})"
