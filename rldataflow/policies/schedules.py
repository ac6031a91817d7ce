"""Piecewise-linear schedules of a hyperparameter over env steps (learning rate, entropy bonus).

A schedule is a list of ``[env_steps, value]`` points: the value is interpolated linearly between
points and held constant before the first and after the last, as RLlib's ``lr_schedule`` and
SB3's linear schedules do. Annealing the learning rate to zero is one of PPO's standard
"code-level optimizations" (Engstrom et al. 2020, arXiv:2005.12729; Huang et al. 2022, "The 37
Implementation Details of PPO").

Example::

    >>> lr = PiecewiseSchedule([[0, 3e-4], [1_000_000, 0.0]])
    >>> lr(0), lr(500_000), lr(2_000_000)
    (0.0003, 0.00015, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PiecewiseSchedule", "check_schedule"]


def check_schedule(key: str, points: Sequence[Sequence[float]] | None) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``points`` is a valid schedule (or None)."""
    if points is None:
        return
    if len(points) == 0:
        raise ValueError(f"config key {key!r}: a schedule needs at least one [env_steps, value] "
                         "point")
    last = None
    for point in points:
        if len(point) != 2:
            raise ValueError(f"config key {key!r}: each point is [env_steps, value], got "
                             f"{list(point)}")
        step = float(point[0])
        if step < 0 or (last is not None and step < last):
            raise ValueError(f"config key {key!r}: env_steps must be >= 0 and non-decreasing, "
                             f"got {[p[0] for p in points]}")
        last = step


class PiecewiseSchedule:
    """``schedule(t)``: the value at ``t`` env steps (see the module docs)."""

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        check_schedule("schedule", points)
        self.points = [(float(t), float(v)) for t, v in points]

    def __call__(self, t: float) -> float:
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
            if t < t1:
                return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        return pts[-1][1]

    def __repr__(self) -> str:
        return f"PiecewiseSchedule({[list(p) for p in self.points]})"
