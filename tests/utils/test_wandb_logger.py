"""W&B logging offline: a run with --wandb and no API key writes an offline W&B run holding the
same metrics as progress.csv, and says so in one line."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys

import pytest

pytest.importorskip("wandb")


def _history(path) -> list[dict[str, str]]:
    """The history records of a ``.wandb`` file (W&B's LevelDB-style log of protobuf records:
    a 7-byte file header, then 32 KiB blocks of chunks with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, records, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:      # full
            records.append(chunk)
        elif kind == 2:    # first
            partial = chunk
        elif kind == 3:    # middle
            partial += chunk
        elif kind == 4:    # last
            records.append(partial + chunk)
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json
                         for item in record.history.item})
    return rows


def test_train_with_wandb_logs_offline_without_an_api_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc from `wandb login`
    (tmp_path / "home").mkdir()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rldataflow", "train", "pg", "--env", "CartPole-v1",
         "--runtime", "inline", "--num-workers", "0", "--set", "train_batch_size=256",
         "--stop-iters", "3", "--quiet", "--wandb", "--wandb-project", "rldataflow-test",
         "--out", str(run_dir)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("wandb:")]
    assert len(notes) == 1 and "no API key configured" in notes[0] and "offline" in notes[0]
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1, list((run_dir / "wandb").rglob("*"))
    history = _history(offline[0])
    with open(run_dir / "progress.csv", newline="") as fh:
        progress = list(csv.DictReader(fh))
    assert len(history) == len(progress) == 3
    for logged, row in zip(history, progress, strict=True):
        assert int(logged["_step"]) == int(row["iteration"])
        assert float(logged["episode_return_mean"]) == pytest.approx(
            float(row["episode_return_mean"]))
        assert float(logged["env_steps_sampled"]) == float(row["env_steps_sampled"])
