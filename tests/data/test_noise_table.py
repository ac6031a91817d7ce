"""The shared noise table: made once from a seed, mapped (not copied) by every worker."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from rldataflow.data.noise_table import NoiseTable
from rldataflow.runtime.shared_array import SharedArray, shared_memory_dir


class _Reader:
    """An actor that holds a noise table and reports what it sees."""

    def __init__(self, noise: NoiseTable) -> None:
        self.noise = noise

    def read(self, index: int, dim: int) -> list[float]:
        return self.noise.get(index, dim).tolist()

    def where(self) -> dict:
        arr = self.noise.noise
        maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
        return {"pid": os.getpid(), "path": self.noise.shared.path,
                "writeable": bool(arr.flags.writeable), "owner": self.noise.shared.owner,
                "mapped": self.noise.shared.path in maps, "is_memmap": isinstance(arr, np.memmap)}


@pytest.fixture
def table():
    noise = NoiseTable.create(size=200_000, seed=3)
    yield noise
    noise.release()


def test_same_values_from_the_seed(table):
    again = NoiseTable.create(size=200_000, seed=3)
    other = NoiseTable.create(size=200_000, seed=4)
    try:
        assert np.array_equal(table.noise, again.noise)
        assert not np.array_equal(table.noise[:100], other.noise[:100])
        assert table.noise.dtype == np.float32
        assert abs(float(table.noise.mean())) < 0.01
        assert abs(float(table.noise.std()) - 1.0) < 0.01
    finally:
        again.release()
        other.release()


def test_handle_is_small_and_does_not_own(table):
    data = pickle.dumps(table)
    assert len(data) < 1_000  # the 800 kB array is not in it
    copy = pickle.loads(data)
    assert not copy.shared.owner
    copy.release()  # a copy's release never removes the creator's memory
    assert os.path.exists(table.shared.path)
    assert np.array_equal(copy.get(10, 5), table.get(10, 5))


def test_two_worker_processes_share_one_memory(table, remote_runtime):
    """Process runtime, and Ray actors on this machine (marker ``ray``)."""
    readers = [remote_runtime.create_actor(_Reader, table) for _ in range(2)]
    infos = [r.call("where").result() for r in readers]
    assert len({i["pid"] for i in infos} | {os.getpid()}) == 3
    for info in infos:
        assert info["path"] == table.shared.path and info["mapped"] and info["is_memmap"]
        assert not info["writeable"] and not info["owner"]
    before = [r.call("read", 1000, 3).result() for r in readers]
    assert before[0] == before[1] == table.get(1000, 3).tolist()
    # Write through the creator's file: if each worker held a copy, they would not see it.
    writable = np.memmap(table.shared.path, dtype=np.float32, mode="r+", shape=(table.size,))
    writable[1000:1003] = [7.0, 8.0, 9.0]
    writable.flush()
    del writable
    after = [r.call("read", 1000, 3).result() for r in readers]
    assert after == [[7.0, 8.0, 9.0]] * 2


def test_release_removes_the_memory_but_open_views_stay_valid():
    table = NoiseTable.create(size=1000, seed=0)
    view = table.get(0, 10)
    expected = view.copy()
    path = table.shared.path
    table.release()
    assert not os.path.exists(path)
    assert np.array_equal(view, expected)


def test_index_checks(table):
    rng = np.random.default_rng(0)
    idx = [table.sample_index(rng, 1000) for _ in range(200)]
    assert min(idx) >= 0 and max(idx) <= table.size - 1000
    with pytest.raises(IndexError, match="noise index"):
        table.get(table.size - 5, 10)
    with pytest.raises(ValueError, match="noise_size"):
        table.sample_index(rng, table.size + 1)


def test_shared_array_fill_error_leaves_no_file():
    def boom(out):
        raise RuntimeError("fill failed")

    with pytest.raises(RuntimeError, match="fill failed"):
        SharedArray.create((10,), np.float32, boom, prefix="rldataflow-test-boom")
    assert not [f for f in os.listdir(shared_memory_dir()) if f.startswith("rldataflow-test-boom")]


def test_a_worker_on_another_machine_regenerates_the_same_numbers(table):
    remote = pickle.loads(pickle.dumps(table))
    remote.host = "some-other-node"  # as if unpickled on a cluster node without the file
    remote.shared = SharedArray("/nonexistent/rldataflow-noise", remote.shared.shape,
                                remote.shared.dtype)
    assert np.array_equal(remote.noise, table.noise)
    assert not remote.noise.flags.writeable
    assert len(pickle.dumps(remote)) < 1_000  # the regenerated copy is not shipped on
    local_again = pickle.loads(pickle.dumps(table))
    local_again.shared = SharedArray("/nonexistent/x", (10,), "float32")
    with pytest.raises(FileNotFoundError, match="is gone"):
        _ = local_again.noise  # on the creator's machine a missing file is an error, not hidden
