"""Reading a Parquet dataset with Ray Data (the ``ray`` runtime's dataset reader).

:func:`ray_dataset_chunks` reads the dataset's shards with ``ray.data.read_parquet``, so the
files are read by Ray tasks across the cluster, and streams the result block by block
(``iter_batches(batch_size=None)``: each block comes from one file, its rows in order, which
the per-chunk postprocessing of :func:`~rldataflow.ops.from_dataset` needs). Columns are turned
into numpy arrays exactly as :class:`~rldataflow.data.dataset.DatasetReader` does (shapes from
the field metadata). ``ray`` is imported only when this is called: the core never needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from rldataflow.data.dataset import (
    REQUIRED_COLUMNS,
    DatasetError,
    DatasetReader,
    _arrow_column_to_numpy,
    require_pyarrow,
)
from rldataflow.data.sample_batch import SampleBatch

__all__ = ["ray_dataset_chunks"]


def _import_ray_data() -> Any:
    try:
        import ray.data
    except ImportError:
        raise ImportError('reading datasets with Ray Data needs ray: pip install '
                          '"rldataflow[ray]"') from None
    return ray.data


def ray_dataset_chunks(path: str | os.PathLike[str], columns: Sequence[str] | None = None,
                       required: Sequence[str] = REQUIRED_COLUMNS,
                       files: Sequence[Any] | None = None) -> Iterator[SampleBatch]:
    """The rows of the Parquet dataset at ``path`` (or of ``files`` of it), one
    :class:`SampleBatch` per Ray Data block. Example::

        for chunk in ray_dataset_chunks("data/cartpole"):   # Ray is up (the ray runtime)
            ...
    """
    reader = DatasetReader(path, columns=columns, required=required)
    reader.check_schema()
    paths = [str(f) for f in (files if files is not None else reader.files)]
    not_parquet = [p for p in paths if not p.endswith(".parquet")]
    if not_parquet:
        raise DatasetError(f"dataset {os.fspath(path)}: Ray Data reading needs Parquet shards, "
                           f"but {not_parquet[0]} is not one (write with "
                           "output_format=parquet, or use another runtime)")
    _, pq = require_pyarrow()
    schema = pq.read_schema(paths[0])
    names = [c for c in (columns or schema.names) if c in schema.names]
    fields = {name: schema.field(name) for name in names}
    rd = _import_ray_data()
    import pyarrow.fs

    # absolute local paths on pyarrow's local filesystem (what DatasetReader listed). Ray
    # Data still lists them through fsspec in several threads: without aiohttp, fsspec's http
    # module fails to import and the threads race on it (hence aiohttp in the ray extra)
    ds = rd.read_parquet([os.path.abspath(p) for p in paths], columns=names,
                         filesystem=pyarrow.fs.LocalFileSystem())
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if table.num_rows:
            yield SampleBatch({name: _arrow_column_to_numpy(table.column(name), fields[name])
                               for name in names})
