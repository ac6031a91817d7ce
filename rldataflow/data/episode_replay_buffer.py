"""A replay buffer of whole episodes, sampled as padded ``[B, T, ...]`` batches with a mask.

QMIX (Rashid et al. 2018, section 6: "the replay buffer contains the most recent 5000
episodes", batches of 32 episodes) learns from whole episodes, so a recurrent agent network can
unroll over them. :class:`EpisodeReplayBuffer` keeps at most ``capacity`` episodes (the oldest
is dropped first) and samples ``n`` of them uniformly; the batch has ``n`` rows, each column
shaped ``[n, T, ...]`` with ``T`` the longest sampled episode, zero-padded, and a float
``mask`` column ``[n, T]`` that is 1 on real steps. Units are episodes: ``len(buffer)``,
``num_added`` and the ``count`` of a sampled batch, so ``Replay(learning_starts=...,
training_intensity=...)`` gate on episodes.

``add(batch)`` splits a rollout batch into episodes at changes of ``(env_id, eps_id)``: the
rows of one trajectory must be contiguous and time-ordered, which rollout workers guarantee;
with ``batch_mode="complete_episodes"`` every trajectory is whole. Episodes longer than
``max_episode_len`` are cut into chunks of that length (each chunk's last step keeps its
``next_obs``, so transitions stay exact).

Example::

    >>> import numpy as np
    >>> from rldataflow.data import SampleBatch
    >>> buf = EpisodeReplayBuffer(capacity=10, seed=0)
    >>> buf.add(SampleBatch({"obs": np.arange(5.0), "eps_id": np.array([0, 0, 0, 1, 1]),
    ...                      "env_id": np.zeros(5, np.int64)}))
    >>> len(buf), buf.episode_lengths()
    (2, [3, 2])
    >>> b = buf.sample(2)
    >>> b.count, b["mask"].shape == b["obs"].shape, float(b["mask"][0].sum()) in (2.0, 3.0)
    (2, True, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from rldataflow.data.sample_batch import SampleBatch

__all__ = ["MASK", "EpisodeReplayBuffer"]

#: The column of a sampled batch that is 1.0 on real steps and 0.0 on padding.
MASK = "mask"


class EpisodeReplayBuffer:
    """At most ``capacity`` whole episodes; see the module docs.

    Args:
        capacity: episodes kept (the oldest is dropped first).
        max_episode_len: longer episodes are stored as chunks of this many steps (None: no
            limit).
        columns: the columns kept (None: all numeric columns of the first batch added).
        seed: the sampling RNG's seed.
    """

    def __init__(self, capacity: int, max_episode_len: int | None = None,
                 columns: Sequence[str] | None = None, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"EpisodeReplayBuffer capacity must be >= 1, got {capacity}")
        if max_episode_len is not None and max_episode_len < 1:
            raise ValueError(f"max_episode_len must be >= 1 or None, got {max_episode_len}")
        self._capacity = int(capacity)
        self.max_episode_len = max_episode_len
        self._columns = list(columns) if columns is not None else None
        self._episodes: deque[dict[str, np.ndarray]] = deque(maxlen=self._capacity)
        self._num_added = 0
        self._rng = np.random.default_rng(seed)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_added(self) -> int:
        """Episodes added since creation (also those dropped since)."""
        return self._num_added

    def __len__(self) -> int:
        return len(self._episodes)

    def __repr__(self) -> str:
        return f"EpisodeReplayBuffer({len(self)}/{self._capacity} episodes)"

    def episode_lengths(self) -> list[int]:
        return [len(next(iter(ep.values()))) for ep in self._episodes]

    def add(self, batch: SampleBatch) -> None:
        """Split ``batch`` into episodes (see the module docs) and store them."""
        if batch.count == 0:
            return
        if self._columns is None:
            self._columns = [k for k, v in batch.items()
                             if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"]
        missing = [k for k in self._columns if k not in batch]
        if missing:
            raise KeyError(f"EpisodeReplayBuffer.add: the batch lacks columns {missing}")
        n = batch.count
        keys = [np.asarray(batch[k]) for k in (SampleBatch.ENV_ID, SampleBatch.EPS_ID)
                if k in batch]
        cut = np.zeros(n, dtype=bool)
        cut[0] = True
        for key in keys:
            cut[1:] |= key[1:] != key[:-1]
        starts = np.flatnonzero(cut).tolist() + [n]
        limit = self.max_episode_len or n
        for begin, end in zip(starts[:-1], starts[1:], strict=True):
            for s in range(begin, end, limit):
                e = min(s + limit, end)
                self._episodes.append({k: np.array(batch[k][s:e]) for k in self._columns})
                self._num_added += 1

    def sample(self, num_episodes: int) -> SampleBatch:
        """``num_episodes`` episodes drawn uniformly with replacement, padded to the longest
        (columns ``[n, T, ...]``, plus :data:`MASK` ``[n, T]``)."""
        if not self._episodes:
            raise ValueError("EpisodeReplayBuffer.sample: the buffer is empty")
        idx = self._rng.integers(0, len(self._episodes), int(num_episodes))
        chosen = [self._episodes[i] for i in idx.tolist()]
        lengths = [len(next(iter(ep.values()))) for ep in chosen]
        t_max = max(lengths)
        cols: dict[str, np.ndarray] = {}
        for k in self._columns or []:
            first = chosen[0][k]
            out = np.zeros((len(chosen), t_max, *first.shape[1:]), dtype=first.dtype)
            for row, ep in enumerate(chosen):
                out[row, : len(ep[k])] = ep[k]
            cols[k] = out
        mask = np.zeros((len(chosen), t_max), dtype=np.float32)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1.0
        cols[MASK] = mask
        return SampleBatch(cols)
