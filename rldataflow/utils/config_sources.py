"""Where config overrides come from and how configs go out: YAML files, ``--set key=value``
items, deep-merging of those sources, and conversion of configs and results to JSON-safe data.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from rldataflow.utils.coercion import ConfigError, _short_repr

__all__ = ["config_to_dict", "load_yaml_config", "merge_overrides", "parse_set_args",
           "qualified_name", "to_jsonable"]


def parse_set_args(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (``--set`` on the CLI); each value is read as YAML.

    A dotted key (``model.hiddens=[8]``) becomes a nested dict; a later item for the same key
    wins. Pass the result to :func:`build_config` with ``from_cli=True`` (combine it with a YAML
    file's overrides through :func:`merge_overrides`).

    Example::

        parse_set_args(["lr=1e-3", "hiddens=[32,32]", "env_config={a: 1}"])
        # {'lr': '1e-3', 'hiddens': [32, 32], 'env_config': {'a': 1}}
        # ('1e-3' is a str in YAML 1.1; build_config turns it into 0.001 for a float field)
    """
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value with a non-empty key, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"could not parse the value of config key {key!r} "
                              f"({text!r}) as YAML: {first}") from e
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            existing = target.get(part)
            if not isinstance(existing, dict):
                existing = {}
                target[part] = existing
            target = existing
        target[parts[-1]] = value
    return out


def merge_overrides(*sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge override dicts; later sources win key by key (nested dicts are merged).

    This is how a CLI layers ``--set`` items over a YAML file: ``env_config.seed=3`` changes
    one key of the file's ``env_config`` instead of replacing the whole dict.

    Example::

        merge_overrides({"lr": 0.1, "env_config": {"a": 1, "b": 2}},
                        {"env_config": {"a": 5}})
        # {'lr': 0.1, 'env_config': {'a': 5, 'b': 2}}
    """
    out: dict[str, Any] = {}
    for source in sources:
        for key, value in (source or {}).items():
            current = out.get(key)
            if isinstance(current, dict) and isinstance(value, Mapping):
                out[key] = merge_overrides(current, value)
            elif isinstance(value, Mapping):
                out[key] = merge_overrides(value)  # a copy: later merges must not mutate input
            else:
                out[key] = value
    return out


def load_yaml_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file holding a mapping of config keys to values (an empty file is ``{}``).

    Example::

        overrides = load_yaml_config("ppo_cartpole.yaml")
        cfg = build_config(PPOConfig, overrides, from_cli=True)
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"could not parse YAML config file {path}: {detail}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping of keys to values, "
                          f"got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path} has a non-string key {_short_repr(bad[0])}")
    return data


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (of the type, for other callables).

    Example::

        qualified_name(dict)   # 'builtins.dict'
    """
    if isinstance(obj, functools.partial):
        return f"partial({qualified_name(obj.func)})"
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"{module}.{name}" if module else name


def to_jsonable(obj: Any) -> Any:
    """Turn ``obj`` into JSON-safe data: dicts, lists, str, int, float, bool, None.

    Tuples and sets become lists, numpy/torch scalars and arrays become Python numbers and lists
    (anything with ``tolist()``), dataclasses become dicts, enums their value, paths strings,
    callables their qualified name; anything else its ``repr``. Dict keys become strings.

    Example::

        to_jsonable({"h": (64, 64), "env": len})   # {'h': [64, 64], 'env': 'builtins.len'}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    tolist = getattr(obj, "tolist", None)
    if callable(tolist) and not isinstance(obj, type):
        try:
            return to_jsonable(tolist())
        except Exception:
            pass
    if isinstance(obj, numbers.Complex):
        return str(obj)
    if callable(obj):
        return qualified_name(obj)
    return repr(obj)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    converted = to_jsonable(key)
    return converted if isinstance(converted, str) else str(converted)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a config dataclass (tuples -> lists, callables -> qualified names).

    Example::

        config_to_dict(AlgorithmConfig())["hiddens"]   # [64, 64]
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return to_jsonable(cfg)
