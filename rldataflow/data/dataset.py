"""Experience datasets on disk: directories of Parquet or JSON-lines shards of rows.

A dataset is a directory of shard files, each a whole set of rows (one env step per row):
``part-<writer>-<seq>.parquet`` or ``.jsonl``. Several writers (one per rollout worker, say)
can write into one directory at once: each names its files with its own unique tag. A shard is
written to a hidden temporary name, flushed to disk (``fsync``) and renamed into place
(``os.replace``), so a reader only ever sees whole shards, and a killed writer leaves at most
a hidden ``.tmp`` file, which readers skip.

Schema (see ``docs/offline.md``): the required columns :data:`REQUIRED_COLUMNS` (``obs``,
``actions``, ``rewards``, ``terminateds``, ``truncateds``, ``eps_id``, ``t``) plus whatever
else the batches held (``action_logp``, ``action_dist_inputs``, ``vf_preds``,
``bootstrap_value``, ``env_id``, ...). Every column keeps its numpy dtype. A column with more
than one dimension per row (image observations, Box actions) is stored in Parquet as a
fixed-size list of the flattened row, with the row shape in the field's metadata
(``rldataflow.shape``, JSON); in JSON lines as nested lists, with the dtypes and shapes in the
file's first line (``{"rldataflow_schema": {column: {"dtype": ..., "shape": [...]}}}``).

pyarrow is optional: nothing here imports it until a Parquet file is written or read, and a
missing pyarrow is one line (:data:`PYARROW_HINT`). JSON lines need only the standard library.

Example::

    from rldataflow.data.dataset import DatasetReader, DatasetWriter

    with DatasetWriter("data/cartpole", max_rows_per_file=10_000) as writer:
        writer.write(batch)                     # a SampleBatch; shards appear as they fill
    for chunk in DatasetReader("data/cartpole").iter_batches():
        print(chunk.count, chunk["obs"].shape)  # one row group (or JSON chunk) at a time
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rldataflow.data.sample_batch import SampleBatch

__all__ = ["DATASET_FORMATS", "PYARROW_HINT", "REQUIRED_COLUMNS", "DatasetError",
           "DatasetOutput", "DatasetReader", "DatasetWriter", "require_pyarrow"]

#: the on-disk formats, and their file suffixes
DATASET_FORMATS = ("parquet", "json")
SUFFIX = {"parquet": ".parquet", "json": ".jsonl"}

#: columns every dataset file must have
REQUIRED_COLUMNS = (SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS,
                    SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS, SampleBatch.EPS_ID,
                    SampleBatch.T)

#: the one line a missing pyarrow gives
PYARROW_HINT = 'offline datasets need pyarrow: pip install "rldataflow[offline]"'

#: Parquet field metadata key holding a multi-dimensional column's row shape (JSON list)
SHAPE_KEY = b"rldataflow.shape"
#: Parquet schema metadata key: the dataset format version
VERSION_KEY = b"rldataflow.dataset_version"
DATASET_VERSION = 1
#: first-line key of a JSON-lines shard
JSON_SCHEMA_KEY = "rldataflow_schema"


class DatasetError(ValueError):
    """A dataset that cannot be read or written; the message names the path (and column)."""


class MissingPyarrowError(DatasetError, ImportError):
    """pyarrow is not installed (see :data:`PYARROW_HINT`)."""


def require_pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, imported now; :class:`MissingPyarrowError` if absent."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingPyarrowError(PYARROW_HINT) from None
    return pyarrow, pyarrow.parquet


@dataclass(frozen=True)
class DatasetOutput:
    """Where and how sampled batches are written (the ``output*`` config keys).

    Example: ``DatasetOutput("data/ppo_cartpole", format="json", max_rows_per_file=5000)``
    """

    path: str
    format: str = "parquet"
    max_rows_per_file: int = 10_000

    def __post_init__(self) -> None:
        if self.format not in DATASET_FORMATS:
            raise DatasetError(f"dataset format must be one of {DATASET_FORMATS}, got "
                               f"{self.format!r}")
        if self.max_rows_per_file < 1:
            raise DatasetError(f"max_rows_per_file must be >= 1, got {self.max_rows_per_file}")

    def writer(self, tag: str | None = None) -> DatasetWriter:
        return DatasetWriter(self.path, format=self.format,
                             max_rows_per_file=self.max_rows_per_file, tag=tag)


# --------------------------------------------------------------------------------------------
# writing

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _columns_of(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The numeric / boolean columns of a batch (object columns are not stored)."""
    out = {}
    for key, value in batch.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            out[key] = arr
    return out


