"""Reading a Parquet dataset with Ray Data gives back every row exactly (marked ray)."""

from __future__ import annotations

import numpy as np
import pytest

from rldataflow.data import SampleBatch as SB
from rldataflow.data.dataset import DatasetReader, DatasetWriter

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.ray


def write_dataset(path, rows=1000, per_file=150):
    rng = np.random.default_rng(0)
    batch = SB({SB.OBS: rng.normal(size=(rows, 2, 3)).astype(np.float32),
                SB.ACTIONS: rng.integers(0, 4, rows), SB.REWARDS: rng.normal(size=rows).astype(
                    np.float32),
                SB.TERMINATEDS: np.zeros(rows, bool), SB.TRUNCATEDS: np.zeros(rows, bool),
                SB.EPS_ID: np.repeat(np.arange(rows // 50), 50), SB.T: np.tile(np.arange(50),
                                                                                rows // 50)})
    with DatasetWriter(path, "parquet", per_file, tag="t") as writer:
        writer.write(batch)
    return batch


def by_row(batch: SB) -> SB:
    return batch.take(np.lexsort((batch[SB.T], batch[SB.EPS_ID])))


def test_ray_data_reads_every_row_exactly(ray_runtime, tmp_path):
    from rldataflow.data.ray_reader import ray_dataset_chunks
    from rldataflow.ops import from_dataset

    written = write_dataset(tmp_path / "d")
    assert len(DatasetReader(tmp_path / "d").files) == 7
    chunks = list(ray_dataset_chunks(tmp_path / "d"))
    got = by_row(SB.concat_samples(chunks))
    for batch in (got, by_row(SB.concat_samples(list(from_dataset(
            tmp_path / "d", 64, shuffle_buffer_size=200, num_epochs=1, reader="ray"))))):
        assert batch.count == written.count
        for key in written.keys():
            assert batch[key].dtype == written[key].dtype, key
            np.testing.assert_array_equal(batch[key], written[key], err_msg=key)
    # each block comes from one file with its rows in order (per-chunk postprocessing needs it)
    for chunk in chunks:
        steps = np.diff(chunk[SB.T])
        assert np.all((steps == 1) | (np.diff(chunk[SB.EPS_ID]) != 0))


def test_ray_data_needs_parquet(ray_runtime, tmp_path):
    from rldataflow.data.dataset import DatasetError
    from rldataflow.data.ray_reader import ray_dataset_chunks

    rows = write_dataset(tmp_path / "p", rows=100)
    with DatasetWriter(tmp_path / "j", "json", 100, tag="t") as writer:
        writer.write(rows)
    with pytest.raises(DatasetError, match="Parquet"):
        next(ray_dataset_chunks(tmp_path / "j"))
