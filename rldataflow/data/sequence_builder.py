"""Fixed-length training sequences with burn-in, cut from a stream of rollout rows (R2D2).

R2D2 (Kapturowski et al. 2019, "Recurrent Experience Replay in Distributed Reinforcement
Learning", ICLR) replays *sequences* rather than transitions: each holds ``burn_in`` steps that
only warm up the LSTM state, then ``train_len`` steps that are trained on, and starts from the
LSTM state the actor had at its first step ("stored state"). Consecutive sequences of an
episode overlap by the burn-in, so every step is trained exactly once (the paper: length 80,
burn-in 40, a new sequence every 40 steps).

:class:`SequenceBuilder` makes such sequences from rollout batches as they arrive. An episode
usually spans several fragments (and fragments of many workers and envs are mixed in one
batch), so it keeps, per episode (``eps_id``, unique across workers), the rows not trained on
yet plus the ``burn_in`` rows before them, and emits a sequence whenever ``train_len`` new rows
are there, and the rest when the episode ends (terminated or truncated). An episode's first
sequence has no burn-in (its state is the exact zero state).

Each output row is one sequence of ``L = burn_in + train_len`` slots, left-aligned and
zero-padded:

* ``obs``: ``(L + 1, *obs_shape)``: the observations of the slots, then the ``next_obs`` of the
  last valid slot (what a target network bootstraps from);
* ``actions``, ``rewards``, ``terminateds``: ``(L,)``;
* ``state_in_h`` / ``state_in_c``: the LSTM state before the first slot;
* :data:`NUM_BURN_IN` (slots that only warm up the state) and :data:`NUM_STEPS` (valid slots,
  burn-in included).

Rows must carry ``eps_id``, ``t``, ``next_obs``, ``terminateds``, ``truncateds`` and the state
columns (what a rollout worker with ``include_next_obs`` and a recurrent policy writes), each
trajectory's rows contiguous and time-ordered.

Example::

    >>> import numpy as np
    >>> from rldataflow.data import SampleBatch
    >>> n = 5
    >>> rows = SampleBatch({"obs": np.arange(n, dtype=np.float32)[:, None],
    ...     "next_obs": np.arange(1, n + 1, dtype=np.float32)[:, None],
    ...     "actions": np.zeros(n, np.int64), "rewards": np.ones(n, np.float32),
    ...     "terminateds": np.array([0, 0, 0, 0, 1], bool), "truncateds": np.zeros(n, bool),
    ...     "eps_id": np.zeros(n, np.int64), "t": np.arange(n),
    ...     "state_in_h": np.zeros((n, 2), np.float32), "state_in_c": np.zeros((n, 2), np.float32)})
    >>> seqs = SequenceBuilder(train_len=2, burn_in=1)(rows)
    >>> seqs.count, seqs[NUM_BURN_IN].tolist(), seqs[NUM_STEPS].tolist()
    (3, [0, 1, 1], [2, 3, 2])
    >>> seqs["obs"][1, :, 0].tolist()   # burn-in row 1, train rows 2 and 3, next_obs 4
    [1.0, 2.0, 3.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rldataflow.data.sample_batch import SampleBatch

__all__ = ["NUM_BURN_IN", "NUM_STEPS", "SequenceBuilder"]

#: per sequence: its leading slots that only warm up the LSTM state (no loss)
NUM_BURN_IN = "num_burn_in"
#: per sequence: its valid slots (burn-in included); the rest is padding
NUM_STEPS = "num_steps"

_STEP_COLUMNS = (SampleBatch.ACTIONS, SampleBatch.REWARDS, SampleBatch.TERMINATEDS)
_STATE_COLUMNS = ("state_in_h", "state_in_c")


class _Episode:
    """The rows of one episode kept between batches (untrained ones and their burn-in)."""

    __slots__ = ("chunks", "length", "trained", "idle", "next_t")

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []
        self.length = 0      # rows held
        self.trained = 0     # of which the first `trained` were trained on already
        self.idle = 0        # batches since the episode last got rows
        self.next_t = 0      # the step counter its next row must have

    def rows(self) -> dict[str, np.ndarray]:
        if len(self.chunks) > 1:
            self.chunks = [{k: np.concatenate([c[k] for c in self.chunks])
                            for k in self.chunks[0]}]
        return self.chunks[0]


class SequenceBuilder:
    """Cut rollout batches into R2D2 sequences (see the module docs); call it on each batch.

    Args:
        train_len: trained steps per sequence (a shorter last one ends each episode).
        burn_in: steps before them that only warm up the LSTM state (0: none).
        max_idle: an episode that got no rows in this many batches (its worker died or was
            replaced) is emitted as it is and forgotten, so nothing is held forever.
    """

    def __init__(self, train_len: int, burn_in: int = 0, max_idle: int = 200) -> None:
        if train_len < 1:
            raise ValueError(f"SequenceBuilder train_len must be >= 1, got {train_len}")
        if burn_in < 0:
            raise ValueError(f"SequenceBuilder burn_in must be >= 0, got {burn_in}")
        self.train_len = int(train_len)
        self.burn_in = int(burn_in)
        self.max_idle = int(max_idle)
        self._episodes: dict[int, _Episode] = {}

    @property
    def slots(self) -> int:
        """``L``: slots per sequence (burn-in plus trained steps)."""
        return self.burn_in + self.train_len

    @property
    def num_pending_episodes(self) -> int:
        return len(self._episodes)

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        needed = (SampleBatch.OBS, SampleBatch.NEXT_OBS, SampleBatch.EPS_ID, SampleBatch.T,
                  SampleBatch.TRUNCATEDS, *_STEP_COLUMNS, *_STATE_COLUMNS)
        missing = [k for k in needed if k not in batch]
        if missing:
            raise KeyError(f"SequenceBuilder: the batch lacks columns {missing} (R2D2 needs a "
                           "recurrent policy sampling with include_next_obs)")
        out: list[tuple[dict[str, np.ndarray], int, int]] = []
        n = batch.count
        eps = np.asarray(batch[SampleBatch.EPS_ID])
        t = np.asarray(batch[SampleBatch.T])
        ended = (np.asarray(batch[SampleBatch.TERMINATEDS], bool)
                 | np.asarray(batch[SampleBatch.TRUNCATEDS], bool))
        cut = np.ones(n, dtype=bool)
        cut[1:] = (eps[1:] != eps[:-1]) | (t[1:] != t[:-1] + 1) | ended[:-1]
        starts = np.flatnonzero(cut).tolist() + [n]
        keep = (SampleBatch.OBS, SampleBatch.NEXT_OBS, *_STEP_COLUMNS, *_STATE_COLUMNS)
        touched = set()
        for begin, end in zip(starts[:-1], starts[1:], strict=True):
            key = int(eps[begin])
            episode = self._episodes.get(key)
            if episode is not None and int(t[begin]) != episode.next_t:
                self._emit_rest(episode, out)  # a gap in the trajectory: never bridge it
                episode = None
            if episode is None:
                episode = self._episodes[key] = _Episode()
            episode.next_t = int(t[end - 1]) + 1
            episode.chunks.append({k: batch[k][begin:end] for k in keep})
            episode.length += end - begin
            episode.idle = 0
            touched.add(key)
            self._emit_full(episode, out)
            if ended[end - 1]:
                self._emit_rest(episode, out)
                del self._episodes[key]
        for key in [k for k in self._episodes if k not in touched]:
            episode = self._episodes[key]
            episode.idle += 1
            if episode.idle >= self.max_idle:
                self._emit_rest(episode, out)
                del self._episodes[key]
        return self._stack(out, batch)

    def _emit_full(self, episode: _Episode, out: list) -> None:
        while episode.length - episode.trained >= self.train_len:
            rows = episode.rows()
            first = max(0, episode.trained - self.burn_in)
            end = episode.trained + self.train_len
            out.append(({k: v[first:end] for k, v in rows.items()}, episode.trained - first,
                        end - first))
            episode.trained = end
            # keep only the rows the next sequence's burn-in reads
            drop = max(0, episode.trained - self.burn_in)
            if drop:
                episode.chunks = [{k: v[drop:] for k, v in rows.items()}]
                episode.length -= drop
                episode.trained -= drop

    def _emit_rest(self, episode: _Episode, out: list) -> None:
        if episode.length > episode.trained:
            rows = episode.rows()
            first = max(0, episode.trained - self.burn_in)
            out.append(({k: v[first:] for k, v in rows.items()}, episode.trained - first,
                        episode.length - first))

    def _stack(self, parts: Sequence[tuple[dict[str, np.ndarray], int, int]],
               like: SampleBatch) -> SampleBatch:
        s, slots = len(parts), self.slots
        cols: dict[str, Any] = {}
        if not parts:
            return SampleBatch({}, info=like.info)
        ref = parts[0][0]
        obs = np.zeros((s, slots + 1, *ref[SampleBatch.OBS].shape[1:]),
                       dtype=ref[SampleBatch.OBS].dtype)
        step_cols = {k: np.zeros((s, slots), dtype=np.float32 if k == SampleBatch.REWARDS
                                 else ref[k].dtype) for k in _STEP_COLUMNS}
        states = {k: np.zeros((s, *ref[k].shape[1:]), dtype=np.float32) for k in _STATE_COLUMNS}
        burn = np.zeros(s, dtype=np.int64)
        steps = np.zeros(s, dtype=np.int64)
        for i, (rows, b, length) in enumerate(parts):
            obs[i, :length] = rows[SampleBatch.OBS]
            obs[i, length] = rows[SampleBatch.NEXT_OBS][length - 1]
            for k in _STEP_COLUMNS:
                step_cols[k][i, :length] = rows[k]
            for k in _STATE_COLUMNS:
                states[k][i] = rows[k][0]
            burn[i], steps[i] = b, length
        cols[SampleBatch.OBS] = obs
        cols.update(step_cols)
        cols.update(states)
        cols[NUM_BURN_IN] = burn
        cols[NUM_STEPS] = steps
        return SampleBatch(cols, info=like.info)
