"""V-trace off-policy targets (Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with
Importance Weighted Actor-Learner Architectures", ICML, arXiv:1802.01561), pure numpy.

For a trajectory ``x_s, a_s, r_s`` sampled by a behaviour policy ``mu`` and a target policy
``pi`` (the learner's), with truncated importance weights ``rho_t = min(rho_bar, pi/mu)`` and
``c_i = min(c_bar, pi/mu)``, the n-step V-trace target of ``V(x_s)`` is (eq. 1)::

    v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^(t-s) (prod_{i=s}^{t-1} c_i) delta_t
    delta_t = rho_t (r_t + gamma V(x_{t+1}) - V(x_t))

computed backwards as ``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``; and the
policy-gradient advantage (section 4.2) is::

    A_s = rho^pg_s (r_s + gamma_s v_{s+1} - V(x_s))        rho^pg_s = min(rho_bar_pg, pi/mu)

The rows are a flat, time-ordered run of steps that may hold several trajectories. ``ends[s]``
marks a step after which the next row does not continue the same trajectory; there the tail
``v_{s+1}`` is the bootstrap ``V(x_{s+1})`` itself. The boundary rules live in two inputs:

* ``discounts[s] = gamma * (1 - terminated[s])``: a **terminated** episode has no future;
* ``next_values[s] = V(x_{s+1})``: inside a segment the next row's value; at a **truncation** the
  value of the final observation; at a **fragment cut** the value of the next observation; all
  computed with the learner's *current* value network (the behaviour policy's ``vf_preds`` and
  bootstrap values would be stale: that is the point of recomputing them on the learner).

With ``pi == mu`` and ``rho_bar = c_bar = 1`` the targets are the discounted returns bootstrapped
at segment ends (n-step returns, TD(lambda=1)); ``tests/algorithms/test_vtrace.py`` checks that
and a hand-computed trajectory holding a termination, a truncation and a fragment cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["VTraceReturns", "next_values_from", "trajectory_ends", "vtrace"]


class VTraceReturns(NamedTuple):
    """``vs``: value targets; ``pg_advantages``: policy-gradient advantages (already weighted
    by the clipped ``rho^pg``); ``clipped_rhos``: ``min(rho_bar, pi/mu)``. All ``float32``."""

    vs: np.ndarray
    pg_advantages: np.ndarray
    clipped_rhos: np.ndarray


def _clip(x: np.ndarray, threshold: float | None) -> np.ndarray:
    return x if threshold is None else np.minimum(threshold, x)


def vtrace(
    log_rhos: np.ndarray,
    discounts: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    ends: np.ndarray,
    clip_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    trace_lambda: float = 1.0,
) -> VTraceReturns:
    """V-trace targets and advantages over flat rows (see the module docs for the rules).

    Args:
        log_rhos: ``log pi(a_s|x_s) - log mu(a_s|x_s)`` per row.
        discounts: ``gamma`` per row, ``0`` where the episode terminated.
        rewards: ``r_s``.
        values: ``V(x_s)`` under the current value network.
        next_values: ``V(x_{s+1})`` (see the module docs; ignored where ``discounts == 0``).
        ends: True where the next row starts another trajectory (the last row always ends one).
        clip_rho_threshold: ``rho_bar`` (``None``: no clipping).
        clip_c_threshold: ``c_bar`` (``None``: no clipping).
        clip_pg_rho_threshold: ``rho_bar`` of the policy-gradient weights.
        trace_lambda: multiplies the traces, ``c_s = lambda * min(c_bar, pi/mu)`` (the
            paper's remark in section 4.1 / RLlib's ``lambda``; 1.0 is plain V-trace).

    Example (on-policy, one step, terminated: the target is the reward)::

        >>> out = vtrace(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1),
        ...              np.ones(1, bool))
        >>> out.vs.tolist(), out.pg_advantages.tolist()
        ([1.0], [1.0])
    """
    log_rhos = np.asarray(log_rhos, dtype=np.float64)
    n = len(log_rhos)
    arrays = {"discounts": discounts, "rewards": rewards, "values": values,
              "next_values": next_values, "ends": ends}
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"vtrace: {name} has {len(arr)} rows, log_rhos has {n}")
    rhos = np.exp(log_rhos)
    clipped_rhos = _clip(rhos, clip_rho_threshold)
    cs = trace_lambda * _clip(rhos, clip_c_threshold)
    disc = np.asarray(discounts, dtype=np.float64)
    rew = np.asarray(rewards, dtype=np.float64)
    val = np.asarray(values, dtype=np.float64)
    nxt = np.asarray(next_values, dtype=np.float64)
    end = np.asarray(ends, dtype=bool).copy()
    if n:
        end[-1] = True
    # V(x_{s+1}) as the recursion sees it: the next row's value inside a segment.
    boot = nxt.copy()
    if n > 1:
        inside = ~end[:-1]
        boot[:-1][inside] = val[1:][inside]
    deltas = clipped_rhos * (rew + disc * boot - val)
    # Backward pass over Python floats (10x faster than per-element numpy indexing).
    d, g, e = deltas.tolist(), (disc * cs).tolist(), end.tolist()
    diff = [0.0] * n  # v_s - V(x_s)
    acc = 0.0
    for s in range(n - 1, -1, -1):
        acc = d[s] + (0.0 if e[s] else g[s] * acc)
        diff[s] = acc
    vs = val + np.asarray(diff, dtype=np.float64)
    # v_{s+1}: the next row's target inside a segment, the bootstrap value at a segment end.
    vs_next = boot.copy()
    if n > 1:
        inside = ~end[:-1]
        vs_next[:-1][inside] = vs[1:][inside]
    pg_rhos = _clip(rhos, clip_pg_rho_threshold)
    pg_adv = pg_rhos * (rew + disc * vs_next - val)
    return VTraceReturns(vs.astype(np.float32), pg_adv.astype(np.float32),
                         clipped_rhos.astype(np.float32))


def trajectory_ends(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows after which the next row does not continue the same trajectory.

    A row ends one when its episode terminated or was truncated, when ``env_id`` or ``eps_id``
    changes at the next row, when the step counter ``t`` does not go on by one (two fragments
    of one episode that are not consecutive, e.g. a replayed batch concatenated after a new
    one), and at the last row. Columns that are missing are not used.

    Example::

        >>> trajectory_ends({"terminateds": np.array([False, True, False, False]),
        ...                  "t": np.array([3, 4, 0, 7])}).tolist()
        [False, True, True, True]
    """
    term = np.asarray(columns["terminateds"], dtype=bool)
    n = len(term)
    ends = term.copy()
    if "truncateds" in columns:
        ends |= np.asarray(columns["truncateds"], dtype=bool)
    if n > 1:
        for key in ("env_id", "eps_id"):
            if key in columns:
                col = np.asarray(columns[key])
                ends[:-1] |= col[1:] != col[:-1]
        if "t" in columns:
            t = np.asarray(columns["t"])
            ends[:-1] |= t[1:] != t[:-1] + 1
    if n:
        ends[-1] = True
    return ends


def next_values_from(values: np.ndarray, ends: np.ndarray, terminateds: np.ndarray,
                     bootstrap_rows: np.ndarray, bootstrap_values: np.ndarray) -> np.ndarray:
    """``V(x_{s+1})`` per row: the next row's value inside a segment, ``bootstrap_values`` at
    the segment ends listed in ``bootstrap_rows`` (truncations, fragment cuts), 0 after a
    termination.

    Example::

        >>> next_values_from(np.array([1.0, 2.0, 3.0]), np.array([False, True, True]),
        ...                  np.array([False, True, False]), np.array([2]), np.array([9.0]))
        array([2., 0., 9.])
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = np.zeros(n, dtype=np.float64)
    if n > 1:
        out[:-1] = values[1:]
    out[np.asarray(ends, dtype=bool)] = 0.0
    out[np.asarray(bootstrap_rows, dtype=np.int64)] = np.asarray(bootstrap_values, np.float64)
    out[np.asarray(terminateds, dtype=bool)] = 0.0
    return out
