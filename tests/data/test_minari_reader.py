"""Minari datasets as ``input``: built locally (nothing is downloaded), read back exactly in both
of Minari's formats, streamed by ``from_dataset``, trained on by BC, and refused in one line
when they cannot be read."""

from __future__ import annotations

import sys
import warnings

import gymnasium
import numpy as np
import pytest

import rldataflow
from rldataflow.data import SampleBatch as SB
from rldataflow.data.dataset import DatasetError, open_dataset
from rldataflow.data.minari_reader import MINARI_HINT, MinariReader, is_minari_dataset
from rldataflow.ops import from_dataset

minari = pytest.importorskip("minari")
from minari.data_collector import EpisodeBuffer  # noqa: E402


def random_episodes(num: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    env = gymnasium.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    out = []
    for ep in range(num):
        obs, _ = env.reset(seed=seed + ep)
        cols: dict[str, list] = {"observations": [obs], "actions": [], "rewards": [],
                                 "terminations": [], "truncations": []}
        done = False
        while not done:
            action = int(rng.integers(2))
            obs, reward, term, trunc, _ = env.step(action)
            for key, value in zip(("observations", "actions", "rewards", "terminations",
                                   "truncations"), (obs, action, reward, term, trunc),
                                  strict=True):
                cols[key].append(value)
            done = term or trunc
        out.append({k: np.asarray(v) for k, v in cols.items()})
    return out


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def make_dataset(root, name: str, episodes, data_format: str):
    buffers = [EpisodeBuffer(id=i, infos={}, **ep) for i, ep in enumerate(episodes)]
    with warnings.catch_warnings():  # (authors, permalinks: advice for published datasets)
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(name, buffers, env=gymnasium.make("CartPole-v1"),
                                           algorithm_name="random", data_format=data_format)
    return root / name


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_every_column_reads_back_exactly(minari_root, data_format):
    episodes = random_episodes(4)
    path = make_dataset(minari_root, f"cartpole/random-{data_format}-v0", episodes, data_format)
    assert is_minari_dataset(path) and is_minari_dataset(path / "data")
    reader = open_dataset(path)
    assert isinstance(reader, MinariReader)
    assert reader.num_rows() == sum(len(ep["actions"]) for ep in episodes)
    rows = SB.concat_samples(list(reader.iter_batches()))
    start = 0
    for i, ep in enumerate(episodes):
        n = len(ep["actions"])
        part = rows.slice(start, start + n)
        np.testing.assert_array_equal(part[SB.OBS], ep["observations"][:-1])
        np.testing.assert_array_equal(part[SB.NEXT_OBS], ep["observations"][1:])
        np.testing.assert_array_equal(part[SB.ACTIONS], ep["actions"])
        np.testing.assert_array_equal(part[SB.REWARDS], ep["rewards"].astype(np.float32))
        np.testing.assert_array_equal(part[SB.TERMINATEDS], ep["terminations"])
        np.testing.assert_array_equal(part[SB.TRUNCATEDS], ep["truncations"])
        assert part[SB.EPS_ID].tolist() == [i] * n
        assert part[SB.T].tolist() == list(range(n))
        start += n
    assert start == rows.count


def test_from_dataset_streams_every_row_once_per_epoch(minari_root):
    path = make_dataset(minari_root, "cartpole/random-v0", random_episodes(6), "arrow")
    total = open_dataset(path).num_rows()
    batches = list(from_dataset(path, batch_size=16, shuffle_buffer_size=32, num_epochs=2,
                                seed=0))
    seen = SB.concat_samples(batches)
    assert seen.count == 2 * total
    every = SB.concat_samples(list(open_dataset(path).iter_batches()))
    expected = list(zip(every[SB.EPS_ID].tolist(), every[SB.T].tolist(), strict=True))
    keys = sorted(zip(seen[SB.EPS_ID].tolist(), seen[SB.T].tolist(), strict=True))
    assert keys == sorted(2 * expected)


def test_bc_trains_on_a_minari_dataset(minari_root):
    path = make_dataset(minari_root, "cartpole/random-v0", random_episodes(8), "hdf5")
    with rldataflow.build("bc", env="CartPole-v1", input=str(path), runtime="inline",
                          evaluation_interval=0, train_batch_size=128, minibatch_size=64,
                          shuffle_buffer_size=256, seed=0) as algo:
        result = algo.train()
    assert result["counters"]["dataset_rows_read"] > 0
    assert result["learner"]["num_grad_updates"] >= 1


def test_a_dataset_without_a_needed_column_names_it(minari_root):
    path = make_dataset(minari_root, "cartpole/random-v0", random_episodes(2), "arrow")
    with pytest.raises(DatasetError, match="action_logp"):
        open_dataset(path, required=(SB.OBS, "action_logp")).check_schema()


def test_without_minari_the_error_is_the_install_hint(minari_root, monkeypatch):
    path = make_dataset(minari_root, "cartpole/random-v0", random_episodes(1), "arrow")
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari now fails
    with pytest.raises(DatasetError) as err:
        open_dataset(path)
    assert str(err.value) == MINARI_HINT


def test_a_non_minari_directory_is_read_as_our_own_format(tmp_path):
    (tmp_path / "metadata.json").write_text('{"something": "else"}')
    assert not is_minari_dataset(tmp_path)
    with pytest.raises(DatasetError, match="holds no .parquet or .jsonl files"):
        open_dataset(tmp_path)
