"""Experience datasets: exact round trips, atomic shards, clear errors, bounded shuffling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rldataflow.data import SampleBatch
from rldataflow.data.dataset import (
    PYARROW_HINT,
    REQUIRED_COLUMNS,
    DatasetError,
    DatasetReader,
    DatasetWriter,
    MissingPyarrowError,
    require_pyarrow,
)
from rldataflow.ops import from_dataset

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FORMATS = ["parquet", "json"]


def make_batch(n: int, start: int = 0, seed: int = 0) -> SampleBatch:
    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + n, dtype=np.int64)
    return SampleBatch({
        "obs": rng.standard_normal((n, 3, 2)).astype(np.float32),   # multi-dim obs
        "actions": rng.integers(0, 4, n).astype(np.int64),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminateds": rng.random(n) < 0.1,
        "truncateds": rng.random(n) < 0.05,
        "eps_id": ids // 10,
        "t": ids % 10,
        "action_logp": rng.standard_normal(n).astype(np.float32),
        "action_dist_inputs": rng.standard_normal((n, 4)).astype(np.float32),
        "image": rng.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8),
        "value64": rng.standard_normal(n),                              # float64 kept
        "row": ids,
    })


def read_all(path, **kwargs) -> SampleBatch:
    return SampleBatch.concat_samples(list(DatasetReader(path, **kwargs).iter_batches()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_column_round_trips_exactly(tmp_path, fmt):
    batch = make_batch(25)
    with DatasetWriter(tmp_path / "ds", format=fmt, max_rows_per_file=10) as w:
        w.write(batch.slice(0, 13))
        w.write(batch.slice(13, 25))
    assert len(w.files) == 3
    assert all(f.name.endswith(".parquet" if fmt == "parquet" else ".jsonl") for f in w.files)
    back = read_all(tmp_path / "ds")
    assert sorted(back) == sorted(batch)
    order = np.argsort(back["row"])  # files are read in name order, which is write order
    assert (order == np.arange(25)).all()
    for key, value in batch.items():
        assert back[key].dtype == value.dtype, key
        assert back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shards_are_bounded_and_whole(tmp_path, fmt):
    with DatasetWriter(tmp_path, format=fmt, max_rows_per_file=7) as w:
        w.write(make_batch(20))
    sizes = [DatasetReader(f).num_rows() for f in w.files]
    assert sizes == [7, 7, 6]
    assert DatasetReader(tmp_path).num_rows() == 20
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left


def test_parquet_multidim_columns_are_fixed_size_lists_with_shape(tmp_path):
    with DatasetWriter(tmp_path, max_rows_per_file=100) as w:
        w.write(make_batch(5))
    schema = pq.read_schema(w.files[0])
    field = schema.field("obs")
    assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == 6
    assert json.loads(field.metadata[b"rldataflow.shape"]) == [3, 2]
    assert pq.ParquetFile(w.files[0]).num_row_groups == 1


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from rldataflow.data.dataset import DatasetWriter
    n = 50_000
    w = DatasetWriter(sys.argv[1], format=sys.argv[2], max_rows_per_file=n)
    i = 0
    while True:
        obs = np.full((n, 8), i, dtype=np.float32)
        w.write({"obs": obs, "actions": np.full(n, i), "rewards": np.ones(n, np.float32),
                 "terminateds": np.zeros(n, bool), "truncateds": np.zeros(n, bool),
                 "eps_id": np.full(n, i), "t": np.arange(n)})
        i += 1
        print(i, flush=True)
""")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_writer_killed_mid_write_leaves_a_readable_dataset(tmp_path, fmt):
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), str(out), fmt],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"   # one whole shard is down
        proc.stdout.readline()
        time.sleep(0.05 if fmt == "parquet" else 0.3)  # now most likely inside a write
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader = DatasetReader(out)
    assert len(reader.files) >= 2
    whole = SampleBatch.concat_samples(list(reader.iter_batches()))
    assert whole.count == 50_000 * len(reader.files)  # only whole shards are visible
    for i in np.unique(whole["actions"]):
        rows = whole["actions"] == i
        assert rows.sum() == 50_000
        assert (whole["obs"][rows] == i).all()


def test_unfinished_temp_shards_are_skipped(tmp_path):
    with DatasetWriter(tmp_path, max_rows_per_file=10) as w:
        w.write(make_batch(10))
    (tmp_path / ".part-x-000001.parquet.tmp").write_bytes(b"PAR1 half a file")
    assert DatasetReader(tmp_path).num_rows() == 10


def test_bad_path_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match="nope") as info:
        DatasetReader(missing)
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="holds no .parquet or .jsonl") as info:
        from_dataset(tmp_path, batch_size=4)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_schema_names_the_file_and_the_missing_column(tmp_path, fmt):
    batch = make_batch(5)
    del batch["rewards"]
    with DatasetWriter(tmp_path, format=fmt) as w:
        w.write(batch)
    with pytest.raises(DatasetError) as info:
        from_dataset(tmp_path, batch_size=2)
    msg = str(info.value)
    assert "'rewards'" in msg and w.files[0].name in msg and "\n" not in msg
    with pytest.raises(DatasetError, match="'rewards'"):
        list(DatasetReader(tmp_path).iter_batches())


