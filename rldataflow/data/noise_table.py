"""``NoiseTable``: one large block of Gaussian noise, made once, read by every worker.

Evolution strategies send perturbations as *indices* instead of vectors (Salimans et al. 2017,
"Evolution Strategies as a Scalable Alternative to Reinforcement Learning", arXiv:1703.03864,
section 2.1): before training a table of ``size`` standard normal float32 numbers is made from
a seed, and perturbation ``i`` of a ``dim``-parameter policy is ``table[i : i + dim]``. A
worker reports ``(i, return+, return-)``; the driver rebuilds the same vector from its own view.

The table is a :class:`~rldataflow.runtime.shared_array.SharedArray`: every worker process
maps the creator's memory read-only, so eight workers cost one table, not eight, and a
handle sent to a worker is a few hundred bytes. This covers the ``inline`` and ``process``
runtimes and Ray actors on the driver's machine. A worker on another machine (a Ray cluster
node) cannot map the driver's memory: it regenerates the table from the seed, once per
process (the same numbers; putting one copy per node in Ray's object store is not done yet).

Example::

    noise = NoiseTable.create(size=1_000_000, seed=0)
    idx = noise.sample_index(np.random.default_rng(1), dim=100)
    eps = noise.get(idx, 100)            # a read-only view, no copy
    noise.release()
"""

from __future__ import annotations

import socket

import numpy as np

from rldataflow.runtime.shared_array import SharedArray

__all__ = ["NoiseTable"]

#: numbers generated per chunk while filling (bounds the creator's extra memory to 32 MB)
_CHUNK = 8_000_000


def _fill_gaussian(out: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for lo in range(0, out.shape[0], _CHUNK):
        hi = min(lo + _CHUNK, out.shape[0])
        rng.standard_normal(hi - lo, dtype=np.float32, out=out[lo:hi])


class NoiseTable:
    """``size`` float32 standard normal numbers from ``seed``, shared by all processes.

    Build with :meth:`create`; pass the object to workers (it pickles as a handle). ``get``
    returns read-only views.
    """

    def __init__(self, shared: SharedArray, size: int, seed: int,
                 host: str | None = None) -> None:
        self.shared: SharedArray = shared
        self.size = int(size)
        self.seed = int(seed)
        #: the machine whose shared memory holds the table
        self.host = host or socket.gethostname()
        self._regenerated: np.ndarray | None = None

    @classmethod
    def create(cls, size: int, seed: int = 0) -> NoiseTable:
        """Make the table in this machine's shared memory (the returned object owns it)."""
        if size < 1:
            raise ValueError(f"noise table size must be >= 1, got {size}")
        shared = SharedArray.create((int(size),), np.float32,
                                    fill=lambda out: _fill_gaussian(out, seed),
                                    prefix="rldataflow-noise")
        return cls(shared, size, seed)

    @property
    def noise(self) -> np.ndarray:
        """The whole table (read-only): the shared memory, or on another machine a copy
        regenerated from the seed."""
        if self.host == socket.gethostname():
            return self.shared.array
        if self._regenerated is None:
            arr = np.empty(self.size, dtype=np.float32)
            _fill_gaussian(arr, self.seed)
            arr.flags.writeable = False
            self._regenerated = arr
        return self._regenerated

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_regenerated": None}  # never ship the numbers

    def get(self, index: int, dim: int) -> np.ndarray:
        """Perturbation ``index`` of a ``dim``-vector: ``noise[index : index + dim]``."""
        if not 0 <= index <= self.size - dim:
            raise IndexError(f"noise index {index} out of range for dim {dim} in a table of "
                             f"{self.size}")
        return self.noise[index:index + dim]

    def sample_index(self, rng: np.random.Generator, dim: int) -> int:
        """A uniformly random valid start index for a ``dim``-vector."""
        if dim > self.size:
            raise ValueError(f"a noise table of {self.size} numbers cannot perturb {dim} "
                             "parameters; raise config key 'noise_size'")
        return int(rng.integers(0, self.size - dim + 1))

    def release(self) -> None:
        """Free the table (its creator's copy only; open views stay valid)."""
        self.shared.release()

    def stop(self) -> None:
        """As :meth:`release`, so a :class:`~rldataflow.flow.Plan` can own the table."""
        self.release()

    def __repr__(self) -> str:
        return f"NoiseTable(size={self.size}, seed={self.seed}, {self.shared!r})"
