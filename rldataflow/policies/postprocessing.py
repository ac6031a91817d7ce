"""Return and advantage computation on trajectory fragments (pure numpy).

A fragment is a time-ordered run of steps of one env that may hold several episodes and may be
cut mid-episode. Each step ``t`` ends a *segment* when ``terminated[t] or truncated[t]``, when
``segment_ends[t]`` is set (e.g. the last step of one env before the next env's steps in an
env-major batch), and at the last row. The value of the state after a segment's last step is:

* ``0`` if the episode **terminated** (no future rewards);
* ``bootstrap_values[t]`` if it was **truncated** (``V(final_obs)``: the episode was cut by a time
  limit, the state still has a future) or the fragment was cut mid-episode (``V(next obs)``).

Bootstrapping on truncation rather than zeroing is the Gymnasium >= 1.0 rule; getting it wrong
biases values downward near time limits. ``bootstrap_values`` has one entry per step; entries of
steps that don't end a segment are ignored.
"""

from __future__ import annotations

import numpy as np

from rldataflow.data.sample_batch import SampleBatch

__all__ = [
    "batch_segment_ends",
    "compute_advantages",
    "compute_discounted_returns",
    "compute_gae",
    "compute_nstep",
    "segment_end_mask",
]


def segment_end_mask(
    terminateds: np.ndarray, truncateds: np.ndarray, segment_ends: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of steps after which the next step does not continue the same trajectory."""
    ends = np.asarray(terminateds, dtype=bool) | np.asarray(truncateds, dtype=bool)
    if segment_ends is not None:
        ends = ends | np.asarray(segment_ends, dtype=bool)
    if len(ends):
        ends = ends.copy()
        ends[-1] = True
    return ends


def _next_values(
    vf_preds: np.ndarray | None,
    terminateds: np.ndarray,
    ends: np.ndarray,
    bootstrap_values: np.ndarray | None,
) -> np.ndarray:
    """Value of the state after each step under the boundary rules (float64)."""
    n = len(ends)
    nxt = np.zeros(n, dtype=np.float64)
    if vf_preds is not None and n > 1:
        nxt[:-1] = vf_preds[1:]
    boot = np.zeros(n) if bootstrap_values is None else np.asarray(bootstrap_values, np.float64)
    nxt = np.where(ends, boot, nxt)
    return np.where(np.asarray(terminateds, dtype=bool), 0.0, nxt)


def _discounted_reverse_cumsum(x: np.ndarray, discount: float, ends: np.ndarray) -> np.ndarray:
    """``y[t] = x[t] + discount * y[t+1]``, restarting after every step with ``ends[t]``."""
    # A backward pass over Python floats beats per-element numpy indexing by ~10x; a closed form
    # with discount**-t overflows on long fragments.
    xs = x.tolist()
    cont = (~ends).tolist()
    out = [0.0] * len(xs)
    acc = 0.0
    for t in range(len(xs) - 1, -1, -1):
        acc = xs[t] + (discount * acc if cont[t] else 0.0)
        out[t] = acc
    return np.asarray(out, dtype=np.float64)


def compute_gae(
    rewards: np.ndarray,
    vf_preds: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    bootstrap_values: np.ndarray | None,
    gamma: float = 0.99,
    lambda_: float = 0.95,
    segment_ends: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over a fragment; returns ``(advantages, value_targets)``.

    ``delta[t] = r[t] + gamma * V_next[t] - V[t]`` with ``V_next`` following the module rules,
    ``A[t] = delta[t] + gamma * lambda * A[t+1]`` within a segment, and
    ``value_targets = advantages + vf_preds``. Outputs are ``float32``.

    Example::

        >>> import numpy as np
        >>> adv, vt = compute_gae(np.array([1.0, 1.0]), np.array([0.5, 0.5]),
        ...                       np.array([False, True]), np.array([False, False]),
        ...                       None, gamma=0.5, lambda_=1.0)
        >>> adv.tolist(), vt.tolist()
        ([1.0, 0.5], [1.5, 1.0])
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    vf = np.asarray(vf_preds, dtype=np.float64)
    ends = segment_end_mask(terminateds, truncateds, segment_ends)
    nxt = _next_values(vf, terminateds, ends, bootstrap_values)
    deltas = rewards + gamma * nxt - vf
    adv = _discounted_reverse_cumsum(deltas, gamma * lambda_, ends)
    return adv.astype(np.float32), (adv + vf).astype(np.float32)


def compute_discounted_returns(
    rewards: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    bootstrap_values: np.ndarray | None,
    gamma: float = 0.99,
    segment_ends: np.ndarray | None = None,
) -> np.ndarray:
    """Discounted returns ``G[t] = r[t] + gamma * G[t+1]`` with the module's boundary rules
    (a segment's tail is ``0`` on termination, ``bootstrap_values[t]`` otherwise).

    Example::

        >>> import numpy as np
        >>> compute_discounted_returns(np.array([1.0, 1.0]), np.array([False, False]),
        ...                            np.array([False, True]), np.array([0.0, 4.0]),
        ...                            gamma=0.5).tolist()
        [2.5, 3.0]
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    ends = segment_end_mask(terminateds, truncateds, segment_ends)
    tail = _next_values(None, terminateds, ends, bootstrap_values)
    # Fold the bootstrap tail into the last reward of each segment, then a plain discounted sum.
    x = rewards + gamma * np.where(ends, tail, 0.0)
    return _discounted_reverse_cumsum(x, gamma, ends).astype(np.float32)


def batch_segment_ends(batch: SampleBatch) -> np.ndarray | None:
    """Steps after which the next row belongs to another env or episode (``env_id``/``eps_id``
    changes), or ``None`` when the batch has neither column."""
    n = batch.count
    found = False
    ends = np.zeros(n, dtype=bool)
    for key in (SampleBatch.ENV_ID, SampleBatch.EPS_ID):
        if key in batch and n > 1:
            col = batch[key]
            ends[:-1] |= col[1:] != col[:-1]
            found = True
    return ends if found else None


def compute_advantages(
    batch: SampleBatch,
    gamma: float = 0.99,
    lambda_: float = 0.95,
    use_gae: bool = True,
    use_critic: bool = True,
) -> SampleBatch:
    """Add ``advantages`` and ``value_targets`` columns to ``batch`` (in place; also returned).

    * ``use_gae``: GAE(lambda) with ``vf_preds`` (needs ``bootstrap_value`` for fragments that
      end without termination);
    * else with ``use_critic``: ``advantages = returns - vf_preds``, ``value_targets = returns``;
    * else: ``advantages = returns`` (plain policy gradient), ``value_targets = returns``.

    Segment boundaries come from terminations/truncations and ``env_id``/``eps_id`` changes, so a
    whole env-major rollout batch can be processed in one call.
    """
    n = batch.count
    if n == 0:
        return batch
    term = batch[SampleBatch.TERMINATEDS]
    trunc = batch.get(SampleBatch.TRUNCATEDS, np.zeros(n, dtype=bool))
    boot = batch.get(SampleBatch.BOOTSTRAP_VALUE)
    seg = batch_segment_ends(batch)
    if use_gae:
        if SampleBatch.VF_PREDS not in batch:
            raise KeyError("GAE needs the 'vf_preds' column; set use_gae=False for plain returns")
        adv, targets = compute_gae(
            batch[SampleBatch.REWARDS],
            batch[SampleBatch.VF_PREDS],
            term,
            trunc,
            boot,
            gamma,
            lambda_,
            seg,
        )
    else:
        returns = compute_discounted_returns(
            batch[SampleBatch.REWARDS], term, trunc, boot, gamma, seg
        )
        targets = returns
        if use_critic and SampleBatch.VF_PREDS in batch:
            adv = (returns - batch[SampleBatch.VF_PREDS]).astype(np.float32)
        else:
            adv = returns
    batch[SampleBatch.ADVANTAGES] = adv
    batch[SampleBatch.VALUE_TARGETS] = targets
    return batch


def compute_nstep(batch: SampleBatch, n: int, gamma: float) -> SampleBatch:
    """Turn 1-step transitions into n-step ones for DQN-style targets (returns a new batch
    whose untouched columns, e.g. ``obs``, are the input's arrays, not copies).

    For each row ``t`` with ``m = min(n, steps left in its segment)``:
    ``rewards[t] = sum_{k<m} gamma**k r[t+k]``, ``next_obs[t] = next_obs[t+m-1]``,
    ``terminateds[t]``/``truncateds[t]`` taken from step ``t+m-1`` and
    ``discounts[t] = gamma**m``. The target is then
    ``rewards + discounts * (1 - terminateds) * max_a Q(next_obs, a)``: no bootstrap after a
    termination, a bootstrap from the final observation after a truncation (``next_obs`` of a
    truncated step *is* the final obs), never summing across an episode boundary.

    Needs ``rewards``, ``next_obs``, ``terminateds`` (``truncateds``, ``env_id``, ``eps_id``
    are used when present).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = batch.count
    # Shallow: the columns rewritten below get new arrays; the others (obs: the bulk of an
    # image batch) are shared with ``batch`` rather than copied.
    out = SampleBatch(batch)
    if count == 0:
        return out
    term = np.asarray(batch[SampleBatch.TERMINATEDS], dtype=bool)
    trunc = np.asarray(batch.get(SampleBatch.TRUNCATEDS, np.zeros(count, bool)), dtype=bool)
    ends = segment_end_mask(term, trunc, batch_segment_ends(batch))
    # last[t]: index of the last step of t's segment (first end at or after t).
    end_idx = np.flatnonzero(ends)
    last = end_idx[np.searchsorted(end_idx, np.arange(count))]
    m = np.minimum(n, last - np.arange(count) + 1)
    rewards = np.asarray(batch[SampleBatch.REWARDS], dtype=np.float64)
    acc = np.zeros(count, dtype=np.float64)
    for k in range(n):
        idx = np.minimum(np.arange(count) + k, count - 1)
        acc += np.where(k < m, gamma**k * rewards[idx], 0.0)
    tail = np.arange(count) + m - 1
    out[SampleBatch.REWARDS] = acc.astype(np.float32)
    out[SampleBatch.NEXT_OBS] = batch[SampleBatch.NEXT_OBS][tail]
    out[SampleBatch.TERMINATEDS] = term[tail]
    out[SampleBatch.TRUNCATEDS] = trunc[tail]
    out[SampleBatch.DISCOUNTS] = (gamma ** m.astype(np.float64)).astype(np.float32)
    return out