def test_a_plain_pyarrow_file_is_readable(tmp_path):
    cols = {k: np.arange(6) for k in REQUIRED_COLUMNS}
    pq.write_table(pa.table(cols), tmp_path / "plain.parquet", row_group_size=4)
    reader = DatasetReader(tmp_path)
    assert [c.count for c in reader.iter_batches()] == [4, 2]


def test_missing_pyarrow_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingPyarrowError) as info:
        require_pyarrow()
    assert str(info.value) == PYARROW_HINT
    assert isinstance(info.value, ImportError)


def test_missing_pyarrow_fails_the_config(monkeypatch):
    import importlib.util

    from rldataflow.utils.config import AlgorithmConfig, ConfigError, build_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "rldataflow\[offline\]"'):
        build_config(AlgorithmConfig, {"output": "/tmp/x"})
    build_config(AlgorithmConfig, {"output": "/tmp/x", "output_format": "json"})  # stdlib only


def test_the_core_does_not_import_pyarrow():
    code = ("import sys, rldataflow, rldataflow.ops, rldataflow.data, rldataflow.trainer, "
            "rldataflow.algorithms.ppo; print('pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("fmt", FORMATS)
def test_shuffle_buffer_holds_a_bounded_number_of_rows(tmp_path, fmt):
    buffer, chunk, total = 500, 100, 5000   # the dataset is 10x the buffer
    with DatasetWriter(tmp_path, format=fmt, max_rows_per_file=chunk) as w:
        for start in range(0, total, 1000):
            w.write(make_batch(1000, start=start, seed=start))
    held = []
    stream = from_dataset(tmp_path, batch_size=64, shuffle_buffer_size=buffer, num_epochs=1,
                          seed=1, buffer_out=held)
    batches = list(stream)
    rows = np.concatenate([b["row"] for b in batches])
    assert sorted(rows.tolist()) == list(range(total))        # every row exactly once
    assert held[0].max_rows_held <= buffer + chunk
    assert held[0].max_rows_held >= buffer
    assert all(b.count == 64 for b in batches[:-1])
    # shuffled across file boundaries, not read in order
    assert not (np.diff(rows[:buffer]) > 0).all()
    assert len({int(r) // chunk for r in batches[0]["row"]}) > 1


def test_shuffle_is_seeded(tmp_path):
    with DatasetWriter(tmp_path, max_rows_per_file=50) as w:
        w.write(make_batch(300))
    a = next(from_dataset(tmp_path, batch_size=32, shuffle_buffer_size=100, seed=3))["row"]
    b = next(from_dataset(tmp_path, batch_size=32, shuffle_buffer_size=100, seed=3))["row"]
    c = next(from_dataset(tmp_path, batch_size=32, shuffle_buffer_size=100, seed=4))["row"]
    assert (a == b).all() and not (a == c).all()


def test_from_dataset_repeats_epochs_by_default(tmp_path):
    with DatasetWriter(tmp_path, max_rows_per_file=50) as w:
        w.write(make_batch(100))
    stream = from_dataset(tmp_path, batch_size=40, shuffle_buffer_size=60)
    rows = np.concatenate([b["row"] for b in stream.take(10)])
    assert len(rows) == 400 and np.bincount(rows).min() >= 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_ppo_with_output_writes_every_sampled_batch(tmp_path, fmt):
    import rldataflow

    out = tmp_path / "out"
    with rldataflow.build("ppo", runtime="process", num_workers=2, output=str(out),
                          output_format=fmt, output_max_rows_per_file=300,
                          train_batch_size=512, minibatch_size=256, num_epochs=1,
                          rollout_fragment_length=32) as algo:
        result = algo.train()
        result = algo.train()
    sampled = result["env_steps_sampled"]
    assert result["counters"]["dataset_rows_written"] == sampled
    reader = DatasetReader(out)
    assert reader.num_rows() == sampled
    assert len({f.name.split("-")[1] for f in reader.files}) == 2   # each worker wrote its own
    whole = read_all(out)
    assert whole["obs"].shape == (sampled, 4) and whole["obs"].dtype == np.float32
    assert {"action_logp", "env_id", "vf_preds"} <= set(whole)
    assert max(DatasetReader(f).num_rows() for f in reader.files) <= 300


@pytest.mark.parametrize("name,config", [
    ("a3c", dict(num_workers=2)),
    ("a3c", dict(num_workers=0)),
    ("impala", dict(num_workers=2, num_aggregation_workers=1, train_batch_size=200)),
])
def test_output_is_written_where_batches_stay_on_workers(tmp_path, name, config):
    """A3C's batches never leave the workers and IMPALA's aggregators gather theirs: the
    workers write them all (inline runtime: no request runs ahead of the plan)."""
    import rldataflow

    out = tmp_path / "out"
    with rldataflow.build(name, env="CartPole-v1", runtime="inline", output=str(out),
                          rollout_fragment_length=50, min_steps_per_iteration=0,
                          **config) as algo:
        for _ in range(3):
            result = algo.train()
        cfg = algo.config
    sampled = result["env_steps_sampled"]
    rows = DatasetReader(out).num_rows()
    assert sampled > 0
    if name == "a3c":
        assert rows == sampled
    else:  # an aggregator runs ahead: its requests in flight and its part-built train batch
        ahead = (cfg.num_workers * cfg.num_async * cfg.num_envs_per_worker
                 * cfg.rollout_fragment_length + cfg.train_batch_size)
        assert sampled <= rows <= sampled + ahead
    assert {"obs", "actions", "rewards", "eps_id"} <= set(read_all(out))
