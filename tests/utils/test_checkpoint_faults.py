"""Checkpoints under faults: a process killed at random moments while saving, untrusted files.

The unit tests in test_utils_checkpoint.py inject failures at chosen points; here a real
writer process is SIGKILLed at random moments, and every file a checkpoint holds is replaced
by a payload that would run code if it were unpickled.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import rldataflow
from rldataflow.trainer import Algorithm
from rldataflow.utils.checkpoint import (
    METADATA_FILE,
    STATE_FILE,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

KILLS = 50
ROWS = 256 * 1024  # a 1 MiB tensor: each save takes a few ms, so kills land inside it


def _state(version: int) -> tuple[dict, dict]:
    return ({"version": version, "weights": torch.full((ROWS,), float(version)),
             "obs_mean": np.full(3, version, dtype=np.float64)},
            {"iteration": version})


def _save_forever(path: Path, first_version: int) -> None:
    version = first_version
    while True:
        save_checkpoint(path, *_state(version))
        version += 1


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")
def test_sigkill_during_save_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_000001"
    save_checkpoint(path, *_state(0))
    rng = random.Random(0)
    last_seen = 0
    interrupted = 0  # kills that left a temp/aside directory: they landed mid-save
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:  # the writer
            try:
                # a forked child must not enter the parent's intra-op thread pool (it hangs)
                torch.set_num_threads(1)
                _save_forever(path, last_seen + 1)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        interrupted += any(p.name.startswith(".") for p in tmp_path.iterdir())

        state, meta = load_checkpoint(path)  # never raises: the previous version is there
        version = state["version"]
        assert version >= last_seen
        assert meta["iteration"] == version  # metadata and state are of the same save
        assert torch.equal(state["weights"], torch.full((ROWS,), float(version)))
        np.testing.assert_array_equal(state["obs_mean"], np.full(3, version, dtype=np.float64))
        assert latest_checkpoint(tmp_path) == path
        last_seen = version
    print(f"{interrupted}/{KILLS} kills landed mid-save; last version {last_seen}")
    # the test means something only if many kills hit a save in progress
    assert interrupted >= KILLS // 5, interrupted
    assert last_seen > 0


def test_kill_between_the_two_renames_recovers_the_previous_checkpoint(tmp_path):
    # the narrowest window: the old checkpoint moved aside, the new one not yet moved in
    path = tmp_path / "checkpoint_000003"
    save_checkpoint(path, {"v": torch.ones(2)}, {"iteration": 3})
    os.replace(path, tmp_path / ".checkpoint_000003.old-0123abcd")
    (tmp_path / ".checkpoint_000003.tmp-xyz").mkdir()  # the unfinished new one

    assert latest_checkpoint(tmp_path) == path
    state, meta = load_checkpoint(path)
    assert torch.equal(state["v"], torch.ones(2)) and meta["iteration"] == 3


# --------------------------------------------------------------------------------------------
# loading never executes code


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_zip_with(payload: bytes) -> bytes:
    """A torch-format zip archive whose pickle is ``payload``."""
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info, data)
    return out.getvalue()


def _trained_checkpoint(tmp_path: Path) -> Path:
    with rldataflow.build("ppo", env="CartPole-v1", runtime="inline", num_workers=0,
                          train_batch_size=64, minibatch_size=32, num_epochs=1,
                          seed=0) as algo:
        algo.train()
        return algo.save(tmp_path / "run" / "checkpoint_000001")


def test_no_file_of_a_checkpoint_can_run_code(tmp_path):
    clean = _trained_checkpoint(tmp_path)
    good_state = (clean / STATE_FILE).read_bytes()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(marker), protocol=2)
    hostile_state_files = {
        "pickle inside the torch archive": _torch_zip_with(evil),
        "a bare pickle": evil,
        "a pickle after a zip header": b"PK\x03\x04" + evil,
    }
    for what, content in hostile_state_files.items():
        (clean / STATE_FILE).write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            Algorithm.restore(clean)
        assert str(clean) in str(err.value), what
        assert "\n" not in str(err.value), what
        assert not marker.exists(), what

    (clean / STATE_FILE).write_bytes(good_state)
    # metadata.json is parsed as JSON only: a pickle there is a corrupt file, not code
    (clean / METADATA_FILE).write_bytes(evil)
    with pytest.raises(CheckpointError, match="corrupt metadata.json"):
        Algorithm.restore(clean)
    # a JSON object naming a class is data, not an instruction
    (clean / METADATA_FILE).write_text(json.dumps(
        {"format_version": 1, "algorithm": "os.system", "config": {}}))
    with pytest.raises(Exception) as err:
        Algorithm.restore(clean)
    assert "os.system" in str(err.value)
    assert not marker.exists()


def test_restore_gives_identical_weights_optimizer_state_and_counters(tmp_path,
                                                                     assert_same_state):
    for name, options in {
        "ppo": dict(train_batch_size=64, minibatch_size=32, num_epochs=2),
        "dqn": dict(learning_starts=64, train_batch_size=32, rollout_fragment_length=16),
    }.items():
        with rldataflow.build(name, env="CartPole-v1", runtime="inline", num_workers=0,
                              seed=1, **options) as algo:
            for _ in range(3):
                algo.train()
            directory = algo.save(tmp_path / name)
            policy = algo.workers.local_worker().policy
            weights = {k: v.clone() for k, v in policy.model.state_dict().items()}
            optimizer = policy.learner.state_dict()
            counters = dict(algo.metrics.counters)

        restored = Algorithm.restore(directory)
        try:
            again = restored.workers.local_worker().policy
            for key, value in again.model.state_dict().items():
                assert torch.equal(value, weights[key]), (name, key)
            assert_same_state(again.learner.state_dict(), optimizer, f"{name} learner")
            restored_counters = dict(restored.metrics.counters)
            # the replay buffer is not saved: a restored run refills it, so its count restarts
            if "replay_rows_added" in counters:
                assert restored_counters.pop("replay_rows_added") == 0
                counters.pop("replay_rows_added")
            assert restored_counters == counters, name
        finally:
            restored.stop()

