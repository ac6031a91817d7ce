"""Experience I/O in a plan: write sampled batches to a dataset, and read one as a source.

* :class:`WriteToDataset` passes batches through unchanged and writes their rows to a dataset
  directory (:mod:`rldataflow.data.dataset`). Applied per shard of a rollout gather, it runs
  inside each rollout worker's actor: every worker writes its own shards, in parallel, and the
  driver never touches the rows. ``ParallelRollouts`` applies it when the workers were made with
  an ``output`` (the ``output`` config key).
* :func:`from_dataset` is the offline source: a stream of ``batch_size``-row batches drawn from a
  dataset through a bounded shuffle buffer, reading file by file and row group by row group, so
  memory stays flat whatever the dataset's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from rldataflow.data import MultiAgentBatch, SampleBatch
from rldataflow.data.dataset import (
    REQUIRED_COLUMNS,
    DatasetOutput,
    DatasetReader,
    DatasetWriter,
    open_dataset,
)
from rldataflow.flow import LocalIterator, Operator
from rldataflow.flow.local_iterator import from_local_iterable

__all__ = ["ShuffleBuffer", "WriteToDataset", "from_dataset"]


class WriteToDataset(Operator):
    """Write every batch's rows to ``output`` and pass the batch on unchanged.

    Each batch is written at once, as one or more whole shards of at most
    ``output.max_rows_per_file`` rows, so a run that is killed loses nothing it has passed on.
    A :class:`~rldataflow.data.MultiAgentBatch` is written per policy, into
    ``<path>/<policy_id>/``. The writer is made on the first batch, in the process that runs
    the operator (a rollout worker's, when applied to shards), named by that process.
    Counts ``dataset_rows_written``. Example::

        rollouts = (ParallelRollouts(workers, mode="raw")
                    .for_each(WriteToDataset(DatasetOutput("data/run1")))
                    .batch_across_shards())
    """

    def __init__(self, output: DatasetOutput) -> None:
        self.output = output
        self._writers: dict[str | None, DatasetWriter] = {}

    @property
    def op_name(self) -> str:
        return f"WriteToDataset({self.output.path!r}, {self.output.format})"

    def __getstate__(self) -> dict[str, Any]:
        return {"output": self.output, "_writers": {}}  # writers belong to one process

    def _writer(self, policy_id: str | None) -> DatasetWriter:
        writer = self._writers.get(policy_id)
        if writer is None:
            out = self.output
            path = out.path if policy_id is None else os.path.join(out.path, policy_id)
            tag = f"{os.getpid()}-{os.urandom(4).hex()}"
            writer = DatasetWriter(path, out.format, out.max_rows_per_file, tag=tag)
            self._writers[policy_id] = writer
        return writer

    def __call__(self, batch: Any) -> Any:
        parts = (batch.policy_batches.items() if isinstance(batch, MultiAgentBatch)
                 else [(None, batch)])
        rows = 0
        with self.metrics.timers["write_dataset"]:
            for pid, part in parts:
                writer = self._writer(pid)
                writer.write(part)
                writer.flush()
                rows += part.count
        self.metrics.counters["dataset_rows_written"] += rows
        return batch


class ShuffleBuffer:
    """Rows held for shuffling, at most ``capacity`` plus one incoming chunk.

    ``add(chunk)`` appends rows; ``pop(n, rng)`` removes ``n`` rows drawn uniformly at random
    from those held (without replacement). :attr:`max_rows_held` records the peak, which is
    what bounds memory. Example::

        buf = ShuffleBuffer(10_000)
        buf.add(chunk)
        if buf.rows >= 10_000:
            batch = buf.pop(512, rng)
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"shuffle buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._held: SampleBatch | None = None
        self.max_rows_held = 0

    @property
    def rows(self) -> int:
        return 0 if self._held is None else self._held.count

    def add(self, chunk: SampleBatch) -> None:
        if chunk.count == 0:
            return
        self._held = chunk if self._held is None else SampleBatch.concat_samples(
            [self._held, chunk])
        self.max_rows_held = max(self.max_rows_held, self._held.count)

    def pop(self, n: int, rng: np.random.Generator) -> SampleBatch:
        held = self._held
        if held is None:
            return SampleBatch()
        total = held.count
        if n >= total:
            self._held = None
            return held.take(rng.permutation(total))
        pick = rng.choice(total, size=n, replace=False)
        keep = np.ones(total, dtype=bool)
        keep[pick] = False
        out = held.take(pick)
        self._held = held.take(np.flatnonzero(keep))
        return out


def _dataset_batches(path: str, batch_size: int, shuffle_buffer_size: int,
                     num_epochs: int | None, seed: int | None,
                     columns: Sequence[str] | None, required: Sequence[str],
                     postprocess: Callable[[SampleBatch], SampleBatch] | None,
                     max_chunk_rows: int, buffer_out: list[ShuffleBuffer] | None,
                     reader_kind: str = "local") -> Iterator[SampleBatch]:
    reader = open_dataset(path, columns=columns, required=required,
                          max_chunk_rows=max_chunk_rows)
    if reader_kind == "ray" and isinstance(reader, DatasetReader):  # (Minari: read here)
        from rldataflow.data.ray_reader import ray_dataset_chunks

        def chunks(files: list[Any]) -> Iterator[SampleBatch]:
            return ray_dataset_chunks(path, columns, required, files)
    else:
        chunks = reader.iter_batches
    rng = np.random.default_rng(seed)
    buf = ShuffleBuffer(max(shuffle_buffer_size, batch_size))
    if buffer_out is not None:
        buffer_out.append(buf)
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
        files = [reader.files[i] for i in rng.permutation(len(reader.files))]
        for chunk in chunks(files):
            if postprocess is not None:
                chunk = postprocess(chunk)
            buf.add(chunk)
            while buf.rows >= buf.capacity:
                yield buf.pop(batch_size, rng)
        epoch += 1
    while buf.rows:  # the last epoch: drain what is held
        yield buf.pop(batch_size, rng)


class _CountRead(Operator):
    op_name = "CountDatasetRows"

    def __call__(self, batch: SampleBatch) -> SampleBatch:
        self.metrics.counters["dataset_rows_read"] += batch.count
        return batch


def from_dataset(path: str | os.PathLike[str], batch_size: int, *,
                 shuffle_buffer_size: int = 50_000, num_epochs: int | None = None,
                 seed: int | None = 0, columns: Sequence[str] | None = None,
                 required: Sequence[str] = REQUIRED_COLUMNS,
                 postprocess: Callable[[SampleBatch], SampleBatch] | None = None,
                 max_chunk_rows: int = 65_536,
                 buffer_out: list[ShuffleBuffer] | None = None,
                 reader: str = "local") -> LocalIterator[SampleBatch]:
    """A stream of ``batch_size``-row batches from the dataset at ``path``.

    Files are read one at a time in a random order (new each epoch) and row group by row group
    (chunks of at most ``max_chunk_rows``); each chunk goes through ``postprocess`` (per-chunk
    work that needs rows in their original order, e.g. returns-to-go), then into a
    :class:`ShuffleBuffer` of ``shuffle_buffer_size`` rows, from which batches are drawn at
    random. Rows held never exceed ``max(shuffle_buffer_size, batch_size) + max_chunk_rows``.
    ``num_epochs=None`` repeats forever (training); with a number, the stream ends after that
    many passes, the last batch possibly smaller. The path and every file's schema are checked
    when the stream is first pulled (``DatasetError`` naming the file and the missing
    column). Counts ``dataset_rows_read``. ``buffer_out``: a list the buffer is appended to
    (for tests and monitoring). ``reader="ray"`` reads the (Parquet) files with Ray Data, in
    Ray tasks across the cluster (:mod:`rldataflow.data.ray_reader`; the plans of the offline
    algorithms choose it on the ``ray`` runtime); the shuffle buffer is the same. Example::

        train_op = (from_dataset("data/cartpole", batch_size=512, shuffle_buffer_size=20_000)
                    .for_each(TrainOneStep(workers)))
    """
    if batch_size < 1:
        raise ValueError(f"from_dataset: batch_size must be >= 1, got {batch_size}")
    if reader not in ("local", "ray"):
        raise ValueError(f"from_dataset: reader must be 'local' or 'ray', got {reader!r}")
    if shuffle_buffer_size < 1:
        raise ValueError(f"from_dataset: shuffle_buffer_size must be >= 1, got "
                         f"{shuffle_buffer_size}")
    path = os.fspath(path)
    open_dataset(path, columns=columns, required=required).check_schema()  # fail now
    source = from_local_iterable(
        lambda: _dataset_batches(path, int(batch_size), int(shuffle_buffer_size), num_epochs,
                                 seed, columns, required, postprocess, int(max_chunk_rows),
                                 buffer_out, reader),
        name=f"from_dataset({path!r}, batch_size={batch_size}"
             f"{', Ray Data' if reader == 'ray' else ''})")
    return source.for_each(_CountRead())
