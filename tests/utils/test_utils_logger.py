"""RunLogger: config.yaml, result.jsonl, progress.csv (with a widening header), TensorBoard."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from rldataflow.utils.config import AlgorithmConfig
from rldataflow.utils.logger import RunLogger, flatten_dict


def result(i: int, **extra) -> dict:
    return {"training_iteration": i, "env_steps_sampled": 1000 * i,
            "episode_return_mean": np.float32(10.0 * i), "time_total_s": 0.5 * i,
            "info": {"learner": {"loss": np.float64(1.0 / i)}}, **extra}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_flatten_dict():
    assert flatten_dict({"a": {"b": {"c": 1}}, "d": 2, "e": {}}) == {"a/b/c": 1, "d": 2, "e": {}}


def test_writes_config_jsonl_csv(tmp_path):
    with RunLogger(tmp_path, AlgorithmConfig(), tensorboard=False) as logger:
        logger.log(result(1))
        logger.log(result(2, hist=[1.0, 2.0]))
        # both flushed before close: a killed run keeps its logs
        assert len((tmp_path / "result.jsonl").read_text().splitlines()) == 2
        assert len(read_csv(tmp_path / "progress.csv")) == 2

    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["hiddens"] == [64, 64] and config["env"] == "CartPole-v1"

    lines = [json.loads(ln) for ln in (tmp_path / "result.jsonl").read_text().splitlines()]
    assert lines[0]["episode_return_mean"] == 10.0
    assert lines[1]["info"]["learner"]["loss"] == 0.5  # nested kept in jsonl
    assert lines[1]["hist"] == [1.0, 2.0]

    rows = read_csv(tmp_path / "progress.csv")
    header = list(rows[0])
    assert header[:5] == ["training_iteration", "env_steps_sampled", "episode_return_mean",
                          "time_total_s", "info/learner/loss"]
    assert header[-1] == "hist"  # a key first seen later widens the header
    assert rows[0]["hist"] == "" and json.loads(rows[1]["hist"]) == [1.0, 2.0]
    assert float(rows[1]["info/learner/loss"]) == 0.5


def test_nan_and_missing_values(tmp_path):
    with RunLogger(tmp_path, {"a": 1}, tensorboard=False) as logger:
        logger.log({"training_iteration": 1, "episode_return_mean": float("nan")})
        logger.log({"training_iteration": 2})
    rows = read_csv(tmp_path / "progress.csv")
    assert rows[0]["episode_return_mean"] == "nan" and rows[1]["episode_return_mean"] == ""
    first_line = (tmp_path / "result.jsonl").read_text().splitlines()[0]
    first = json.loads(first_line, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert first["episode_return_mean"] is None  # NaN is not JSON: written as null


def test_resume_appends_and_truncate_otherwise(tmp_path):
    with RunLogger(tmp_path, {"lr": 1}, tensorboard=False) as logger:
        logger.log(result(1))
    with RunLogger(tmp_path, {"lr": 2}, resume=True, tensorboard=False) as logger:
        logger.log(result(2))
        logger.log(result(3, new_metric=7))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"lr": 1}
    rows = read_csv(tmp_path / "progress.csv")
    assert [r["training_iteration"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["new_metric"] == "7" and rows[0]["new_metric"] == ""
    assert len((tmp_path / "result.jsonl").read_text().splitlines()) == 3

    with RunLogger(tmp_path, {"lr": 3}, tensorboard=False) as logger:
        logger.log(result(1))
    assert len(read_csv(tmp_path / "progress.csv")) == 1
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"lr": 3}


def test_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path, {"lr": 1}) as logger:
        logger.log(result(1))
        logger.log(result(2))
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    loss = acc.Scalars("info/learner/loss")
    assert [e.step for e in loss] == [1000, 2000]  # global step = env_steps_sampled
    assert loss[1].value == pytest.approx(0.5)


def test_tensorboard_unavailable_degrades_with_warning(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with RunLogger(tmp_path, {}) as logger:
        with pytest.warns(RuntimeWarning, match="TensorBoard"):
            logger.log(result(1))
        logger.log(result(2))
    assert len(read_csv(tmp_path / "progress.csv")) == 2
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_log_after_close_raises(tmp_path):
    logger = RunLogger(tmp_path, None, tensorboard=False)
    logger.close()
    logger.close()
    with pytest.raises(RuntimeError, match="closed"):
        logger.log({"a": 1})
