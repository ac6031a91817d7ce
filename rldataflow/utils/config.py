"""Strict, typed dataclass configs: unknown keys and wrong types are errors, not silent no-ops.

An algorithm's config is a dataclass deriving from :class:`AlgorithmConfig`; every field carries
its help text in ``field(metadata={"help": ...})``. :func:`build_config` is the one validated way
in: it rejects unknown keys with a did-you-mean hint, checks each value against the field's type
annotation (``Literal`` choices, ``Optional``, ``tuple[int, ...]``, ``dict``, nested dataclasses),
coerces only where that is lossless, and finally calls the config's ``validate()`` hook for
cross-field checks.

Example::

    from dataclasses import dataclass, field
    from rldataflow.utils.config import AlgorithmConfig, build_config, parse_set_args

    @dataclass
    class PPOConfig(AlgorithmConfig):
        clip_param: float = field(default=0.2, metadata={"help": "PPO clip range"})

    cfg = build_config(PPOConfig, parse_set_args(["lr=1e-3", "hiddens=[32,32]"]), from_cli=True)
    assert cfg.lr == 1e-3 and cfg.hiddens == (32, 32)
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import difflib
import enum
import functools
import inspect
import math
import numbers
import os
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "AlgorithmConfig",
    "ConfigError",
    "build_config",
    "config_help",
    "config_to_dict",
    "load_yaml_config",
    "merge_overrides",
    "parse_set_args",
    "qualified_name",
    "to_jsonable",
]

C = TypeVar("C")

#: Named values of ``policy_mapping_fn`` (see ``rldataflow.policies.policy_spec``).
_MAPPING_MODES = ("shared", "by_agent")
_TRUE_STRINGS = {"true", "yes", "on", "1"}
_FALSE_STRINGS = {"false", "no", "off", "0"}


class ConfigError(ValueError):
    """A bad config key or value. The message is one line and names the offending key.

    Example::

        try:
            build_config(AlgorithmConfig, {"lr_rate": 1e-3})
        except ConfigError as e:
            print(e)   # unknown config key 'lr_rate' for AlgorithmConfig (did you mean 'lr'?)
    """


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class AlgorithmConfig:
    """Fields every algorithm shares. Algorithms subclass it (as a dataclass) and add their own.

    Build instances with :func:`build_config` (or :meth:`replace`), which validates; constructing
    the dataclass directly skips type checks, which is fine in code but not for user input.

    Example::

        @dataclass
        class PGConfig(AlgorithmConfig):
            entropy_coeff: float = field(default=0.0, metadata={"help": "entropy bonus weight"})

        cfg = build_config(PGConfig, {"num_workers": 4})
        cfg2 = cfg.replace(lr=1e-3)          # validated copy
    """

    env: Union[str, Callable[..., Any]] = field(
        default="CartPole-v1",
        metadata=_help("Gymnasium env id, or a callable env_config -> env (a creator function)"),
    )
    env_config: dict[str, Any] = field(
        default_factory=dict, metadata=_help("keyword arguments passed to the env creator")
    )
    runtime: Literal["inline", "process", "ray"] = field(
        default="process",
        metadata=_help("where actors live: inline (debugging), process (default), ray (cluster)"),
    )
    runtime_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("options for the runtime, e.g. {address: auto} for ray"),
    )
    num_workers: int = field(
        default=2, metadata=_help("remote rollout workers; 0 samples on the driver's local worker")
    )
    num_envs_per_worker: int = field(
        default=8, metadata=_help("vectorized sub-environments stepped together by each worker")
    )
    rollout_fragment_length: int = field(
        default=64, metadata=_help("env steps per sub-environment in one sample() call")
    )
    seed: int = field(
        default=0, metadata=_help("base seed; each worker derives its own from it")
    )
    gamma: float = field(default=0.99, metadata=_help("discount factor in [0, 1]"))
    lr: float = field(default=3e-4, metadata=_help("learning rate"))
    train_batch_size: int = field(
        default=1024, metadata=_help("env steps collected per training step")
    )
    hiddens: tuple[int, ...] = field(
        default=(64, 64), metadata=_help("hidden layer sizes of the MLP models")
    )
    activation: Literal["tanh", "relu", "elu"] = field(
        default="tanh", metadata=_help("activation function of the hidden layers")
    )
    min_time_s_per_iteration: float = field(
        default=0.0, metadata=_help("report a result no more often than every this many seconds")
    )
    min_steps_per_iteration: int = field(
        default=0, metadata=_help("report a result only after at least this many env steps")
    )
    evaluation_num_episodes: int = field(
        default=10, metadata=_help("episodes run by evaluate()")
    )
    checkpoint_every: int = field(
        default=0, metadata=_help("save a checkpoint every N iterations; 0 = only the final one")
    )
    restart_failed_workers: bool = field(
        default=True, metadata=_help("recreate a dead rollout worker instead of failing the run")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = field(
        default="INFO", metadata=_help("logging level of the rldataflow loggers")
    )
    policies: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=_help("multi-agent: policy id -> overrides of this config for that policy "
                       "(e.g. {p0: {}, p1: {lr: 0.001}}); empty = single-agent"),
    )
    policy_mapping_fn: Union[str, Callable[..., Any], None] = field(
        default=None,
        metadata=_help("multi-agent: agent id -> policy id; 'shared' (all agents, one policy), "
                       "'by_agent' (policy named like the agent, else the i-th policy for the "
                       "i-th agent) or a callable; None = 'shared'"),
    )

    def validate(self) -> None:
        """Cross-field and range checks; raise :class:`ConfigError` naming the key.

        :func:`build_config` calls it after all values are type-checked. Subclasses that
        override it should call ``super().validate()`` first.

        Example::

            def validate(self) -> None:
                super().validate()
                if self.minibatch_size > self.train_batch_size:
                    raise ConfigError("config key 'minibatch_size' must be <= train_batch_size")
        """
        _check(self.num_workers >= 0, "num_workers", "must be >= 0", self.num_workers)
        _check(self.num_envs_per_worker >= 1, "num_envs_per_worker", "must be >= 1",
               self.num_envs_per_worker)
        _check(self.rollout_fragment_length >= 1, "rollout_fragment_length", "must be >= 1",
               self.rollout_fragment_length)
        _check(0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]", self.gamma)
        _check(self.lr >= 0 and math.isfinite(self.lr), "lr", "must be a finite number >= 0",
               self.lr)
        _check(self.train_batch_size >= 1, "train_batch_size", "must be >= 1",
               self.train_batch_size)
        _check(all(h >= 1 for h in self.hiddens), "hiddens", "sizes must be >= 1", self.hiddens)
        _check(self.min_time_s_per_iteration >= 0, "min_time_s_per_iteration", "must be >= 0",
               self.min_time_s_per_iteration)
        _check(self.min_steps_per_iteration >= 0, "min_steps_per_iteration", "must be >= 0",
               self.min_steps_per_iteration)
        _check(self.evaluation_num_episodes >= 0, "evaluation_num_episodes", "must be >= 0",
               self.evaluation_num_episodes)
        _check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0",
               self.checkpoint_every)
        self._validate_policies()

    def _validate_policies(self) -> None:
        if not self.policies:
            _check(self.policy_mapping_fn is None, "policy_mapping_fn",
                   "needs `policies` (multi-agent)", self.policy_mapping_fn)
            return
        self._validate_policy_mapping()
        for pid, overrides in self.policies.items():
            bad = sorted(set(overrides) & {"policies", "policy_mapping_fn"})
            if bad:
                raise ConfigError(f"config key 'policies.{pid}' cannot override {bad[0]!r}")
            try:  # the overrides are validated like any config, with did-you-mean hints
                self.replace(policies={}, policy_mapping_fn=None, **overrides)
            except ConfigError as e:
                raise ConfigError(f"in config key 'policies.{pid}': {e}") from None

    def _validate_policy_mapping(self) -> None:
        mapping = self.policy_mapping_fn
        if isinstance(mapping, str) and mapping not in _MAPPING_MODES:
            hint = _did_you_mean(mapping, _MAPPING_MODES)
            raise ConfigError(f"config key 'policy_mapping_fn' must be one of {_MAPPING_MODES} "
                              f"or a callable, got {mapping!r}{hint} (a callable saved in a "
                              "checkpoint is stored by name: pass policy_mapping_fn= again "
                              "to Algorithm.restore)")
        if mapping in (None, "shared") and len(self.policies) != 1:
            raise ConfigError(f"config key 'policy_mapping_fn' is 'shared' (the default), which "
                              f"needs exactly one policy, got {len(self.policies)} "
                              f"{list(self.policies)}; use 'by_agent' or a callable")

    def replace(self: C, **overrides: Any) -> C:
        """A validated copy with some fields changed (same rules as :func:`build_config`).

        Example::

            cfg = AlgorithmConfig().replace(num_workers=0, runtime="inline")
        """
        return build_config(type(self), overrides, base=self)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict (see :func:`config_to_dict`).

        Example::

            AlgorithmConfig().to_dict()["hiddens"]   # [64, 64]
        """
        return config_to_dict(self)


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} {rule}, got {_short_repr(value)}")