def _arrow_table(cols: Mapping[str, np.ndarray]) -> Any:
    pa, _ = require_pyarrow()
    arrays, fields = [], []
    for key, arr in cols.items():
        if arr.ndim == 1:
            arrays.append(pa.array(arr))
            fields.append(pa.field(key, arrays[-1].type))
        else:
            shape = arr.shape[1:]
            size = int(np.prod(shape))
            flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, size))
            fields.append(pa.field(key, arrays[-1].type,
                                   metadata={SHAPE_KEY: json.dumps(list(shape)).encode()}))
    schema = pa.schema(fields, metadata={VERSION_KEY: str(DATASET_VERSION).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_value(arr: np.ndarray) -> list[Any]:
    # tolist() gives Python floats whose repr reads back to the same float32/float64 value
    return arr.tolist()


class DatasetWriter:
    """Writes batches into a dataset directory as whole shards of at most ``max_rows_per_file``.

    ``write(batch)`` buffers rows and writes a shard each time ``max_rows_per_file`` are held;
    ``flush()`` writes what is buffered as a (smaller) shard; ``close()`` flushes. Each shard is
    one Parquet row group (or one JSON-lines file). ``tag`` names this writer's files (default:
    a random id), so writers in several processes can share one directory.

    Example::

        with DatasetWriter("data/run1", format="json", max_rows_per_file=1000) as w:
            w.write(batch)
        w.files          # the shards written, in order
    """

    def __init__(self, path: str | os.PathLike[str], format: str = "parquet",
                 max_rows_per_file: int = 10_000, tag: str | None = None,
                 fsync: bool = True) -> None:
        if format not in DATASET_FORMATS:
            raise DatasetError(f"dataset format must be one of {DATASET_FORMATS}, got {format!r}")
        if max_rows_per_file < 1:
            raise DatasetError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        if format == "parquet":
            require_pyarrow()
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"dataset path {self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.format = format
        self.max_rows_per_file = int(max_rows_per_file)
        self.tag = tag or uuid.uuid4().hex[:12]
        self.fsync = fsync
        self.files: list[Path] = []
        self.rows_written = 0
        self._held: list[dict[str, np.ndarray]] = []
        self._held_rows = 0
        self._columns: list[str] | None = None

    def write(self, batch: Mapping[str, Any]) -> None:
        """Add a batch's rows; full shards are written at once."""
        cols = _columns_of(batch)
        if not cols:
            return
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        if self._columns is None:
            self._columns = list(cols)
        elif set(cols) != set(self._columns):
            raise DatasetError(f"dataset {self.path}: a batch with columns {sorted(cols)} does "
                               f"not match the earlier ones {sorted(self._columns)}")
        start = 0
        while start < n:
            take = min(n - start, self.max_rows_per_file - self._held_rows)
            self._held.append({k: v[start:start + take] for k, v in cols.items()})
            self._held_rows += take
            start += take
            if self._held_rows >= self.max_rows_per_file:
                self.flush()

    def flush(self) -> Path | None:
        """Write the buffered rows as one shard (nothing if none are held); its path."""
        if not self._held_rows:
            return None
        held, self._held, self._held_rows = self._held, [], 0
        keys = self._columns or list(held[0])
        cols = ({k: held[0][k] for k in keys} if len(held) == 1 else
                {k: np.concatenate([h[k] for h in held], axis=0) for k in keys})
        return self._write_shard(cols)

    def _write_shard(self, cols: Mapping[str, np.ndarray]) -> Path:
        name = f"part-{self.tag}-{len(self.files):06d}{SUFFIX[self.format]}"
        final = self.path / name
        tmp = self.path / f".{name}.tmp"
        n = len(next(iter(cols.values())))
        with open(tmp, "wb") as f:
            if self.format == "parquet":
                _, pq = require_pyarrow()
                pq.write_table(_arrow_table(cols), f, row_group_size=max(n, 1))
            else:
                self._write_json(f, cols, n)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.fsync:
            _fsync_dir(self.path)
        self.files.append(final)
        self.rows_written += n
        return final

    @staticmethod
    def _write_json(f: Any, cols: Mapping[str, np.ndarray], n: int) -> None:
        schema = {k: {"dtype": v.dtype.str, "shape": list(v.shape[1:])} for k, v in cols.items()}
        f.write(json.dumps({JSON_SCHEMA_KEY: schema}).encode() + b"\n")
        lists = {k: _json_value(v) for k, v in cols.items()}
        keys = list(lists)
        lines = [json.dumps({k: lists[k][i] for k in keys}, allow_nan=True) for i in range(n)]
        f.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# reading

def _format_of(file: Path) -> str:
    return "parquet" if file.suffix == ".parquet" else "json"


def dataset_files(path: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a dataset: ``path`` itself if it is a file, else the ``*.parquet``
    and ``*.jsonl`` files in the directory (hidden files, e.g. unfinished ``.tmp`` shards,
    skipped), sorted. A missing path or an empty directory is a :class:`DatasetError`."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset path {p} does not exist")
    if p.is_file():
        if p.suffix not in SUFFIX.values():
            raise DatasetError(f"dataset file {p} is neither .parquet nor .jsonl")
        return [p]
    files = sorted(f for f in p.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix in SUFFIX.values())
    if not files:
        raise DatasetError(f"dataset path {p} holds no .parquet or .jsonl files")
    return files


def open_dataset(path: str | os.PathLike[str], columns: Sequence[str] | None = None,
                 required: Sequence[str] = REQUIRED_COLUMNS,
                 max_chunk_rows: int = 65_536) -> Any:
    """The reader for the dataset at ``path``: a :class:`DatasetReader` for our Parquet /
    JSON-lines shards, a :class:`~rldataflow.data.minari_reader.MinariReader` for a local
    Minari dataset. Both have ``files``, ``check_schema()``, ``iter_batches(files)`` and
    ``num_rows()``."""
    from rldataflow.data.minari_reader import MinariReader, is_minari_dataset

    if is_minari_dataset(path):
        return MinariReader(path, columns=columns, required=required)
    return DatasetReader(path, columns=columns, required=required,
                         max_chunk_rows=max_chunk_rows)


def _check_columns(file: Path, names: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"dataset file {file} has no column {missing[0]!r} (columns: "
                           f"{', '.join(names)}; a dataset needs {', '.join(required)})")


def _arrow_column_to_numpy(column: Any, field: Any) -> np.ndarray:
    pa, _ = require_pyarrow()
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        values = col.flatten().to_numpy(zero_copy_only=False)
        meta = field.metadata or {}
        shape = tuple(json.loads(meta[SHAPE_KEY])) if SHAPE_KEY in meta else (size,)
        return values.reshape(len(col), *shape)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        rows = col.to_pylist()
        return np.asarray(rows)
    return col.to_numpy(zero_copy_only=False)


class DatasetReader:
    """Reads a dataset (a directory of shards, or one file) chunk by chunk.

    :meth:`iter_batches` yields one :class:`SampleBatch` per Parquet row group (split into
    pieces of at most ``max_chunk_rows`` rows) or per ``max_chunk_rows`` lines of a JSON-lines
    file, so at most one chunk is in memory however big the dataset. Every file's columns are
    checked against ``required`` (default :data:`REQUIRED_COLUMNS`) when it is opened; a
    missing one is a :class:`DatasetError` naming the file and the column. ``columns``
    restricts what is read (Parquet reads only those columns).

    Example::

        reader = DatasetReader("data/cartpole", columns=["obs", "actions"], required=())
        for chunk in reader.iter_batches():
            ...
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str] | None = None,
                 required: Sequence[str] = REQUIRED_COLUMNS,
                 max_chunk_rows: int = 65_536) -> None:
        self.path = Path(path)
        self.files = dataset_files(path)
        self.columns = list(columns) if columns is not None else None
        self.required = tuple(required)
        self.max_chunk_rows = int(max_chunk_rows)
        if any(_format_of(f) == "parquet" for f in self.files):
            require_pyarrow()

    def check_schema(self) -> None:
        """Check every file's columns now (metadata / first line only), not on first read."""
        for file in self.files:
            if _format_of(file) == "parquet":
                _, pq = require_pyarrow()
                try:
                    names = pq.read_schema(file).names
                except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
                    raise DatasetError(f"dataset file {file} is not a readable Parquet file: "
                                       f"{exc}") from None
            else:
                names = list(self._json_schema(file))
            _check_columns(file, names, self.required)

    @staticmethod
    def _json_schema(file: Path) -> dict[str, Any]:
        with open(file, encoding="utf-8") as f:
            first = f.readline()
        try:
            schema = json.loads(first)[JSON_SCHEMA_KEY] if first.strip() else None
        except (json.JSONDecodeError, KeyError, TypeError):
            schema = None
        if not isinstance(schema, dict):
            raise DatasetError(f"dataset file {file} does not start with a "
                               f"{{{JSON_SCHEMA_KEY!r}: ...}} line")
        return schema

    def iter_batches(self, files: Sequence[Path] | None = None) -> Iterator[SampleBatch]:
        """Chunks of rows, file by file in ``files`` order (default: sorted)."""
        for file in self.files if files is None else files:
            if _format_of(file) == "parquet":
                yield from self._parquet_chunks(file)
            else:
                yield from self._json_chunks(file)

    def num_rows(self) -> int:
        """Rows in the dataset, from the files' metadata (JSON: by counting lines)."""
        total = 0
        for file in self.files:
            if _format_of(file) == "parquet":
                _, pq = require_pyarrow()
                total += pq.ParquetFile(file).metadata.num_rows
            else:
                with open(file, "rb") as f:
                    total += max(sum(1 for line in f if line.strip()) - 1, 0)
        return total

    # -- parquet ----------------------------------------------------------------------------
    def _parquet_chunks(self, file: Path) -> Iterator[SampleBatch]:
        _, pq = require_pyarrow()
        try:
            pf = pq.ParquetFile(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise DatasetError(f"dataset file {file} is not a readable Parquet file: "
                               f"{exc}") from None
        schema = pf.schema_arrow
        _check_columns(file, schema.names, self.required)
        names = [c for c in (self.columns or schema.names) if c in schema.names]
        fields = {name: schema.field(name) for name in names}
        for rg in range(pf.num_row_groups):
            table = pf.read_row_group(rg, columns=names)
            for start in range(0, table.num_rows, self.max_chunk_rows):
                piece = table.slice(start, self.max_chunk_rows)
                yield SampleBatch({name: _arrow_column_to_numpy(piece.column(name), fields[name])
                                   for name in names})

    # -- json lines ---------------------------------------------------------------------------
    def _json_chunks(self, file: Path) -> Iterator[SampleBatch]:
        schema = self._json_schema(file)
        with open(file, encoding="utf-8") as f:
            f.readline()
            _check_columns(file, list(schema), self.required)
            names = [c for c in (self.columns or list(schema)) if c in schema]
            rows: list[dict[str, Any]] = []
            for lineno, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"dataset file {file} line {lineno} is not JSON: "
                                       f"{exc.msg}") from None
                if len(rows) >= self.max_chunk_rows:
                    yield self._json_batch(file, rows, names, schema)
                    rows = []
            if rows:
                yield self._json_batch(file, rows, names, schema)

    @staticmethod
    def _json_batch(file: Path, rows: list[dict[str, Any]], names: list[str],
                    schema: Mapping[str, Any]) -> SampleBatch:
        cols = {}
        for name in names:
            try:
                values = [r[name] for r in rows]
            except KeyError:
                raise DatasetError(f"dataset file {file}: a row has no column {name!r}") from None
            spec = schema[name]
            arr = np.asarray(values, dtype=np.dtype(spec["dtype"]))
            cols[name] = arr.reshape(len(rows), *spec["shape"])
        return SampleBatch(cols)
