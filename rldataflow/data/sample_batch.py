"""Columnar experience batches: :class:`SampleBatch` and :class:`MultiAgentBatch`.

A :class:`SampleBatch` is a ``dict`` of column name -> numpy array, every array having the same
length along axis 0 (one row per env step). Two small attributes ride along with the columns:

* ``batch.stats``: ``dict[str, list[float]]`` of per-episode figures gathered while sampling
  (``"episode_returns"``, ``"episode_lengths"``); lists are concatenated by :meth:`concat_samples`.
* ``batch.info``: a small ``dict`` of per-batch facts (e.g. ``"weights_version"``); concatenation
  merges them, later batches winning.

Everything is columnar numpy: no per-step Python objects, so batches are cheap to pickle, ship
between processes and slice into minibatches.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rldataflow.flow.provenance import Sourced, merged_sources

__all__ = ["MultiAgentBatch", "SampleBatch", "concat_samples"]


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _merge_stats(
    target: dict[str, list[float]], source: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    for key, values in source.items():
        target.setdefault(key, []).extend(values)
    return target


def _rebuild_sample_batch(
    cls: type, columns: dict[str, np.ndarray], stats: dict, info: dict
) -> SampleBatch:
    return cls(columns, stats=stats, info=info)


class SampleBatch(Sourced, dict):
    """A batch of experience stored column by column (``str -> np.ndarray``).

    All columns must have the same length along axis 0; the constructor and ``batch[key] = value``
    check it and name the offending column.

    Example::

        >>> import numpy as np
        >>> b = SampleBatch({SampleBatch.OBS: np.zeros((4, 3)), SampleBatch.REWARDS: np.ones(4)},
        ...                 stats={"episode_returns": [1.0]})
        >>> b.count, sorted(b.columns)
        (4, ['obs', 'rewards'])
        >>> c = SampleBatch.concat_samples([b, b])
        >>> c.count, c.stats["episode_returns"]
        (8, [1.0, 1.0])
        >>> [mb.count for mb in c.minibatches(3, shuffle=False)]
        [3, 3, 2]
    """

    OBS = "obs"
    NEXT_OBS = "next_obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    ACTION_LOGP = "action_logp"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    VF_PREDS = "vf_preds"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"
    EPS_ID = "eps_id"
    ENV_ID = "env_id"
    T = "t"
    WEIGHTS_VERSION = "weights_version"
    #: Value of the state that follows a segment's last step (V(final_obs) on truncation,
    #: V(next obs) at a fragment cut; ignored elsewhere). Written by the rollout worker.
    BOOTSTRAP_VALUE = "bootstrap_value"
    #: Per-row discount to apply to the bootstrap target of an n-step transition (gamma**m).
    DISCOUNTS = "discounts"

    def __init__(
        self,
        columns: Mapping[str, Any] | None = None,
        *,
        stats: Mapping[str, Sequence[float]] | None = None,
        info: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Copying another batch keeps its metadata unless new metadata is given.
        if isinstance(columns, SampleBatch):
            stats = columns.stats if stats is None else stats
            info = columns.info if info is None else info
            if columns.sources:
                self.sources = columns.sources
        data = dict(columns or {})
        data.update(kwargs)
        super().__init__()
        # Attributes first: __setitem__ below must be able to run on a fully formed object.
        self.stats: dict[str, list[float]] = {k: list(v) for k, v in (stats or {}).items()}
        self.info: dict[str, Any] = dict(info or {})
        length: int | None = None
        first: str | None = None
        for key, value in data.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                raise ValueError(
                    f"SampleBatch column {key!r} is a scalar; columns must be arrays with one "
                    "row per step"
                )
            if length is None:
                length, first = len(arr), key
            elif len(arr) != length:
                raise ValueError(
                    f"SampleBatch column {key!r} has length {len(arr)}, but column {first!r} "
                    f"has length {length}; all columns must have the same length"
                )
            dict.__setitem__(self, key, arr)

    # -- dict behaviour ---------------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        arr = np.asarray(value)
        if arr.ndim == 0:
            raise ValueError(f"SampleBatch column {key!r} must be an array, got a scalar")
        others = [k for k in self.keys() if k != key]
        if others:
            n = len(dict.__getitem__(self, others[0]))
            if len(arr) != n:
                raise ValueError(
                    f"SampleBatch column {key!r} has length {len(arr)}, but the batch has {n} rows"
                )
        dict.__setitem__(self, key, arr)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        # dict.update would bypass the length check in __setitem__.
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def __reduce__(self) -> tuple:
        # dict subclasses pickle their items before their __dict__, which would run our
        # validating __setitem__ on an object without `stats`; rebuild in one step instead.
        return (_rebuild_sample_batch, (type(self), dict(self), self.stats, self.info))

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.items())
        return f"{type(self).__name__}(count={self.count}, {{{cols}}})"

    # -- sizes ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of rows (env steps)."""
        for value in self.values():
            return len(value)
        return 0

    def __len__(self) -> int:  # type: ignore[override]
        # len() of a dict would be the number of columns; rows are what callers mean.
        return self.count

    def env_steps(self) -> int:
        """Number of env steps in the batch (= :attr:`count` for a single-agent batch)."""
        return self.count

    def agent_steps(self) -> int:
        """Number of agent steps (= :attr:`count` for a single-agent batch)."""
        return self.count

    @property
    def columns(self) -> list[str]:
        """Column names, in insertion order."""
        return list(self.keys())

    # -- construction helpers -------------------------------------------------------------
    def _with_columns(
        self, columns: dict[str, np.ndarray], *, keep_stats: bool = True
    ) -> SampleBatch:
        out = type(self).__new__(type(self))
        dict.__init__(out, columns)
        out.stats = {k: list(v) for k, v in self.stats.items()} if keep_stats else {}
        out.info = dict(self.info)
        if self.sources:
            out.sources = self.sources
        return out

    @staticmethod
    def concat_samples(batches: Sequence[SampleBatch | MultiAgentBatch]) -> Any:
        """Concatenate batches row-wise; ``stats`` lists are concatenated, ``info`` merged.

        All non-empty batches must have the same columns. A list of :class:`MultiAgentBatch`
        is delegated to :meth:`MultiAgentBatch.concat_samples`.
        """
        batches = list(batches)
        if batches and all(isinstance(b, MultiAgentBatch) for b in batches):
            return MultiAgentBatch.concat_samples(batches)  # type: ignore[arg-type]
        if any(isinstance(b, MultiAgentBatch) for b in batches):
            raise TypeError("cannot concatenate SampleBatch and MultiAgentBatch together")
        stats: dict[str, list[float]] = {}
        info: dict[str, Any] = {}
        for b in batches:
            _merge_stats(stats, getattr(b, "stats", {}))
            info.update(getattr(b, "info", {}))
        non_empty = [b for b in batches if len(b.keys()) > 0]
        sources = merged_sources(batches)
        if not non_empty:
            out = SampleBatch(stats=stats, info=info)
            out.sources = sources
            return out
        keys = list(non_empty[0].keys())
        key_set = set(keys)
        for i, b in enumerate(non_empty[1:], start=1):
            if set(b.keys()) != key_set:
                missing = sorted(key_set - set(b.keys()))
                extra = sorted(set(b.keys()) - key_set)
                raise ValueError(
                    f"cannot concatenate batches with different columns: batch {i} is missing "
                    f"{missing} and has extra {extra}"
                )
        if len(non_empty) == 1:
            cols = {k: non_empty[0][k] for k in keys}
        else:
            cols = {k: np.concatenate([b[k] for b in non_empty], axis=0) for k in keys}
        out = type(non_empty[0]).__new__(type(non_empty[0]))
        dict.__init__(out, cols)
        out.stats, out.info = stats, info
        if sources:
            out.sources = sources
        return out

    def concat(self, other: SampleBatch) -> SampleBatch:
        """Return ``concat_samples([self, other])``."""
        return SampleBatch.concat_samples([self, other])

    def copy(self) -> SampleBatch:  # type: ignore[override]
        """Deep copy: arrays, stats and info are all copied."""
        out = self._with_columns({k: v.copy() for k, v in self.items()})
        out.info = _copy.deepcopy(self.info)
        return out

    # -- row selection ----------------------------------------------------------------------
    def slice(self, start: int, end: int) -> SampleBatch:
        """Rows ``[start, end)`` as views of this batch's arrays.

        ``info`` is kept; ``stats`` are not, so slicing a batch into pieces never counts an
        episode twice.
        """
        return self._with_columns({k: v[start:end] for k, v in self.items()}, keep_stats=False)

    def take(self, indices: np.ndarray) -> SampleBatch:
        """Rows at ``indices`` (a copy); ``stats`` are dropped like in :meth:`slice`."""
        return self._with_columns({k: v[indices] for k, v in self.items()}, keep_stats=False)

    def shuffle(self, rng: np.random.Generator | int | None = None) -> SampleBatch:
        """Return a new batch with rows permuted (stats and info kept: it is the same data)."""
        perm = _as_rng(rng).permutation(self.count)
        return self._with_columns({k: v[perm] for k, v in self.items()})

    def minibatches(
        self,
        size: int,
        rng: np.random.Generator | int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> Iterator[SampleBatch]:
        """Yield minibatches of ``size`` rows covering the batch once.

        With ``shuffle`` rows are drawn by one random permutation; the last minibatch may be
        smaller unless ``drop_last``.
        """
        if size <= 0:
            raise ValueError(f"minibatch size must be positive, got {size}")
        n = self.count
        perm = _as_rng(rng).permutation(n) if shuffle else None
        for start in range(0, n, size):
            end = min(start + size, n)
            if drop_last and end - start < size:
                return
            if perm is None:
                yield self.slice(start, end)
            else:
                yield self.take(perm[start:end])

    def split_by_episode(self) -> list[SampleBatch]:
        """Split into contiguous pieces of one episode each.

        Boundaries are changes of ``eps_id`` (and ``env_id``) when those columns exist, and
        steps with ``terminateds | truncateds`` otherwise.
        """
        n = self.count
        if n == 0:
            return []
        change = np.zeros(n, dtype=bool)  # change[i]: row i starts a new piece
        if self.EPS_ID in self or self.ENV_ID in self:
            for key in (self.EPS_ID, self.ENV_ID):
                if key in self:
                    col = self[key]
                    change[1:] |= col[1:] != col[:-1]
        else:
            done = np.zeros(n, dtype=bool)
            for key in (self.TERMINATEDS, self.TRUNCATEDS):
                if key in self:
                    done |= self[key].astype(bool)
            change[1:] = done[:-1]
        starts = np.flatnonzero(change).tolist()
        bounds = [0, *starts, n]
        return [self.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def concat_samples(batches: Sequence[Any]) -> Any:
    """Module-level alias of :meth:`SampleBatch.concat_samples`."""
    return SampleBatch.concat_samples(batches)


class MultiAgentBatch(Sourced):
    """Experience of several policies from one stretch of env steps.

    ``policy_batches`` maps policy id -> :class:`SampleBatch`; ``env_steps`` is the number of
    env steps the data came from (agent steps may be more, several agents acting per step).

    Example::

        >>> import numpy as np
        >>> a = SampleBatch({"obs": np.zeros((3, 2))})
        >>> mab = MultiAgentBatch({"p0": a, "p1": a}, env_steps=3)
        >>> mab.env_steps(), mab.agent_steps()
        (3, 6)
        >>> MultiAgentBatch.concat_samples([mab, mab]).env_steps()
        6
    """

    def __init__(
        self,
        policy_batches: Mapping[str, SampleBatch],
        env_steps: int,
        *,
        stats: Mapping[str, Sequence[float]] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy_batches: dict[str, SampleBatch] = dict(policy_batches)
        self._env_steps = int(env_steps)
        # Episode figures belong to the env, not to one policy: kept here, once.
        self.stats: dict[str, list[float]] = {k: list(v) for k, v in (stats or {}).items()}
        self.info: dict[str, Any] = dict(info or {})

    @property
    def count(self) -> int:
        """Env steps (what rollout counters add up)."""
        return self._env_steps

    def env_steps(self) -> int:
        return self._env_steps

    def agent_steps(self) -> int:
        return sum(b.count for b in self.policy_batches.values())

    @staticmethod
    def concat_samples(batches: Sequence[MultiAgentBatch]) -> MultiAgentBatch:
        """Concatenate per policy; env steps add up."""
        per_policy: dict[str, list[SampleBatch]] = {}
        env_steps = 0
        stats: dict[str, list[float]] = {}
        info: dict[str, Any] = {}
        for b in batches:
            if not isinstance(b, MultiAgentBatch):
                raise TypeError(f"expected MultiAgentBatch, got {type(b).__name__}")
            env_steps += b.env_steps()
            _merge_stats(stats, b.stats)
            info.update(b.info)
            for pid, pb in b.policy_batches.items():
                per_policy.setdefault(pid, []).append(pb)
        out = MultiAgentBatch(
            {pid: SampleBatch.concat_samples(bs) for pid, bs in per_policy.items()},
            env_steps,
            stats=stats,
            info=info,
        )
        out.set_sources(merged_sources(batches))
        return out

    def select(self, policy_ids: Iterable[str]) -> MultiAgentBatch:
        """Keep only the given policies' batches (env step count unchanged)."""
        ids = set(policy_ids)
        out = MultiAgentBatch(
            {pid: b for pid, b in self.policy_batches.items() if pid in ids},
            self._env_steps,
            stats=self.stats,
            info=self.info,
        )
        out.set_sources(self.sources)
        return out

    def copy(self) -> MultiAgentBatch:
        out = MultiAgentBatch(
            {k: v.copy() for k, v in self.policy_batches.items()},
            self._env_steps,
            stats=self.stats,
            info=_copy.deepcopy(self.info),
        )
        out.set_sources(self.sources)
        return out

    def __getstate__(self) -> dict[str, Any]:
        # sources are the driver's actor handles: they never travel with the batch
        state = dict(self.__dict__)
        state.pop("sources", None)
        return state

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.count}" for k, v in self.policy_batches.items())
        return f"MultiAgentBatch(env_steps={self._env_steps}, {{{inner}}})"