# --------------------------------------------------------------------------------------------
# build_config


class _Mismatch(Exception):
    """Internal: a value does not fit a type; turned into a ConfigError naming the top-level key."""


def build_config(cls: type[C], overrides: Mapping[str, Any] | None = None,
                 base: C | None = None, *, from_cli: bool = False) -> C:
    """Build a validated ``cls`` instance from ``base`` (or the defaults) plus ``overrides``.

    Checks, in order: every key is a field of ``cls`` (else a did-you-mean hint), every value fits
    the field's annotation, then ``validate()``. Coercions are the lossless ones: int -> float,
    an integral float -> int, list -> tuple for tuple fields, numeric strings -> int/float
    (YAML 1.1 reads ``1e-3`` as a string), ``"true"``/``"false"`` -> bool, a case-insensitive
    match of a ``Literal`` choice, a dict -> a nested dataclass field (merged onto its current
    value). With ``from_cli=True`` (values typed by a user: ``--set``, YAML files) also
    ``yes/no/on/off/1/0`` and the ints 0/1 -> bool, and ``"none"``/``"null"`` -> None for
    Optional fields. A bool is never accepted as a number.

    Example::

        cfg = build_config(AlgorithmConfig, {"lr": 1, "hiddens": [32, 32]})
        assert cfg.lr == 1.0 and cfg.hiddens == (32, 32)
        build_config(AlgorithmConfig, {"lr": "abc"})
        # ConfigError: config key 'lr' expects float, got str 'abc'
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"build_config needs a dataclass type, got {cls!r}")
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__} instance, got {type(base).__name__}")
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"config overrides for {cls.__name__} must be a mapping, got {type(overrides).__name__}"
        )
    cfg = _build(cls, overrides, base, from_cli, prefix="")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def _build(cls: type[C], overrides: Mapping[str, Any], base: C | None, from_cli: bool,
           prefix: str) -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _type_hints(cls)
    converted: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {_short_repr(key)} for "
                              f"{cls.__name__}")
        full_key = prefix + key
        f = fields.get(key)
        if f is None:
            hint = _did_you_mean(key, fields)
            raise ConfigError(f"unknown config key {full_key!r} for {cls.__name__}{hint}")
        if not f.init:
            raise ConfigError(f"config key {full_key!r} of {cls.__name__} cannot be set")
        tp = hints.get(key, Any)
        current = getattr(base, key) if base is not None else _default_of(f)
        converted[key] = _convert_field(full_key, value, tp, current, from_cli)
    try:
        if base is None:
            return cls(**converted)
        return dataclasses.replace(base, **converted)
    except ConfigError:
        raise
    except TypeError as e:
        # e.g. a required field without default that was not given
        raise ConfigError(f"cannot build {cls.__name__}: {e}") from e


def _convert_field(key: str, value: Any, tp: Any, current: Any, from_cli: bool) -> Any:
    # A dict given for a nested dataclass field is merged onto its current value, so
    # `--set model.hiddens=[8]` changes one sub-field without resetting the others.
    sub_cls = _dataclass_arm(tp)
    if sub_cls is not None and isinstance(value, Mapping):
        sub_base = current if isinstance(current, sub_cls) else None
        sub = _build(sub_cls, value, sub_base, from_cli, prefix=key + ".")
        validate = getattr(sub, "validate", None)
        if callable(validate):
            validate()
        return sub
    try:
        return _convert(value, tp, from_cli)
    except _Mismatch:
        pass
    if _origin(tp) is Literal:
        expected = "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    else:
        expected = _type_name(tp)
    raise ConfigError(f"config key {key!r} expects {expected}, got {_describe(value)}")


def _dataclass_arm(tp: Any) -> type | None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        for arm in typing.get_args(tp):
            if isinstance(arm, type) and dataclasses.is_dataclass(arm):
                return arm
    return None


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp)


def _is_union(tp: Any) -> bool:
    return _origin(tp) in (Union, types.UnionType)


def _convert(value: Any, tp: Any, from_cli: bool) -> Any:
    """Return ``value`` as an instance of ``tp`` or raise _Mismatch (never a ConfigError)."""
    if tp is Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is None or (from_cli and _is_none_string(value)):
            return None
        raise _Mismatch
    origin = _origin(tp)
    if _is_union(tp):
        arms = typing.get_args(tp)
        if type(None) in arms and (value is None or (from_cli and _is_none_string(value))):
            return None
        # Exact matches first so `int | float` keeps an int an int and `str | Path` keeps a str.
        for arm in arms:
            if _is_exact(value, arm):
                return _convert(value, arm, from_cli)
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, from_cli)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        return _convert_literal(value, typing.get_args(tp), from_cli)
    if tp is bool:
        return _convert_bool(value, from_cli)
    if tp is int:
        return _convert_int(value)
    if tp is float:
        return _convert_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is tuple or origin is tuple:
        return _convert_tuple(value, typing.get_args(tp), from_cli)
    if tp is list or origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, from_cli) for v in value]
    if tp is dict or origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        args = typing.get_args(tp)
        key_tp, val_tp = args if len(args) == 2 else (Any, Any)
        return {_convert(k, key_tp, from_cli): _convert(v, val_tp, from_cli)
                for k, v in value.items()}
    if tp is collections.abc.Callable or origin is collections.abc.Callable:
        if callable(value) and not isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            if isinstance(value, str) and value in tp.__members__:
                return tp.__members__[value]
            raise _Mismatch from None
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and _accepts_str(tp):
            return tp(value)
        raise _Mismatch
    # Unknown typing construct (TypeVar, Protocol, ...): accept rather than guess wrongly.
    return value


def _accepts_str(tp: type) -> bool:
    # pathlib.Path-like classes are constructed from a string on the CLI.
    return tp.__module__.startswith("pathlib")


def _is_exact(value: Any, tp: Any) -> bool:
    if tp is Any:
        return False
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if _origin(tp) is Literal:
        return any(type(value) is type(c) and value == c for c in typing.get_args(tp))
    base = _origin(tp) or tp
    if base is collections.abc.Callable:
        return callable(value) and not isinstance(value, str)
    return isinstance(base, type) and isinstance(value, base)


def _is_none_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "null")


def _convert_bool(value: Any, from_cli: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        s = value.strip().lower()
        if s == "true" or (from_cli and s in _TRUE_STRINGS):
            return True
        if s == "false" or (from_cli and s in _FALSE_STRINGS):
            return False
        raise _Mismatch
    # YAML turns `flag=1` into the int 1; only text a user typed may mean a bool by 0/1.
    if from_cli and isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(int(value))
    raise _Mismatch


def _convert_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise _Mismatch
    if isinstance(value, str):
        s = value.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)  # "4e3" from a command line
        except ValueError:
            raise _Mismatch from None
        if math.isfinite(f) and f.is_integer():
            return int(f)
    raise _Mismatch


def _convert_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _convert_literal(value: Any, choices: tuple[Any, ...], from_cli: bool) -> Any:
    for c in choices:
        # type check so that True does not match the choice 1
        if type(value) is type(c) and value == c:
            return c
    if isinstance(value, str):
        folded = [c for c in choices if isinstance(c, str) and c.lower() == value.lower()]
        if len(folded) == 1:
            return folded[0]
    for c in choices:
        if isinstance(c, (bool, int, float)) and not isinstance(value, bool):
            try:
                candidate = _convert(value, type(c), from_cli)
            except _Mismatch:
                continue
            if candidate == c:
                return c
    raise _Mismatch


def _convert_tuple(value: Any, args: tuple[Any, ...], from_cli: bool) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _Mismatch
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], from_cli) for v in value)
    if args == ((),):  # tuple[()]
        args = ()
    if len(value) != len(args):
        raise _Mismatch
    return tuple(_convert(v, t, from_cli) for v, t in zip(value, args, strict=True))


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        # A string annotation naming a type that is not importable at module level (e.g. defined
        # in a function): use what we can evaluate and accept anything for the rest.
        hints: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            hints[f.name] = Any if isinstance(f.type, str) else f.type
        return hints


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _did_you_mean(key: str, fields: Iterable[str]) -> str:
    names = list(fields)
    lowered = {n.lower(): n for n in names}
    if key.lower() in lowered:
        return f" (did you mean {lowered[key.lower()]!r}?)"
    # '-' vs '_' is the commonest CLI slip
    normalized = key.replace("-", "_").lower()
    if normalized in lowered:
        return f" (did you mean {lowered[normalized]!r}?)"
    close = difflib.get_close_matches(normalized, list(lowered), n=1, cutoff=0.6)
    if not close:
        # difflib alone misses 'lr_rate' -> 'lr' (the ratio is low for short names), so also
        # consider fields sharing a whole word with the key and take the most similar of those.
        words = {w for w in normalized.split("_") if len(w) >= 2}
        sharing = [n for n in lowered if words & set(n.split("_"))]
        if sharing:
            close = [max(sharing, key=lambda n: difflib.SequenceMatcher(None, normalized,
                                                                         n).ratio())]
    if close:
        return f" (did you mean {lowered[close[0]]!r}?)"
    return ""


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "Any"
    if tp is type(None) or tp is None:
        return "None"
    origin = _origin(tp)
    args = typing.get_args(tp)
    if _is_union(tp):
        arms = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a) for a in arms)
        return text + " or None" if len(arms) < len(args) else text
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if tp is collections.abc.Callable or origin is collections.abc.Callable:
        return "callable"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if not args:
            return name
        parts = ["..." if a is Ellipsis else _type_name(a) for a in args]
        return f"{name}[{', '.join(parts)}]"
    return getattr(tp, "__name__", str(tp))


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_short_repr(value)}"


# --------------------------------------------------------------------------------------------
# text sources: --set and YAML


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


# --------------------------------------------------------------------------------------------
# output: dicts and help


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


def config_help(cls: type) -> str:
    """A plain-text table of ``cls``'s fields: name, type, default and help text.

    Help comes from ``field(metadata={"help": ...})``, else from an attribute docstring
    (a string literal right after the field in the class body).

    Example::

        print(config_help(AlgorithmConfig))
        # name        type             default        help
        # env         str or callable  'CartPole-v1'  Gymnasium env id, or a callable ...
        # activation  tanh|relu|elu    'tanh'         activation function of the hidden layers
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_help needs a dataclass type, got {cls!r}")
    hints = _type_hints(cls)
    docs = _attribute_docstrings(cls)
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = _default_of(f)
        default_text = "(required)" if default is dataclasses.MISSING else _display(default)
        help_text = _field_help(cls, f.name) or docs.get(f.name, "")
        rows.append((f.name, _type_name(hints.get(f.name, Any)), default_text,
                     " ".join(str(help_text).split())))
    header = ("name", "type", "default", "help")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = []
    for r in [header, *rows]:
        cells = [r[i].ljust(widths[i]) for i in range(3)]
        lines.append("  ".join([*cells, r[3]]).rstrip())
    return "\n".join(lines)


def _field_help(cls: type, name: str) -> str:
    # A subclass that only changes a default (`lr: float = 5e-5`) keeps the base class's help.
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return str(f.metadata["help"])
    return ""


def _display(value: Any) -> str:
    if callable(value):
        return qualified_name(value)
    return _short_repr(value, limit=40)


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings of ``cls`` and its dataclass bases (nearest class wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs
