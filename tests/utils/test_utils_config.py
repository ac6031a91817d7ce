"""Strict typed configs: unknown keys, wrong types, safe coercions, YAML and --set parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rldataflow.utils.config import (
    AlgorithmConfig,
    ConfigError,
    build_config,
    config_help,
    config_to_dict,
    load_yaml_config,
    merge_overrides,
    parse_set_args,
    to_jsonable,
)


@dataclass
class ModelConfig:
    fcnet: tuple[int, ...] = (32,)
    free_log_std: bool = False


@dataclass
class PPOConfig(AlgorithmConfig):
    clip_param: float = field(default=0.2, metadata={"help": "PPO clip range"})
    minibatch_size: int = field(default=128, metadata={"help": "SGD minibatch size"})
    kl_target: Optional[float] = None
    vf_clip: float | None = 10.0
    schedule: Literal["constant", "linear"] = "constant"
    pair: tuple[int, str] = (1, "a")
    model: ModelConfig = field(default_factory=ModelConfig)
    grad_clip: float = 40.0
    """Clip gradients to this global norm."""

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError("config key 'minibatch_size' must be <= train_batch_size, got "
                              f"{self.minibatch_size} > {self.train_batch_size}")


def err(overrides, cls=PPOConfig, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(cls, overrides, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_defaults_and_plain_override():
    cfg = build_config(PPOConfig, {"clip_param": 0.3, "num_workers": 0})
    assert cfg.clip_param == 0.3 and cfg.num_workers == 0
    assert cfg.env == "CartPole-v1" and cfg.runtime == "process" and cfg.hiddens == (64, 64)
    assert build_config(PPOConfig, {}) == PPOConfig()


def test_unknown_key_suggests_the_closest_field():
    assert err({"lr_rate": 1e-3}) == \
        "unknown config key 'lr_rate' for PPOConfig (did you mean 'lr'?)"
    assert "did you mean 'num_workers'" in err({"num-workers": 2})
    assert "did you mean 'clip_param'" in err({"clip_parm": 0.1})
    assert "did you mean" not in err({"zzzzzz": 1})


def test_wrong_type_names_key_type_and_value():
    assert err({"lr": "abc"}) == "config key 'lr' expects float, got str 'abc'"
    assert err({"num_workers": 1.5}) == "config key 'num_workers' expects int, got float 1.5"
    assert "expects int, got bool True" in err({"num_workers": True})
    assert "expects float, got bool" in err({"lr": False})
    assert "'env' expects str or callable" in err({"env": 3})
    assert "'env_config' expects dict" in err({"env_config": [1, 2]})
    assert "'hiddens' expects tuple[int, ...]" in err({"hiddens": [32, "x"]})
    assert "'hiddens'" in err({"hiddens": 64})
    assert "'pair' expects tuple[int, str]" in err({"pair": [1, 2, 3]})


def test_safe_coercions():
    cfg = build_config(PPOConfig, {"lr": 1, "hiddens": [32, 32], "train_batch_size": 4000.0,
                                   "pair": [2, "b"], "gamma": "0.9", "num_workers": "3"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.hiddens == (32, 32) and isinstance(cfg.hiddens, tuple)
    assert cfg.train_batch_size == 4000 and isinstance(cfg.train_batch_size, int)
    assert cfg.pair == (2, "b") and cfg.gamma == 0.9 and cfg.num_workers == 3


def test_bool_strictness():
    assert build_config(PPOConfig, {"restart_failed_workers": "false"}).restart_failed_workers \
        is False
    assert "expects bool, got int 0" in err({"restart_failed_workers": 0})
    assert "expects bool, got str 'no'" in err({"restart_failed_workers": "no"})
    # text a user typed may say 0/1/yes/no
    for text, expected in [(0, False), (1, True), ("yes", True), ("off", False)]:
        cfg = build_config(PPOConfig, {"restart_failed_workers": text}, from_cli=True)
        assert cfg.restart_failed_workers is expected
    assert "expects bool" in err({"restart_failed_workers": 2}, from_cli=True)


def test_literal_choices():
    assert err({"activation": "gelu"}) == \
        "config key 'activation' expects one of 'tanh', 'relu', 'elu', got str 'gelu'"
    assert build_config(PPOConfig, {"activation": "relu"}).activation == "relu"
    assert build_config(PPOConfig, {"log_level": "debug"}).log_level == "DEBUG"
    assert "'runtime' expects one of 'inline', 'process', 'ray'" in err({"runtime": "thread"})


def test_optional_fields():
    cfg = build_config(PPOConfig, {"kl_target": 0.01, "vf_clip": None})
    assert cfg.kl_target == 0.01 and cfg.vf_clip is None
    assert build_config(PPOConfig, {"kl_target": 1}).kl_target == 1.0
    assert "'kl_target' expects float or None" in err({"kl_target": "x"})
    assert build_config(PPOConfig, {"vf_clip": "none"}, from_cli=True).vf_clip is None


def test_callable_env_and_dict_fields():
    def make_env(env_config):
        return None

    cfg = build_config(PPOConfig, {"env": make_env, "env_config": {"a": 1}})
    assert cfg.env is make_env and cfg.env_config == {"a": 1}
    d = config_to_dict(cfg)
    assert d["env"].endswith("make_env") and "." in d["env"]
    json.dumps(d)


def test_nested_dataclass_merges():
    cfg = build_config(PPOConfig, {"model": {"free_log_std": True}})
    assert cfg.model == ModelConfig(fcnet=(32,), free_log_std=True)
    cfg2 = build_config(PPOConfig, {"model": {"fcnet": [8, 8]}}, base=cfg)
    assert cfg2.model == ModelConfig(fcnet=(8, 8), free_log_std=True)
    assert "unknown config key 'model.fcnets'" in err({"model": {"fcnets": [1]}})


def test_validate_hook_and_ranges():
    assert "'minibatch_size' must be <= train_batch_size" in \
        err({"minibatch_size": 512, "train_batch_size": 256})
    assert err({"gamma": 1.5}) == "config key 'gamma' must be in [0, 1], got 1.5"
    assert "'num_workers' must be >= 0" in err({"num_workers": -1})
    assert "'hiddens'" in err({"hiddens": [0]})


def test_base_and_replace_do_not_mutate():
    base = build_config(PPOConfig, {"lr": 1e-3})
    cfg = build_config(PPOConfig, {"seed": 7}, base=base)
    assert cfg.lr == 1e-3 and cfg.seed == 7 and base.seed == 0
    assert base.replace(num_workers=5).num_workers == 5 and base.num_workers == 2
    with pytest.raises(ConfigError):
        base.replace(num_workerz=5)


def test_string_annotations_from_future_are_resolved():
    # this module uses `from __future__ import annotations`: all hints are strings
    assert build_config(PPOConfig, {"hiddens": ["16"]}, from_cli=True).hiddens == (16,)


def test_parse_set_args_reads_yaml_values():
    got = parse_set_args(["lr=1e-3", "hiddens=[32,32]", "env_config={a: 1}", "env=ALE/Pong-v5",
                          "model.fcnet=[4]", "restart_failed_workers=false", "url=a=b"])
    assert got == {"lr": "1e-3", "hiddens": [32, 32], "env_config": {"a": 1},
                   "env": "ALE/Pong-v5", "model": {"fcnet": [4]},
                   "restart_failed_workers": False, "url": "a=b"}
    cfg = build_config(PPOConfig, {k: v for k, v in got.items() if k != "url"}, from_cli=True)
    assert cfg.lr == 1e-3 and cfg.hiddens == (32, 32) and cfg.model.fcnet == (4,)


def test_parse_set_args_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_args(["lr"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_args(["=3"])
    with pytest.raises(ConfigError, match="'env_config'"):
        parse_set_args(["env_config={a: 1"])


def test_load_yaml_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 1e-3\nhiddens: [16, 16]\nenv_config:\n  x: 2\n")
    cfg = build_config(PPOConfig, load_yaml_config(p), from_cli=True)
    assert cfg.lr == 1e-3 and cfg.hiddens == (16, 16) and cfg.env_config == {"x": 2}

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml_config(empty) == {}

    with pytest.raises(ConfigError, match="not found: .*missing.yaml"):
        load_yaml_config(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must contain a mapping.*got list"):
        load_yaml_config(lst)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="could not parse YAML config file"):
        load_yaml_config(bad)


def test_config_to_dict_is_json_safe():
    d = config_to_dict(PPOConfig())
    assert d["hiddens"] == [64, 64] and d["model"] == {"fcnet": [32], "free_log_std": False}
    assert json.loads(json.dumps(d)) == d
    np = pytest.importorskip("numpy")
    assert to_jsonable({"x": np.float32(0.5), "y": np.arange(2), 3: (1,)}) == \
        {"x": 0.5, "y": [0, 1], "3": [1]}


def test_config_help_lists_fields_with_help():
    text = config_help(PPOConfig)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "type", "default", "help"]
    by_name = {ln.split()[0]: ln for ln in lines[1:]}
    assert "PPO clip range" in by_name["clip_param"] and "0.2" in by_name["clip_param"]
    assert "tanh|relu|elu" in by_name["activation"]
    assert "discount factor" in by_name["gamma"]
    assert "Clip gradients to this global norm." in by_name["grad_clip"]  # attribute docstring
    assert set(by_name) >= {f for f in config_to_dict(PPOConfig())}


@dataclass
class LowLrConfig(AlgorithmConfig):
    lr: float = 5e-5  # only the default changes


def test_help_is_inherited_when_a_subclass_changes_a_default():
    line = next(ln for ln in config_help(LowLrConfig).splitlines() if ln.startswith("lr "))
    assert "5e-05" in line and "learning rate" in line


@given(
    lr=st.floats(min_value=0, max_value=10, allow_nan=False),
    hiddens=st.lists(st.integers(1, 512), max_size=4).map(tuple),
    activation=st.sampled_from(["tanh", "relu", "elu"]),
    num_workers=st.integers(0, 64),
    restart=st.booleans(),
    env_config=st.dictionaries(st.text(min_size=1, max_size=5), st.integers() | st.text()),
)
def test_dict_and_yaml_round_trip(lr, hiddens, activation, num_workers, restart, env_config):
    cfg = build_config(PPOConfig, {"lr": lr, "hiddens": hiddens, "activation": activation,
                                   "num_workers": num_workers, "env_config": env_config,
                                   "restart_failed_workers": restart})
    assert build_config(PPOConfig, config_to_dict(cfg)) == cfg
    text = yaml.safe_dump(config_to_dict(cfg))
    assert build_config(PPOConfig, yaml.safe_load(text), from_cli=True) == cfg


def test_merge_overrides_layers_cli_over_yaml():
    from_file = {"lr": 0.1, "env_config": {"a": 1, "b": 2}, "hiddens": [8]}
    merged = merge_overrides(from_file, parse_set_args(["env_config.a=5", "hiddens=[4,4]"]))
    assert merged == {"lr": 0.1, "env_config": {"a": 5, "b": 2}, "hiddens": [4, 4]}
    assert from_file["env_config"] == {"a": 1, "b": 2}  # inputs untouched
    assert build_config(PPOConfig, merged, from_cli=True).env_config == {"a": 5, "b": 2}
