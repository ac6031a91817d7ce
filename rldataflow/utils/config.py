"""The RL base config: :class:`AlgorithmConfig` (the fields every algorithm shares, with help
text in ``field(metadata={"help": ...})``) and :func:`build_config`, the one validated way to
build a config dataclass from overrides. The type checks live in
:mod:`~rldataflow.utils.coercion`, the override sources and JSON conversion in
:mod:`~rldataflow.utils.config_sources` and the help table in :mod:`~rldataflow.utils.config_help`;
their public names are re-exported here.

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

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

from rldataflow.utils.coercion import ConfigError, _build, _did_you_mean, _short_repr
from rldataflow.utils.config_help import config_help
from rldataflow.utils.config_sources import (
    config_to_dict,
    load_yaml_config,
    merge_overrides,
    parse_set_args,
    qualified_name,
    to_jsonable,
)

__all__ = [
    "AlgorithmConfig",
    "ConfigError",
    "build_config",
    "describe_field",
    "config_help",
    "config_to_dict",
    "load_yaml_config",
    "merge_overrides",
    "parse_set_args",
    "qualified_name",
    "to_jsonable",
]

C = TypeVar("C")

#: Keys ``evaluation_config`` may override: what the evaluation workers are built from.
EVALUATION_CONFIG_KEYS = ("env", "env_config", "seed")

#: Named values of ``policy_mapping_fn`` (see ``rldataflow.policies.policy_spec``).
_MAPPING_MODES = ("shared", "by_agent")


def describe_field(text: str, *, ge: float | None = None, gt: float | None = None,
                   le: float | None = None, lt: float | None = None) -> dict[str, Any]:
    """Metadata of a config field: its help text and the numeric bounds :func:`build_config`
    enforces (with one line naming the key). Example::

        lr: float = field(default=3e-4, metadata=describe_field("learning rate", gt=0))
        build_config(MyConfig, {"lr": -1})   # ConfigError: config key 'lr' must be > 0, got -1.0
    """
    meta: dict[str, Any] = {"help": text}
    for name, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)):
        if bound is not None:
            meta[name] = bound
    return meta


_help = describe_field


def _policies_shorthand(key: str, value: Any) -> Any:
    """``[p0, p1]`` (a list or tuple of policy ids) -> ``{p0: {}, p1: {}}``; else unchanged."""
    if not isinstance(value, (list, tuple)):
        return value
    ids: dict[str, dict[str, Any]] = {}
    for pid in value:
        if not isinstance(pid, str):
            raise ConfigError(f"config key {key!r}: a list of policy ids must hold strings, "
                              f"got {_short_repr(pid)}")
        if pid in ids:
            raise ConfigError(f"config key {key!r} names policy {pid!r} twice")
        ids[pid] = {}
    return ids


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
        default=0, metadata=_help("base seed; each worker derives its own from it", ge=0)
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
    evaluation_interval: int | None = field(
        default=None, metadata=_help("evaluate every N training iterations, results under "
                                     "evaluation/* keys; 0 or None = never", ge=0)
    )
    evaluation_num_episodes: int = field(
        default=10, metadata=_help("episodes per evaluation (and of evaluate())", ge=0)
    )
    evaluation_num_workers: int = field(
        default=0, metadata=_help("separate evaluation workers; 0 = evaluate in the driver",
                                  ge=0)
    )
    evaluation_parallel_to_training: bool = field(
        default=False, metadata=_help("run each evaluation while the iteration's training "
                                      "runs (with the weights from before it); needs "
                                      "evaluation_num_workers >= 1")
    )
    evaluation_explore: bool = field(
        default=False, metadata=_help("sample actions during evaluation (default: "
                                      "deterministic, the distribution's mode)")
    )
    evaluation_config: dict[str, Any] = field(
        default_factory=dict, metadata=_help("config overrides for the evaluation workers: "
                                             "env, env_config, seed (e.g. {env_config: "
                                             "{...}})")
    )
    checkpoint_every: int = field(
        default=0, metadata=_help("save a checkpoint every N iterations; 0 = only the final one")
    )
    restart_failed_workers: bool = field(
        default=True, metadata=_help("recreate a dead actor (rollout worker, replay shard, "
                                     "aggregator) instead of failing the run")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = field(
        default="INFO", metadata=_help("logging level of the rldataflow loggers")
    )
    policies: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={**_help("multi-agent: policy id -> overrides of this config for that "
                          "policy (e.g. {p0: {}, p1: {lr: 0.001}}); a list [p0, p1] is short "
                          "for {p0: {}, p1: {}}; empty = single-agent"),
                  "coerce": _policies_shorthand},
    )
    policy_mapping_fn: Union[str, Callable[..., Any], None] = field(
        default=None,
        metadata=_help("multi-agent: agent id -> policy id; 'shared' (all agents, one policy), "
                       "'by_agent' (policy named like the agent, else the i-th policy for the "
                       "i-th agent) or a callable; None = 'shared'"),
    )

    output: str | None = field(
        default=None,
        metadata=_help("directory to also write every sampled batch to, as a dataset of "
                       "shards (see docs/offline.md); None = don't write"),
    )
    output_format: Literal["parquet", "json"] = field(
        default="parquet", metadata=_help("format of the output dataset's shards "
                                          "(parquet needs pyarrow: rldataflow[offline])"),
    )
    output_max_rows_per_file: int = field(
        default=10_000, metadata=_help("most rows in one output shard"),
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
        self._validate_evaluation()
        _check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0",
               self.checkpoint_every)
        _check(self.output_max_rows_per_file >= 1, "output_max_rows_per_file", "must be >= 1",
               self.output_max_rows_per_file)
        if self.output is not None and self.output_format == "parquet":
            _check_pyarrow("output")
        self._validate_policies()

    def _validate_evaluation(self) -> None:
        if self.evaluation_parallel_to_training and self.evaluation_interval:
            _check(self.evaluation_num_workers >= 1, "evaluation_parallel_to_training",
                   "needs evaluation_num_workers >= 1 (a driver-side evaluation would stop "
                   "the training it should overlap)", self.evaluation_parallel_to_training)
        for key in self.evaluation_config:
            if key not in EVALUATION_CONFIG_KEYS:
                hint = _did_you_mean(key, [f.name for f in dataclasses.fields(self)])
                raise ConfigError(f"config key 'evaluation_config.{key}' cannot be overridden "
                                  f"for evaluation (only {', '.join(EVALUATION_CONFIG_KEYS)})"
                                  f"{hint}")
        if self.evaluation_config:
            try:  # the overrides' types are checked like any config value
                self.replace(evaluation_config={}, **self.evaluation_config)
            except ConfigError as e:
                raise ConfigError(f"in config key 'evaluation_config': {e}") from None

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


def _check_pyarrow(key: str) -> None:
    """Parquet datasets need pyarrow; say so naming the key, without importing it."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(f"config key {key!r}: offline datasets need pyarrow: "
                          'pip install "rldataflow[offline]"')


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} {rule}, got {_short_repr(value)}")


# --------------------------------------------------------------------------------------------
# build_config

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
