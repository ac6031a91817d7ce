"""Checkpoints: round trip, loading never runs code, a crashed save leaves the old one intact."""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from rldataflow.utils import checkpoint as ckpt
from rldataflow.utils.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def nested_state() -> dict:
    return {
        "policy": OrderedDict(w=torch.randn(3, 2), b=torch.zeros(2)),
        "obs_filter": {"mean": np.arange(4, dtype=np.float32), "count": 12,
                       "shape": (4,), "name": "running"},
        "rng": [np.uint32(7), np.array([1, 2], dtype=np.uint64), np.array(["ab", "c"])],
        "flags": np.array([[True, False]]),
        "big_endian": np.array([1.5, 2.5], dtype=">f8"),
        "scalar": np.float64(0.25),
        "iteration": 10,
        "lr": 3e-4,
        "nothing": None,
        "blob": b"\x00\x01",
        "empty": np.zeros((0, 3), dtype=np.int16),
    }


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def test_round_trip_nested_numpy_tensors_scalars(tmp_path):
    state = nested_state()
    path = save_checkpoint(tmp_path / "checkpoint_000010", state, {"iteration": 10,
                                                                   "algo": "PPO",
                                                                   "steps": np.int64(5)})
    loaded, meta = load_checkpoint(path)
    assert_same(state, loaded)
    assert meta["format_version"] == 1 and meta["iteration"] == 10 and meta["steps"] == 5
    assert "created" in meta
    # loaded arrays are ordinary writable arrays
    loaded["obs_filter"]["mean"][0] = 99.0
    assert sorted(os.listdir(path)) == ["metadata.json", "state.pt"]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_bomb_is_refused_and_never_runs(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"x": 1}, {})
    marker = tmp_path / "pwned"
    torch.save({"rldataflow_state": 1, "state": {"x": Evil(marker)}, "numpy": []},
               path / "state.pt")
    with pytest.raises(CheckpointError, match="refusing to load .*state.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unsupported_state_is_refused_at_save_time(tmp_path):
    with pytest.raises(CheckpointError, match=r"state\['a'\]\[0\] has unsupported type .*Evil"):
        save_checkpoint(tmp_path / "ck", {"a": [Evil("x")]}, {})
    with pytest.raises(CheckpointError, match="object"):
        save_checkpoint(tmp_path / "ck", {"a": np.array([object()])}, {})
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "ck", {}, {"format_version": 3})
    assert not (tmp_path / "ck").exists()
    assert os.listdir(tmp_path) == []


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_000001"
    save_checkpoint(path, {"w": torch.ones(3)}, {"iteration": 1})

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.write(b"garbage")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"iteration": 2})
    monkeypatch.setattr(torch, "save", real_save)

    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], torch.ones(3)) and meta["iteration"] == 1
    assert os.listdir(tmp_path) == ["checkpoint_000001"]  # temp dir cleaned up


def test_failed_swap_restores_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(path, {"v": 1}, {})
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # moving the new checkpoint in
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", flaky_replace)
    with pytest.raises(CheckpointError, match="cannot save checkpoint .*disk full"):
        save_checkpoint(path, {"v": 2}, {})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert load_checkpoint(path)[0] == {"v": 1}
    assert os.listdir(tmp_path) == ["ck"]


def test_overwrite_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "ck"
    save_checkpoint(path, {"v": 1}, {"n": 1})
    (tmp_path / ".ck.tmp-stale").mkdir()  # left by a save that was killed earlier
    save_checkpoint(path, {"v": 2}, {"n": 2})
    state, meta = load_checkpoint(path)
    assert state == {"v": 2} and meta["n"] == 2
    assert os.listdir(tmp_path) == ["ck"]


def test_refuses_to_overwrite_a_non_checkpoint(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "precious", {"v": 1}, {})
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_saves_into_an_existing_empty_directory(tmp_path):
    target = Path(tempfile.mkdtemp(dir=tmp_path))  # the common way to get a fresh directory
    path = save_checkpoint(target, {"v": 3}, {"n": 3})
    state, meta = load_checkpoint(path)
    assert state == {"v": 3} and meta["n"] == 3
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temporary left beside it


def test_clear_load_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint .*empty"):
        load_checkpoint(tmp_path / "empty")
    path = save_checkpoint(tmp_path / "ck", {"v": 1}, {})
    meta = json.loads((path / "metadata.json").read_text())
    meta["format_version"] = 99
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format_version 99 in .*ck"):
        load_checkpoint(path)
    path2 = save_checkpoint(tmp_path / "ck2", {"v": 1}, {})
    (path2 / "state.pt").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="corrupt state.pt in .*ck2"):
        load_checkpoint(path2)
    path3 = save_checkpoint(tmp_path / "ck3", {"v": 1}, {})
    torch.save({"v": torch.ones(1)}, path3 / "state.pt")  # a foreign (but safe) file
    with pytest.raises(CheckpointError, match="not an rldataflow state file"):
        load_checkpoint(path3)


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    for it in (5, 20, 100):
        save_checkpoint(checkpoint_path(tmp_path, it), {"it": it}, {"iteration": it})
    (tmp_path / "checkpoint_000999").mkdir()           # incomplete: no metadata
    (tmp_path / ".checkpoint_001000.tmp-x").mkdir()    # a save in progress
    (tmp_path / "checkpoint_notes").mkdir()
    assert checkpoint_path(tmp_path, 20).name == "checkpoint_000020"
    assert [p.name for p in list_checkpoints(tmp_path)] == \
        ["checkpoint_000005", "checkpoint_000020", "checkpoint_000100"]
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "checkpoint_000100"
    assert read_metadata(latest)["iteration"] == 100


def test_module_and_optimizer_state_dicts_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ck", {"model": model.state_dict(),
                                             "optimizer": opt.state_dict()}, {})
    state, _ = load_checkpoint(path)
    assert_same(model.state_dict(), state["model"])
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_views_do_not_save_their_whole_storage(tmp_path):
    big = torch.zeros(1_000_000)
    path = save_checkpoint(tmp_path / "ck", {"head": big[:10]}, {})
    assert (path / "state.pt").stat().st_size < 100_000
    assert torch.equal(load_checkpoint(path)[0]["head"], torch.zeros(10))
