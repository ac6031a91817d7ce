"""What a hyperparameter sweep varies: a grid and/or a search space over config keys.

A sweep comes from ``--grid KEY=[V1,V2]`` items on the command line and/or a YAML file with a
``grid:`` and a ``search:`` section (the file's other keys are the fixed config)::

    algorithm: ppo
    env: CartPole-v1
    num_workers: 1
    grid:                       # every combination is run
      num_epochs: [5, 10]
    search:                     # drawn per trial (TPE embedded, random on Ray Tune)
      lr: {loguniform: [1.0e-5, 1.0e-3]}
      gamma: {uniform: [0.95, 0.999]}
      minibatch_size: {choice: [64, 128, 256]}
      rollout_fragment_length: {randint: [32, 128]}   # both ends included
    sweep:                      # optional; the command line's flags win
      samples: 4
      metric: episode_return_mean
      mode: max

Everything is checked before a trial starts: each swept key must be a config key of the
algorithm (else one line with a did-you-mean hint), each grid value and each end of a range must
be a valid value of that key.

Example::

    spec = parse_sweep(grid_items=["lr=[1e-3,3e-4]", "num_epochs=[5,10]"])
    spec.grid_points()        # 4 dicts, e.g. {'lr': 0.001, 'num_epochs': 5}
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import yaml

from rldataflow.utils.coercion import ConfigError, _did_you_mean, _short_repr
from rldataflow.utils.config_sources import load_yaml_config

__all__ = ["DISTRIBUTIONS", "Distribution", "SweepSpec", "parse_grid_args", "parse_sweep",
           "split_sweep_file"]

#: the range kinds of a ``search:`` entry and the number of arguments each takes
DISTRIBUTIONS: dict[str, str] = {
    "uniform": "[low, high]: a float drawn uniformly",
    "loguniform": "[low, high]: a float drawn uniformly in log space (low > 0)",
    "randint": "[low, high]: an integer, both ends included",
    "choice": "[v1, v2, ...]: one of the values",
}
SWEEP_SECTIONS = ("grid", "search", "sweep")
SWEEP_OPTIONS = ("samples", "metric", "mode")


@dataclass(frozen=True)
class Distribution:
    """One ``search:`` entry: ``kind`` (a key of :data:`DISTRIBUTIONS`) and its ``args``."""

    kind: Literal["uniform", "loguniform", "randint", "choice"]
    args: tuple[Any, ...]

    def bounds_or_values(self) -> list[Any]:
        """The values to check against the config key: the range's ends, or the choices."""
        return list(self.args)


@dataclass
class SweepSpec:
    """A validated sweep: ``grid`` (key -> values, every combination runs), ``search`` (key ->
    :class:`Distribution`), ``samples`` (trials drawn per grid combination when there is a
    search space; repeats of each combination with seeds ``seed, seed+1, ...`` when there is
    only a grid), ``metric`` and ``mode`` (``max``/``min``) that rank trials."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, Distribution] = field(default_factory=dict)
    samples: int | None = None
    metric: str = "episode_return_mean"
    mode: Literal["max", "min"] = "max"

    @property
    def keys(self) -> list[str]:
        return [*self.grid, *self.search]

    @property
    def num_samples(self) -> int:
        """Trials per grid combination (draws from the search space, or seeded repeats)."""
        if self.samples is not None:
            return self.samples
        return 10 if self.search else 1

    def effective_grid(self, base_seed: int = 0) -> dict[str, list[Any]]:
        """The grid actually run: with only a grid and ``samples`` > 1, ``seed`` becomes one
        more grid key (``base_seed, base_seed+1, ...``), so repeats differ and stay seeded."""
        grid = dict(self.grid)
        if not self.search and self.num_samples > 1:
            if "seed" in grid:
                raise ConfigError("--samples repeats a grid with different seeds, but 'seed' "
                                  "is already a grid key: drop one of them")
            grid["seed"] = [base_seed + i for i in range(self.num_samples)]
        return grid

    def grid_points(self, base_seed: int = 0) -> list[dict[str, Any]]:
        """Every combination of the effective grid, in order (the last key varies fastest)."""
        grid = self.effective_grid(base_seed)
        keys = list(grid)
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(grid[k] for k in keys))]

    def num_trials(self, base_seed: int = 0) -> int:
        points = len(self.grid_points(base_seed))
        return points * self.num_samples if self.search else points

    def validate_against(self, config_cls: type, base: Mapping[str, Any]) -> None:
        """Check each swept key and value against ``config_cls`` (one line naming the culprit)."""
        from rldataflow.utils.config import build_config
        from rldataflow.utils.config_sources import merge_overrides

        names = [f.name for f in fields(config_cls)]
        for key in self.keys:
            top = key.split(".")[0]
            if top not in names:
                where = "grid" if key in self.grid else "search"
                raise ConfigError(f"unknown config key {key!r} in the sweep's {where} for "
                                  f"{config_cls.__name__}{_did_you_mean(top, names)}")
        if not (isinstance(self.metric, str) and self.metric):
            raise ConfigError(f"sweep metric must be a result key, got {_short_repr(self.metric)}")
        checks = [(k, v) for k, vs in self.grid.items() for v in vs]
        checks += [(k, v) for k, d in self.search.items() for v in d.bounds_or_values()]
        for key, value in checks:
            try:
                build_config(config_cls, merge_overrides(base, _nested(key, value)),
                             from_cli=True)
            except ConfigError as e:
                raise ConfigError(f"sweep value {_short_repr(value)} of {key!r}: {e}") from None


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    target = out
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return out


def nested_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"env_config.size": 4, "lr": 1e-3}`` -> ``{"env_config": {"size": 4}, "lr": 1e-3}``."""
    from rldataflow.utils.config_sources import merge_overrides

    return merge_overrides(*(_nested(k, v) for k, v in params.items()))


