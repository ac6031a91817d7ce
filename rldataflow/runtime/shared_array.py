"""``SharedArray``: one read-only numpy array that every actor on the machine maps, never copies.

The array lives in a file in ``/dev/shm`` (POSIX shared memory on Linux; the temp directory
elsewhere), written once by its creator. The handle pickles to its path, shape and dtype only
(about 200 bytes), so sending it to an actor of the ``process`` runtime ships no data: the
actor maps the same physical pages read-only (``np.memmap(mode="r")``), and several handles
in one process share one mapping. The creator removes the file on :meth:`SharedArray.release`
or when the handle is garbage-collected (or at exit); mappings already open stay valid.

This serves the ``inline`` and ``process`` runtimes and Ray actors on the driver's machine.
Ray actors on other machines cannot map the driver's file; a noise table for them is
regenerated from its seed (see ``rldataflow.data.noise_table``).

Example::

    shared = SharedArray.create((1_000_000,), np.float32, fill=lambda a: a.fill(1.0))
    actor = rt.create_actor(Reader, shared)      # Reader reads shared.array: no copy
    ...
    shared.release()
"""

from __future__ import annotations

import os
import tempfile
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SharedArray", "shared_memory_dir"]

#: path -> the read-only mapping this process holds (one per process, however many handles)
_MAPPINGS: dict[str, np.ndarray] = {}


def shared_memory_dir() -> Path:
    """Where shared arrays live: ``/dev/shm`` if writable, else the temp directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def _unlink(path: str) -> None:
    _MAPPINGS.pop(path, None)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SharedArray:
    """A handle to a shared read-only array; :attr:`array` maps it (see the module docs)."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: str, *,
                 _owner: bool = False) -> None:
        self.path = path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = str(np.dtype(dtype))
        self.owner = _owner
        self._finalizer = weakref.finalize(self, _unlink, path) if _owner else None

    @classmethod
    def create(cls, shape: tuple[int, ...] | int, dtype: Any,
               fill: Callable[[np.ndarray], None], prefix: str = "rldataflow") -> SharedArray:
        """A new shared array of ``shape`` and ``dtype``, written by ``fill(writable_view)``.

        ``fill`` gets a writable memory map of the file (write in chunks to keep the driver's
        memory at one copy). The returned handle owns the file.
        """
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        path = str(shared_memory_dir() / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        try:
            writable = np.memmap(path, dtype=np.dtype(dtype), mode="w+", shape=shape)
            fill(writable)
            writable.flush()
            del writable
        except BaseException:
            _unlink(path)
            raise
        return cls(path, shape, str(np.dtype(dtype)), _owner=True)

    @property
    def array(self) -> np.ndarray:
        """The read-only array (mapped on first use in this process, then reused)."""
        mapped = _MAPPINGS.get(self.path)
        if mapped is None:
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"shared array {self.path} is gone (its creator "
                                        "released it or exited)")
            mapped = np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", shape=self.shape)
            _MAPPINGS[self.path] = mapped
        return mapped

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def release(self) -> None:
        """Remove the file (creator only; a no-op for copies). Open mappings stay valid."""
        if self._finalizer is not None:
            self._finalizer()

    def __reduce__(self) -> tuple[Any, ...]:
        # a copy sent to an actor never owns the file
        return (SharedArray, (self.path, self.shape, self.dtype))

    def __repr__(self) -> str:
        return (f"SharedArray({self.path}, shape={self.shape}, dtype={self.dtype}"
                f"{', owner' if self.owner else ''})")
