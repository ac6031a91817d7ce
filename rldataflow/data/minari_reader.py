"""Minari datasets as an ``input``: read from a local path, never downloaded.

`Minari <https://minari.farama.org>`_ (Farama) is the standard store of offline RL datasets
for Gymnasium envs. A dataset on disk is a directory ``<root>/<id>/data`` holding a
``metadata.json`` (``dataset_id``, ``data_format``, the spaces) and the episodes, in HDF5 or
Arrow. :class:`MinariReader` reads such a directory (the ``data`` directory or the one above
it) through ``minari.MinariDataset``, episode by episode, and gives what
:class:`~rldataflow.data.DatasetReader` gives for our own datasets. Each chunk (at most
``episodes_per_chunk`` episodes) becomes a :class:`SampleBatch` of the documented schema:

* ``obs`` / ``next_obs``: an episode's ``observations[:-1]`` / ``observations[1:]`` (Minari
  stores ``T + 1`` observations for ``T`` steps);
* ``actions``, ``rewards`` (float32), ``terminateds``, ``truncateds``;
* ``eps_id`` (Minari's episode id) and ``t`` (the step within the episode).

Only flat ``Box`` / ``Discrete`` observation and action spaces are read (Minari's ``Dict`` and
``Tuple`` spaces are refused in one line). Nothing is fetched from the network: a path that
does not exist is a :class:`DatasetError`, as for any dataset. Needs ``minari`` (with
``h5py`` for HDF5 datasets), part of the ``offline`` extra.

Example::

    reader = MinariReader("~/.minari/datasets/D4RL/door/human-v2")
    for chunk in reader.iter_batches():
        ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from rldataflow.data.dataset import REQUIRED_COLUMNS, DatasetError, _check_columns
from rldataflow.data.sample_batch import SampleBatch

__all__ = ["MINARI_HINT", "MinariReader", "is_minari_dataset", "minari_data_dir"]

#: the one line a missing minari gives
MINARI_HINT = 'Minari datasets need minari and h5py: pip install "rldataflow[offline]"'

#: the columns a Minari dataset gives
COLUMNS = (SampleBatch.OBS, SampleBatch.NEXT_OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS,
           SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS, SampleBatch.EPS_ID, SampleBatch.T)


def minari_data_dir(path: str | os.PathLike[str]) -> Path | None:
    """The Minari ``data`` directory at ``path`` (``path`` itself or ``path/data``), or None
    when ``path`` is not a Minari dataset."""
    p = Path(path).expanduser()
    for candidate in (p, p / "data"):
        meta = candidate / "metadata.json"
        if meta.is_file():
            try:
                with open(meta, encoding="utf-8") as f:
                    keys = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(keys, dict) and "dataset_id" in keys and "data_format" in keys:
                return candidate
    return None


def is_minari_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Minari dataset directory (see :func:`minari_data_dir`)."""
    return minari_data_dir(path) is not None


def _require_minari() -> Any:
    try:
        import minari
    except ImportError:
        raise DatasetError(MINARI_HINT) from None
    return minari


class MinariReader:
    """Reads a local Minari dataset chunk by chunk (see the module docs).

    ``files`` are groups of episode indices (the units a reader shuffles per epoch), so the
    dataset streams like a directory of shards: at most one chunk is in memory.
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str] | None = None,
                 required: Sequence[str] = REQUIRED_COLUMNS,
                 episodes_per_chunk: int = 64) -> None:
        data_dir = minari_data_dir(path)
        if data_dir is None:
            raise DatasetError(f"dataset path {path} is not a Minari dataset (no metadata.json "
                               "with a dataset_id)")
        minari = _require_minari()
        self.path = data_dir
        try:
            self.dataset = minari.MinariDataset(str(data_dir))
        except ImportError as exc:  # its HDF5 backend without h5py
            raise DatasetError(f"Minari dataset {data_dir}: {exc}".splitlines()[0]) from None
        except Exception as exc:  # noqa: BLE001 - minari raises several kinds
            raise DatasetError(f"Minari dataset {data_dir} cannot be opened: {exc}") from None
        self.columns = list(columns) if columns is not None else None
        self.required = tuple(required)
        for name, space in (("observation", self.dataset.observation_space),
                            ("action", self.dataset.action_space)):
            if not isinstance(space, (spaces.Box, spaces.Discrete)):
                raise DatasetError(f"Minari dataset {data_dir}: its {name} space {space} is "
                                   "not a flat Box or Discrete space (not supported)")
        indices = np.asarray(self.dataset.episode_indices)
        step = max(1, int(episodes_per_chunk))
        self.files: list[tuple[int, ...]] = [tuple(int(i) for i in indices[k: k + step])
                                             for k in range(0, len(indices), step)]
        if not self.files:
            raise DatasetError(f"Minari dataset {data_dir} holds no episodes")

    def check_schema(self) -> None:
        """The columns it gives against ``required`` (a Minari dataset has no logp etc.)."""
        _check_columns(self.path, list(COLUMNS), self.required)

    def num_rows(self) -> int:
        return int(self.dataset.total_steps)

    def iter_batches(self, files: Sequence[tuple[int, ...]] | None = None
                     ) -> Iterator[SampleBatch]:
        """One batch per group of episodes, in ``files`` order (default: stored order)."""
        for group in self.files if files is None else files:
            parts = [self._episode(ep) for ep in self.dataset.iterate_episodes(list(group))]
            cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            if self.columns is not None:
                cols = {k: v for k, v in cols.items() if k in self.columns}
            yield SampleBatch(cols)

    def _episode(self, episode: Any) -> dict[str, np.ndarray]:
        obs = np.asarray(episode.observations)
        n = len(np.asarray(episode.actions))
        if len(obs) != n + 1:
            raise DatasetError(f"Minari dataset {self.path}: episode {episode.id} has "
                               f"{len(obs)} observations for {n} steps (expected {n + 1})")
        return {
            SampleBatch.OBS: obs[:-1], SampleBatch.NEXT_OBS: obs[1:],
            SampleBatch.ACTIONS: np.asarray(episode.actions),
            SampleBatch.REWARDS: np.asarray(episode.rewards, np.float32),
            SampleBatch.TERMINATEDS: np.asarray(episode.terminations, bool),
            SampleBatch.TRUNCATEDS: np.asarray(episode.truncations, bool),
            SampleBatch.EPS_ID: np.full(n, int(episode.id), np.int64),
            SampleBatch.T: np.arange(n, dtype=np.int64),
        }