def parse_grid_args(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``--grid KEY=[V1,V2,...]`` items (values are YAML); one line naming a bad item.

    Example::

        parse_grid_args(["lr=[1e-3,3e-4]", "hiddens=[[32],[64,64]]"])
        # {'lr': [0.001, 0.0003], 'hiddens': [[32], [64, 64]]}
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid expects KEY=[V1,V2,...], got {item!r}")
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = " ".join(str(e).split())[:120]
            raise ConfigError(f"--grid {key}: cannot parse {text!r} as a YAML list "
                              f"(expected e.g. {key}=[1,2]): {first}") from None
        out[key] = _grid_values(f"--grid {key}", values)
    return out


def _grid_values(where: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expects a non-empty list of values like [1, 2], "
                          f"got {_short_repr(values)}")
    return [_yaml_number(v) for v in values]


def _yaml_number(value: Any) -> Any:
    # YAML 1.1 reads 1e-3 (no dot) as a string; a sweep value that looks like a number is one.
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _distribution(key: str, spec: Any) -> Distribution:
    where = f"search key {key!r}"
    if not (isinstance(spec, Mapping) and len(spec) == 1):
        kinds = ", ".join(DISTRIBUTIONS)
        raise ConfigError(f"{where}: expects one of {{{kinds}}} with its arguments, e.g. "
                          f"{{loguniform: [1.0e-5, 1.0e-3]}}, got {_short_repr(spec)}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown range kind {kind!r}"
                          f"{_did_you_mean(str(kind), DISTRIBUTIONS)} (one of "
                          f"{', '.join(DISTRIBUTIONS)})")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} expects {DISTRIBUTIONS[kind]}, "
                          f"got {_short_repr(args)}")
    args = [_yaml_number(a) for a in args]
    if kind != "choice":
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if len(args) != 2 or not numeric or not args[0] < args[1]:
            raise ConfigError(f"{where}: {kind} expects {DISTRIBUTIONS[kind]} with low < high, "
                              f"got {_short_repr(args)}")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0, got {args[0]!r}")
        if kind == "randint" and not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: randint expects integer ends, got {_short_repr(args)}")
        if kind == "randint":
            args = [int(a) for a in args]
        else:
            args = [float(a) for a in args]
    return Distribution(kind, tuple(args))


def split_sweep_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a sweep YAML file: ``(fixed config keys, {"grid": ..., "search": ..., "sweep": ...})``.

    Example::

        base, sections = split_sweep_file("examples/sweep_ppo.yaml")
    """
    data = load_yaml_config(path)
    sections = {name: data.pop(name) for name in SWEEP_SECTIONS if name in data}
    for name, value in sections.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"{os.fspath(path)}: the {name!r} section must be a mapping of "
                              f"keys, got {_short_repr(value)}")
    return data, sections


def parse_sweep(grid_items: Sequence[str] = (), sections: Mapping[str, Any] | None = None,
                samples: int | None = None, metric: str | None = None,
                mode: str | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from ``--grid`` items, a file's sections and the sweep flags (the
    command line wins over the file, key by key). Raises :class:`ConfigError` for bad input."""
    sections = dict(sections or {})
    spec = SweepSpec()
    for key, values in dict(sections.get("grid") or {}).items():
        spec.grid[str(key)] = _grid_values(f"grid key {key!r}", values)
    spec.grid.update(parse_grid_args(grid_items))
    for key, dist in dict(sections.get("search") or {}).items():
        spec.search[str(key)] = _distribution(str(key), dist)
    both = sorted(set(spec.grid) & set(spec.search))
    if both:
        raise ConfigError(f"config key {both[0]!r} is both in the grid and in the search space")
    options = dict(sections.get("sweep") or {})
    unknown = [k for k in options if k not in SWEEP_OPTIONS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the 'sweep' section"
                          f"{_did_you_mean(str(unknown[0]), SWEEP_OPTIONS)} (one of "
                          f"{', '.join(SWEEP_OPTIONS)})")
    samples = samples if samples is not None else options.get("samples")
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"--samples must be an integer >= 1, got {_short_repr(samples)}")
        spec.samples = samples
    spec.metric = metric or options.get("metric") or spec.metric
    mode = mode or options.get("mode") or spec.mode
    if mode not in ("max", "min"):
        raise ConfigError(f"sweep mode must be 'max' or 'min', got {_short_repr(mode)}")
    spec.mode = mode
    if not spec.grid and not spec.search:
        raise ConfigError("tune needs something to sweep: --grid KEY=[V1,V2] or a --config "
                          "file with a 'grid:' or 'search:' section")
    return spec
