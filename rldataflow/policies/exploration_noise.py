"""Exploration noise for deterministic continuous-action policies (DDPG, TD3).

Noise is added to the actor's action in ``[-1, 1]`` (before the map to the env's bounds) and the
sum is clipped to ``[-1, 1]``; a ``scale`` of 0.1 is thus 5% of the action range.

* :class:`GaussianNoise`: ``N(0, scale^2)`` i.i.d. per step (Fujimoto et al. 2018, TD3: 0.1).
* :class:`OrnsteinUhlenbeckNoise`: the temporally correlated process of Lillicrap et al. 2015
  (DDPG, section 7: ``theta = 0.15``, ``sigma = 0.2``), discretized as
  ``x <- x + theta (mu - x) dt + sigma sqrt(dt) N(0, 1)``, one independent process per env row.
  The paper restarts the process at each episode; a policy does not see episode boundaries,
  so here it runs on across them (the process is mean-reverting, it forgets its state within
  about ``1 / (theta dt)`` steps).

Both draw from a ``numpy.random.Generator`` the caller owns (the policy's seeded one), and a
scale may be one number or one per env row (Ape-X style per-actor exploration).

Example::

    >>> rng = np.random.default_rng(0)
    >>> noise = OrnsteinUhlenbeckNoise(theta=0.15, sigma=0.2)
    >>> noise(np.zeros((2, 1)), rng).shape
    (2, 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["GaussianNoise", "OrnsteinUhlenbeckNoise", "make_noise"]


def _column(scale: float | np.ndarray, n: int) -> float | np.ndarray:
    """A per-row scale as a ``(n, 1)`` column (broadcasts over action dimensions)."""
    if np.ndim(scale) == 0:
        return float(scale)
    arr = np.asarray(scale, np.float64).reshape(-1)
    if len(arr) != n:  # per-env scales, but a batch of another size (e.g. evaluation)
        return float(arr.mean())
    return arr[:, None]


class GaussianNoise:
    """``a + N(0, scale^2)`` per action dimension, i.i.d. over steps."""

    def __init__(self, scale: float | np.ndarray = 0.1) -> None:
        self.scale = scale

    def __call__(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = _column(self.scale, len(actions))
        return actions + scale * rng.standard_normal(actions.shape)

    def __repr__(self) -> str:
        return f"GaussianNoise(scale={self.scale})"


class OrnsteinUhlenbeckNoise:
    """``a + x`` with ``x`` an Ornstein-Uhlenbeck process per env row (see the module doc)."""

    def __init__(self, theta: float = 0.15, sigma: float | np.ndarray = 0.2, dt: float = 1.0,
                 mu: float = 0.0) -> None:
        self.theta, self.sigma, self.dt, self.mu = float(theta), sigma, float(dt), float(mu)
        self.state: np.ndarray | None = None

    def __call__(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.state is None or self.state.shape != actions.shape:
            self.state = np.full(actions.shape, self.mu)
        sigma = _column(self.sigma, len(actions))
        x = self.state
        x = x + self.theta * (self.mu - x) * self.dt \
            + sigma * math.sqrt(self.dt) * rng.standard_normal(actions.shape)
        self.state = x
        return actions + x

    def reset(self) -> None:
        self.state = None

    def __repr__(self) -> str:
        return f"OrnsteinUhlenbeckNoise(theta={self.theta}, sigma={self.sigma}, dt={self.dt})"


def make_noise(kind: str, scale: Any, theta: float = 0.15) -> GaussianNoise | \
        OrnsteinUhlenbeckNoise:
    """``"gaussian"`` (``scale`` is the std) or ``"ou"`` (``scale`` is sigma)."""
    if kind == "gaussian":
        return GaussianNoise(scale)
    if kind == "ou":
        return OrnsteinUhlenbeckNoise(theta=theta, sigma=scale)
    raise ValueError(f"unknown exploration noise {kind!r}; choose 'gaussian' or 'ou'")
