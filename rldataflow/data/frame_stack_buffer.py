"""Replay buffers that store each distinct frame of stacked ``uint8`` observations once.

With frame stacking (``obs`` = the last ``K`` frames, channel-last ``(H, W, K)``, as in Mnih et
al. 2015) consecutive observations share ``K - 1`` frames and ``next_obs`` repeats most of
``obs``: a plain buffer holds each frame about ``2K`` times (1M Atari transitions: ~56 GB).
These buffers keep one ring of single ``(H, W)`` frames and, per row, the ids of the frames of
its ``obs`` and ``next_obs`` stacks; ``sample()`` rebuilds the stacks. Which frames are the same
is decided by content (exact byte equality, through a hash of each frame), not by assumptions on
the env: repeat-first or zero padding at episode starts, n-step ``next_obs``, several env
streams and workers interleaved in one batch all come out exactly as a plain buffer would return
them. Frames are matched within one ``add`` and against the previous ``add``'s frames (the
rollout fragment before it), which is where the shared frames of a stream are.

The frame ring starts at ``capacity * 1.5`` frames (a frame-stacked stream needs about one new
frame per row plus a few per episode) and is lazily mapped; if rows ever need more (little
sharing), it grows, never beyond what the plain buffer would hold. A batch whose ``obs`` is not
a ``uint8`` ``(N, H, W, K)`` stack with ``K > 1`` is stored plainly (``dedup="auto"``) or
rejected (``dedup="on"``).

Example::

    >>> import numpy as np
    >>> from rldataflow.data import SampleBatch
    >>> frames = np.random.default_rng(0).integers(0, 256, (11, 8, 8), dtype=np.uint8)
    >>> stack = lambda t: np.stack([frames[max(t - 3 + k, 0)] for k in range(4)], axis=-1)
    >>> obs = np.stack([stack(t) for t in range(10)])
    >>> nxt = np.stack([stack(t + 1) for t in range(10)])
    >>> buf = FrameStackReplayBuffer(capacity=100, seed=0)
    >>> buf.add(SampleBatch({"obs": obs, "next_obs": nxt, "rewards": np.ones(10)}))
    >>> buf.num_frames_stored          # 11 distinct frames, not 10 rows x 2 x 4
    11
    >>> b = buf.sample(5)
    >>> bool((b["obs"] == obs[b["batch_indexes"]]).all()), b["obs"].dtype
    (True, dtype('uint8'))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rldataflow.data.replay_buffer import PrioritizedReplayBuffer, ReplayBuffer
from rldataflow.data.sample_batch import SampleBatch

__all__ = ["FRAME_DEDUP_MODES", "FrameStackReplayBuffer", "PrioritizedFrameStackReplayBuffer",
           "is_frame_stack"]

FRAME_DEDUP_MODES = ("auto", "on", "off")
_IMAGE_COLUMNS = (SampleBatch.OBS, SampleBatch.NEXT_OBS)
_IDS = {SampleBatch.OBS: "_obs_frame_ids", SampleBatch.NEXT_OBS: "_next_obs_frame_ids"}
_MIN_ID = "_min_frame_id"


def is_frame_stack(obs: Any) -> bool:
    """A batch column of stacked ``uint8`` frames: shape ``(N, H, W, K)`` with ``K > 1``."""
    arr = np.asarray(obs)
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] > 1


class _FrameDedup:
    """The frame storage, mixed into a replay buffer (see the module docs)."""

    _storage: dict[str, np.ndarray]
    _size: int

    def _init_frames(self, dedup: str) -> None:
        if dedup not in FRAME_DEDUP_MODES:
            raise ValueError(f"dedup must be one of {FRAME_DEDUP_MODES}, got {dedup!r}")
        self._dedup = dedup
        self._active: bool | None = None if dedup != "off" else False  # decided on first add
        self._frames = np.zeros((0, 0, 0), np.uint8)
        self._next_fid = 0          # id of the next frame written (ids only grow)
        self._min_live_lb = 0       # a lower bound of the smallest frame id a live row uses
        self._valid_lo = 0          # the ring holds the frames of ids [valid_lo, next_fid)
        self._window: dict[bytes, int] = {}  # frame bytes -> id, frames of the previous add
        self._image_columns: tuple[str, ...] = ()

    @property
    def frame_dedup_active(self) -> bool:
        """True once a frame-stacked batch has been added and frames are deduplicated."""
        return bool(self._active)

    @property
    def num_frames_stored(self) -> int:
        """Distinct frames written so far (0 when not deduplicating)."""
        return self._next_fid

    def storage_nbytes(self) -> int:
        """Bytes of the arrays allocated for rows and frames (mapped lazily: RSS may be less)."""
        return int(sum(v.nbytes for v in self._storage.values()) + self._frames.nbytes)

    def _decide(self, batch: SampleBatch) -> None:
        ok = SampleBatch.OBS in batch and is_frame_stack(batch[SampleBatch.OBS]) and (
            SampleBatch.NEXT_OBS not in batch
            or batch[SampleBatch.NEXT_OBS].shape[1:] == batch[SampleBatch.OBS].shape[1:])
        if not ok and self._dedup == "on":
            obs = np.asarray(batch.get(SampleBatch.OBS, np.zeros(0)))
            raise ValueError(f"replay_frame_dedup='on' needs an 'obs' column of uint8 frame "
                             f"stacks (N, H, W, K>1); got {obs.dtype}{list(obs.shape)}")
        self._active = ok
        if ok:
            _, h, w, k = batch[SampleBatch.OBS].shape
            self._stack = k
            self._image_columns = tuple(c for c in _IMAGE_COLUMNS if c in batch)
            capacity = self._capacity  # type: ignore[attr-defined]
            self._frames = np.zeros((capacity + capacity // 2 + 2 * k, h, w), np.uint8)

    def add(self, batch: SampleBatch) -> None:
        if isinstance(batch, dict) and not isinstance(batch, SampleBatch):
            batch = SampleBatch(batch)  # a plain dict: decide on it like on a batch
        if self._active is None and isinstance(batch, SampleBatch) and batch.count:
            self._decide(batch)
        if not self._active or not isinstance(batch, SampleBatch) or batch.count == 0:
            super().add(batch)  # type: ignore[misc]
            return
        k, frame_shape = self._stack, self._frames.shape[1:]
        for key in self._image_columns:
            if key not in batch or batch[key].shape[1:] != (*frame_shape, k) \
                    or batch[key].dtype != np.uint8:
                got = batch[key].shape if key in batch else "missing"
                raise ValueError(f"column {key!r} must be uint8 frame stacks of shape "
                                 f"{(*frame_shape, k)} like the buffer's, got {got}")
        taken = [c for c in (_MIN_ID, *_IDS.values()) if c in batch]
        if taken:
            raise ValueError(f"cannot add a batch with column(s) {taken}: "
                             f"{type(self).__name__} uses them for its frame ids")
        n = batch.count
        window = {b: i for b, i in self._window.items() if i >= self._valid_lo}
        new_window: dict[bytes, int] = {}
        new_frames: list[bytes] = []
        first_new = self._next_fid
        cols = dict(batch)
        for key in self._image_columns:
            # channel-first copy: each frame contiguous, so its bytes are one slice
            frames = np.ascontiguousarray(np.moveaxis(batch[key], -1, 1))
            ids = np.empty((n, k), np.int64)
            flat = frames.reshape(n * k, -1)
            for j in range(n * k):
                data = flat[j].tobytes()
                fid = new_window.get(data)
                if fid is None:
                    fid = window.get(data)
                    if fid is None:
                        fid = first_new + len(new_frames)
                        new_frames.append(data)
                    new_window[data] = fid
                ids.flat[j] = fid
            cols[_IDS[key]] = ids
            del cols[key]
        cols[_MIN_ID] = np.min([cols[_IDS[key]].min(1) for key in self._image_columns], axis=0)
        super().add(SampleBatch(cols, stats=batch.stats, info=batch.info))  # type: ignore[misc]
        self._make_room(len(new_frames), int(cols[_MIN_ID].min()))
        cap = len(self._frames)
        for j, data in enumerate(new_frames):
            self._frames[(first_new + j) % cap] = np.frombuffer(data, np.uint8).reshape(frame_shape)
        self._next_fid += len(new_frames)
        self._valid_lo = max(self._valid_lo, self._next_fid - cap)
        self._window = new_window

    def _make_room(self, m: int, batch_min: int) -> None:
        # Writing m frames overwrites ids below `threshold`; no live row may still use one.
        cap = len(self._frames)
        threshold = self._next_fid + m - cap
        self._min_live_lb = min(self._min_live_lb, batch_min)
        if self._min_live_lb < threshold:
            self._min_live_lb = int(self._storage[_MIN_ID][: self._size].min())
        if self._min_live_lb < threshold:
            lo = self._min_live_lb
            new_cap = max(2 * cap, self._next_fid + m - lo)
            grown = np.zeros((new_cap, *self._frames.shape[1:]), np.uint8)
            live = np.arange(lo, self._next_fid)
            grown[live % new_cap] = self._frames[live % cap]
            self._frames = grown
            self._valid_lo = lo  # older ids were not copied

    def _gather(self, indexes: np.ndarray) -> SampleBatch:
        batch = super()._gather(indexes)  # type: ignore[misc]
        if not self._active:
            return batch
        cap = len(self._frames)
        cols = dict(batch)
        del cols[_MIN_ID]
        for key in self._image_columns:
            ids = cols.pop(_IDS[key])
            stacks = self._frames[ids % cap]                       # (B, K, H, W)
            cols[key] = np.ascontiguousarray(np.moveaxis(stacks, 1, -1))
        return SampleBatch(cols, stats=batch.stats, info=batch.info)

    @property
    def columns(self) -> list[str]:
        cols = [c for c in self._storage if c not in (_MIN_ID, *_IDS.values())]
        return [*self._image_columns, *cols]

    def get_state(self) -> dict[str, Any]:
        if self._active:
            raise NotImplementedError(f"{type(self).__name__} with deduplicated frames cannot "
                                      "be checkpointed yet; use replay_frame_dedup='off' to "
                                      "save replay contents")
        return super().get_state()  # type: ignore[misc]

    def set_state(self, state: Any) -> None:
        super().set_state(state)  # type: ignore[misc]
        self._active = False  # restored rows are stored plainly; later adds must match them


class FrameStackReplayBuffer(_FrameDedup, ReplayBuffer):
    """:class:`~rldataflow.data.ReplayBuffer` storing each frame once (see the module docs).

    Args:
        capacity: rows kept.
        seed: the sampling generator's seed.
        dedup: ``"auto"`` (deduplicate if the first batch's ``obs`` are uint8 frame stacks),
            ``"on"`` (require them), ``"off"`` (a plain buffer).
    """

    def __init__(self, capacity: int, seed: int | None = None, dedup: str = "auto") -> None:
        super().__init__(capacity, seed)
        self._init_frames(dedup)


class PrioritizedFrameStackReplayBuffer(_FrameDedup, PrioritizedReplayBuffer):
    """:class:`~rldataflow.data.PrioritizedReplayBuffer` storing each frame once (see the
    module docs and :class:`FrameStackReplayBuffer` for ``dedup``)."""

    def __init__(self, capacity: int, alpha: float = 0.6, seed: int | None = None,
                 eps: float = 1e-6, dedup: str = "auto") -> None:
        super().__init__(capacity, alpha=alpha, seed=seed, eps=eps)
        self._init_frames(dedup)
