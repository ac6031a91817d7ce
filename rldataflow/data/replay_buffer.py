"""Bounded replay buffers over columnar numpy storage: uniform and prioritized.

Both buffers keep one preallocated numpy array per column (``capacity`` rows, allocated from the
first :class:`~rldataflow.data.SampleBatch` added, with its dtypes and per-row shapes) and write
into it as a ring: once full, the oldest rows are overwritten. There are no per-transition Python
objects, so ``add`` is a couple of slice copies per column and ``sample`` one fancy-indexing
gather per column; memory never grows past ``capacity`` rows (design fix 6, bounded memory).

* :class:`ReplayBuffer`: uniform sampling with replacement.
* :class:`PrioritizedReplayBuffer`: proportional prioritized replay (Schaul et al., 2016) with
  stratified sampling and importance weights, on vectorized sum/min segment trees.
* :class:`LinearSchedule`: linear annealing, e.g. of the importance-weight exponent ``beta``.

``get_state()`` returns only numpy arrays and ints (plus column names as keys), so a buffer can go
into a checkpoint written by :mod:`rldataflow.utils.checkpoint` and come back without pickle.

Example::

    >>> import numpy as np
    >>> from rldataflow.data import SampleBatch
    >>> buf = ReplayBuffer(capacity=1000, seed=0)
    >>> buf.add(SampleBatch({"obs": np.zeros((200, 4), np.float32), "rewards": np.ones(200)}))
    >>> len(buf), buf.num_added
    (200, 200)
    >>> batch = buf.sample(32)
    >>> batch["obs"].shape, batch["batch_indexes"].dtype
    ((32, 4), dtype('int64'))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import psutil

from rldataflow.data.sample_batch import MultiAgentBatch, SampleBatch
from rldataflow.data.segment_tree import MinSegmentTree, SumSegmentTree, last_write_wins

__all__ = ["LinearSchedule", "PrioritizedReplayBuffer", "ReplayBuffer"]

#: Column added by ``sample()``: the storage row each sampled row came from (int64).
BATCH_INDEXES = "batch_indexes"
#: Column added by ``PrioritizedReplayBuffer.sample()``: normalized importance weights (float32).
WEIGHTS = "weights"

_STATE_VERSION = 1
_MASK64 = (1 << 64) - 1


def _rng_state_to_array(rng: np.random.Generator) -> np.ndarray:
    # PCG64's state is two 128-bit ints and two small ones; as six uint64 words it is a plain
    # array that checkpoints store without pickle.
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise TypeError(f"cannot save the state of a {state.get('bit_generator')} generator")
    s, inc = int(state["state"]["state"]), int(state["state"]["inc"])
    words = [s >> 64, s & _MASK64, inc >> 64, inc & _MASK64,
             int(state["has_uint32"]), int(state["uinteger"])]
    return np.array(words, dtype=np.uint64)


def _rng_from_array(words: np.ndarray) -> np.random.Generator:
    w = [int(x) for x in np.asarray(words, dtype=np.uint64).reshape(-1)]
    if len(w) != 6:
        raise ValueError(f"replay buffer rng state must have 6 words, got {len(w)}")
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return np.random.Generator(bit_generator)


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions, sampled uniformly with replacement.

    Args:
        capacity: maximum number of rows kept; the oldest are overwritten first.
        seed: seed of the buffer's own random generator (``None``: fresh entropy).

    Storage is allocated on the first :meth:`add`, one array per column with the batch's dtype
    and per-row shape; later batches must have exactly the same columns (a ``ValueError`` names
    the missing and extra ones) and per-row shapes, and dtypes that cast ``same_kind``.

    Example::

        >>> import numpy as np
        >>> from rldataflow.data import SampleBatch
        >>> buf = ReplayBuffer(capacity=4, seed=0)
        >>> buf.add(SampleBatch({"obs": np.arange(6.0)}))   # 6 rows into 4 slots: 2 overwritten
        >>> len(buf), buf.num_added, sorted(set(buf.sample(100)["obs"].tolist()))
        (4, 6, [2.0, 3.0, 4.0, 5.0])
    """

    #: Column names ``sample()`` writes; a batch that carries them cannot be added.
    _RESERVED: tuple[str, ...] = (BATCH_INDEXES,)

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if isinstance(capacity, bool) or int(capacity) != capacity or capacity <= 0:
            raise ValueError(f"replay buffer capacity must be a positive integer, got {capacity!r}")
        self._capacity = int(capacity)
        self._rng = np.random.default_rng(seed)
        self._storage: dict[str, np.ndarray] = {}
        self._next = 0  # storage row the next added row goes to
        self._size = 0
        self._num_added = 0

    # -- sizes ------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Maximum number of rows held."""
        return self._capacity

    @property
    def num_added(self) -> int:
        """Rows added over the buffer's life (including those since overwritten)."""
        return self._num_added

    @property
    def columns(self) -> list[str]:
        """Stored column names (empty until the first add)."""
        return list(self._storage)

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self._size}, capacity={self._capacity}, "
                f"num_added={self._num_added}, columns={self.columns})")

    # -- writes -----------------------------------------------------------------------------
    def add(self, batch: SampleBatch) -> None:
        """Append ``batch``'s rows, overwriting the oldest rows once full.

        Vectorized: at most two slice copies per column (one if the write does not wrap). A batch
        larger than ``capacity`` leaves exactly its last ``capacity`` rows, as if its rows had
        been added one by one.
        """
        if isinstance(batch, MultiAgentBatch):
            raise TypeError("ReplayBuffer.add takes a SampleBatch; keep one buffer per policy and "
                            "add each of MultiAgentBatch.policy_batches to its own buffer")
        if not isinstance(batch, Mapping):
            raise TypeError(f"ReplayBuffer.add takes a SampleBatch, got {type(batch).__name__}")
        if not isinstance(batch, SampleBatch):
            batch = SampleBatch(batch)  # a plain dict: validate its column lengths
        if len(batch.keys()) == 0:
            return  # a column-less batch carries nothing, not even a schema
        reserved = [k for k in self._RESERVED if k in batch]
        if reserved:
            raise ValueError(f"cannot add a batch with column(s) {reserved}: "
                             f"{type(self).__name__}.sample() writes them; drop them first")
        columns = {k: np.asarray(v) for k, v in batch.items()}
        if not self._storage:
            self._storage = self._new_storage(columns)
        else:
            self._check_schema(columns)
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        start, first, second = self._write_plan(n)
        for key, col in columns.items():
            rows = col[n - (first + second):]  # only the rows that survive
            store = self._storage[key]
            store[start : start + first] = rows[:first]
            if second:
                store[:second] = rows[first:]
        self._on_write(start, first, second)
        self._next = (self._next + n) % self._capacity
        self._size = min(self._size + n, self._capacity)
        self._num_added += n

    def _write_plan(self, n: int) -> tuple[int, int, int]:
        # Where the surviving rows go: `first` rows at [start, start + first), then `second`
        # rows at [0, second). Row j of the batch would land at (next + j) % capacity; only the
        # last `capacity` of them survive.
        kept = min(n, self._capacity)
        start = (self._next + n - kept) % self._capacity
        first = min(kept, self._capacity - start)
        return start, first, kept - first

    def _on_write(self, start: int, first: int, second: int) -> None:
        """Hook for subclasses: rows ``[start, start+first)`` and ``[0, second)`` were written."""

    def _new_storage(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for key, col in columns.items():
            if col.dtype.hasobject:
                raise ValueError(f"column {key!r} has dtype object; replay buffers store numeric "
                                 "columns only")
        # np.zeros maps untouched pages lazily: a big, mostly empty buffer costs little RAM at
        # first, but a full one needs it all, so one that could never fit is refused now, not
        # when the machine starts swapping hours into the run.
        row_bytes = sum(c.dtype.itemsize * int(np.prod(c.shape[1:], dtype=np.int64))
                        for c in columns.values())
        need, have = row_bytes * self._capacity, psutil.virtual_memory().total
        if need > have:
            raise MemoryError(
                f"a replay buffer of {self._capacity:,} rows of {row_bytes:,} bytes needs "
                f"{need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB of "
                "RAM: lower its capacity (config key buffer_size)")
        return {k: np.zeros((self._capacity, *c.shape[1:]), dtype=c.dtype)
                for k, c in columns.items()}

    def _check_schema(self, columns: Mapping[str, np.ndarray]) -> None:
        if columns.keys() != self._storage.keys():
            missing = sorted(set(self._storage) - set(columns))
            extra = sorted(set(columns) - set(self._storage))
            raise ValueError(f"batch columns do not match the replay buffer's: missing {missing}, "
                             f"extra {extra} (buffer columns: {sorted(self._storage)})")
        for key, col in columns.items():
            store = self._storage[key]
            if col.shape[1:] != store.shape[1:]:
                raise ValueError(f"column {key!r} has per-row shape {col.shape[1:]}, but the "
                                 f"replay buffer stores {store.shape[1:]}")
            if not np.can_cast(col.dtype, store.dtype, casting="same_kind"):
                raise ValueError(f"column {key!r} has dtype {col.dtype}, which cannot be stored "
                                 f"in the replay buffer's {store.dtype} without a change of kind")

    # -- reads ------------------------------------------------------------------------------
    def sample(self, num_items: int) -> SampleBatch:
        """``num_items`` rows drawn uniformly with replacement, plus ``"batch_indexes"``.

        The returned arrays are copies: later adds never change a sampled batch.
        """
        indexes = self._rng.integers(0, self._check_sample_size(num_items), size=int(num_items))
        return self._gather(indexes)

    def _check_sample_size(self, num_items: int) -> int:
        if int(num_items) != num_items or num_items < 0:
            raise ValueError(f"num_items must be a non-negative integer, got {num_items!r}")
        if self._size == 0:
            raise ValueError(f"cannot sample from an empty {type(self).__name__}; add first")
        return self._size

    def _gather(self, indexes: np.ndarray) -> SampleBatch:
        indexes = indexes.astype(np.int64, copy=False)
        # Same gather either way; measured (numpy 2.4, 512 of 100k rows): fancy indexing is
        # fastest for 1-D columns (0.5 vs 1.1 us), np.take for 2-D ones (1.2 vs 5.0 us).
        cols = {k: v[indexes] if v.ndim == 1 else np.take(v, indexes, axis=0)
                for k, v in self._storage.items()}
        cols[BATCH_INDEXES] = indexes
        return SampleBatch(cols)

    # -- checkpoints ------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The buffer's contents and counters as numpy arrays and ints (no pickled objects).

        Only the filled rows are included, so a mostly empty buffer makes a small checkpoint.
        The random generator's state is included: a restored buffer samples what the original
        would have.
        """
        return {
            "version": _STATE_VERSION,
            "capacity": self._capacity,
            "size": self._size,
            "next_index": self._next,
            "num_added": self._num_added,
            "rng": _rng_state_to_array(self._rng),
            "columns": {k: v[: self._size].copy() for k, v in self._storage.items()},
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (the capacity must be the same)."""
        version = int(state.get("version", -1))
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported replay buffer state version {version} "
                             f"(expected {_STATE_VERSION})")
        if int(state["capacity"]) != self._capacity:
            raise ValueError(f"replay buffer state has capacity {int(state['capacity'])}, this "
                             f"buffer has {self._capacity}")
        size, next_index = int(state["size"]), int(state["next_index"])
        num_added = int(state["num_added"])
        columns = {k: np.asarray(v) for k, v in state["columns"].items()}
        # a ring fills [0, size) before it wraps, so next_index == size until it is full
        consistent = (0 <= size <= min(self._capacity, num_added)
                      and 0 <= next_index < self._capacity
                      and (size == self._capacity or next_index == size)
                      and (bool(columns) or size == 0))
        if not consistent:
            raise ValueError(f"replay buffer state is inconsistent: size={size}, "
                             f"next_index={next_index}, num_added={num_added}, "
                             f"capacity={self._capacity}, columns={sorted(columns)}")
        for key, col in columns.items():
            if len(col) != size:
                raise ValueError(f"replay buffer state column {key!r} has {len(col)} rows, "
                                 f"expected size={size}")
        # Build everything first, commit after: a bad state leaves the buffer as it was.
        rng = _rng_from_array(state["rng"])
        storage = self._new_storage(columns)
        for key, col in columns.items():
            storage[key][:size] = col
        self._storage, self._rng = storage, rng
        self._size, self._next, self._num_added = size, next_index, num_added


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay: row ``i`` is drawn with probability ``p_i / sum_j p_j``.

    Stored priorities are ``p_i = (priority_i + eps) ** alpha``. New rows get the largest
    priority seen so far (so every transition is replayed at least about as often as the
    best-known one until its TD error is known). :meth:`sample` is stratified: the total mass is
    cut into ``num_items`` equal segments and one row is drawn from each, which keeps the sample's
    spread low while every row's expected frequency stays exactly proportional to ``p_i``.

    Importance weights correct for the non-uniform draw: ``w_i = (N * P(i)) ** -beta``, divided
    by the largest possible weight ``(N * p_min / sum_j p_j) ** -beta`` (``N = len(buffer)``),
    so weights are in ``(0, 1]`` and only ever scale the loss down.

    Args:
        capacity: maximum number of rows kept.
        alpha: how much prioritization is used (0: uniform, 1: fully proportional).
        seed: seed of the buffer's random generator.
        eps: added to every priority given to :meth:`update_priorities`.

    Example::

        >>> import numpy as np
        >>> from rldataflow.data import SampleBatch
        >>> buf = PrioritizedReplayBuffer(capacity=100, alpha=0.6, seed=0)
        >>> buf.add(SampleBatch({"obs": np.zeros((10, 4), np.float32)}))
        >>> batch = buf.sample(8, beta=0.4)
        >>> batch["weights"].dtype, float(batch["weights"].max())    # all equal priorities
        (dtype('float32'), 1.0)
        >>> td_errors = np.abs(np.arange(8) - 3.5)                     # from the learner
        >>> buf.update_priorities(batch["batch_indexes"], td_errors)
    """

    _RESERVED = (BATCH_INDEXES, WEIGHTS)

    def __init__(self, capacity: int, alpha: float = 0.6, seed: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__(capacity, seed)
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        self._alpha = float(alpha)
        self._eps = float(eps)
        self._sum_tree = SumSegmentTree(self._capacity)
        self._min_tree = MinSegmentTree(self._capacity)
        self._max_priority = 1.0  # before the alpha exponent

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def max_priority(self) -> float:
        """Largest priority (``priority + eps``, before ``** alpha``) seen so far."""
        return self._max_priority

    def priorities(self) -> np.ndarray:
        """Stored priorities ``p_i`` (after ``** alpha``) of the filled rows, as a copy."""
        return self._sum_tree.leaves[: self._size].copy()

    def _on_write(self, start: int, first: int, second: int) -> None:
        p = self._max_priority ** self._alpha
        for tree in (self._sum_tree, self._min_tree):
            tree.update_range(start, start + first, p)
            tree.update_range(0, second, p)

    def sample(self, num_items: int, beta: float = 0.4) -> SampleBatch:  # type: ignore[override]
        """``num_items`` rows drawn proportionally to priority (stratified), with
        ``"batch_indexes"`` (int64) and ``"weights"`` (float32 importance weights, max 1).

        ``beta`` is the importance-weight exponent: 0 gives all-ones weights, 1 fully corrects
        the sampling bias (anneal it towards 1 with :class:`LinearSchedule`).
        """
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        size = self._check_sample_size(num_items)
        n = int(num_items)
        total = self._sum_tree.total()
        # Stratified: draw u_k uniformly inside the k-th of n equal slices of the mass.
        targets = (np.arange(n) + self._rng.random(n)) * (total / max(n, 1))
        indexes = self._sum_tree.find_prefixsum_idx(targets)
        # The tree never returns a massless leaf for targets < total, and rows >= size have no
        # mass; the clip is a guard against round-off only.
        np.minimum(indexes, size - 1, out=indexes)
        batch = self._gather(indexes)
        p = self._sum_tree[indexes]
        # (N * p_i / total)^-beta / (N * p_min / total)^-beta == (p_i / p_min)^-beta: N and the
        # total cancel, which also avoids overflow when the probabilities are tiny.
        weights = (p / self._min_tree.min()) ** (-beta)
        batch[WEIGHTS] = weights.astype(np.float32)
        return batch

    def update_priorities(self, indexes: Any, priorities: Any) -> None:
        """Set new priorities (e.g. ``|TD error|``) for rows ``indexes`` of a sampled batch.

        Priorities must be finite and ``> 0``; ``eps`` is added, then ``** alpha`` applied.
        Repeated indexes: the last priority wins. Rows may have been overwritten since they were
        sampled; their new occupant then gets the priority, which is harmless and cheap.
        """
        idx = np.asarray(indexes).reshape(-1)
        prio = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"indexes must be integers, got dtype {idx.dtype}")
        if len(idx) != len(prio):
            raise ValueError(f"got {len(idx)} indexes but {len(prio)} priorities")
        if len(idx) == 0:
            return
        bad = ~(np.isfinite(prio) & (prio > 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"priorities must be finite and > 0; priorities[{first}] = "
                             f"{prio[first]!r} (index {int(idx[first])}), {int(bad.sum())} bad")
        if idx.min() < 0 or idx.max() >= self._size:
            raise IndexError(f"priority index out of range [0, {self._size}): "
                             f"{int(idx.min()) if idx.min() < 0 else int(idx.max())}")
        prio = prio + self._eps
        self._max_priority = max(self._max_priority, float(prio.max()))
        # resolve repeats once for both trees (a sampled batch often holds a row twice)
        idx, p = last_write_wins(idx.astype(np.int64, copy=False), prio ** self._alpha)
        self._sum_tree.update(idx, p, assume_unique=True)
        self._min_tree.update(idx, p, assume_unique=True)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["priorities"] = self.priorities()
        # floats travel as 0-d arrays: the state holds only arrays and ints
        state["max_priority"] = np.array(self._max_priority, dtype=np.float64)
        state["alpha"] = np.array(self._alpha, dtype=np.float64)
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        if "priorities" not in state:
            raise ValueError("replay buffer state has no priorities (it comes from a uniform "
                             "ReplayBuffer); a PrioritizedReplayBuffer cannot restore it")
        alpha = float(np.asarray(state["alpha"]))
        if alpha != self._alpha:
            # stored priorities are already raised to alpha; mixing exponents would be silent
            raise ValueError(f"replay buffer state has alpha={alpha}, this buffer has "
                             f"alpha={self._alpha}")
        priorities = np.asarray(state["priorities"], dtype=np.float64).reshape(-1)
        if len(priorities) != int(state["size"]):
            raise ValueError(f"replay buffer state has {len(priorities)} priorities for "
                             f"size={int(state['size'])}")
        super().set_state(state)
        sums = np.zeros(self._capacity)
        mins = np.full(self._capacity, np.inf)
        sums[: self._size] = priorities
        mins[: self._size] = priorities
        self._sum_tree.set_all(sums)
        self._min_tree.set_all(mins)
        self._max_priority = float(np.asarray(state["max_priority"]))


class LinearSchedule:
    """A value moving linearly from ``start`` to ``end`` over ``steps`` steps, then held.

    Typical use: anneal prioritized replay's ``beta`` from 0.4 to 1.0 over training.

    Example::

        >>> beta = LinearSchedule(0.5, 1.0, steps=100)
        >>> beta.value(0), beta.value(50), beta(100), beta(10_000)
        (0.5, 0.75, 1.0, 1.0)
    """

    def __init__(self, start: float, end: float, steps: int) -> None:
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        self.start, self.end, self.steps = float(start), float(end), int(steps)

    def value(self, t: float) -> float:
        """The value at step ``t`` (``start`` for ``t <= 0``, ``end`` for ``t >= steps``)."""
        if self.steps == 0 or t >= self.steps:
            return self.end
        frac = max(float(t), 0.0) / self.steps
        return self.start + frac * (self.end - self.start)

    __call__ = value

    def __repr__(self) -> str:
        return f"LinearSchedule(start={self.start}, end={self.end}, steps={self.steps})"
