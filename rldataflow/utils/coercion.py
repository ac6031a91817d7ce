"""The typed-dataclass coercion engine behind :func:`~rldataflow.utils.config.build_config`:
it checks overrides against a dataclass's fields and annotations, converts only where that is
lossless, and reports a mismatch as one :class:`ConfigError` line naming the key. It knows
nothing of the RL config built on it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

__all__ = ["ConfigError"]

C = TypeVar("C")

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


class _Mismatch(Exception):
    """Internal: a value does not fit a type; turned into a ConfigError naming the top-level key."""


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
        shorthand = f.metadata.get("coerce")
        if shorthand is not None:  # a field's own shorthand, e.g. a list of policy ids
            value = shorthand(full_key, value)
        converted[key] = _convert_field(full_key, value, tp, current, from_cli)
        _check_bounds(full_key, converted[key], f.metadata)
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


#: Field metadata keys of numeric bounds (see :func:`rldataflow.utils.config.describe_field`).
BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _check_bounds(key: str, value: Any, metadata: Mapping[str, Any]) -> None:
    # None (an Optional field switched off) and non-numbers (a schedule, say) have no bounds;
    # NaN fails every comparison, so it is refused wherever a bound is declared.
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value:  # NaN: meaningless as a setting, and it slips past "x < 0" checks
        raise ConfigError(f"config key {key!r} must be a number, got nan")
    for name, (_, holds) in BOUNDS.items():
        bound = metadata.get(name)
        if bound is not None and not holds(value, bound):
            rules = " and ".join(f"{BOUNDS[n][0]} {metadata[n]:g}" for n in BOUNDS
                                 if metadata.get(n) is not None)
            raise ConfigError(f"config key {key!r} must be {rules}, got {_short_repr(value)}")


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
