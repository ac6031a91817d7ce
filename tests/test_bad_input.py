"""Bad input, generated: every malformed config, env id, space or YAML file gets one line.

Hypothesis draws hundreds of broken inputs to ``rldataflow.build`` and to the CLI (wrong
types, unknown keys, out-of-range values, bad env ids and algorithm names, bad policy
mappings, envs with spaces no algorithm takes, malformed YAML). Each must end in a
``ConfigError`` or ``EnvError`` whose message is one line naming the culprit, with no other
exception type (a traceback of internals) and nothing left running (threads, processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import keyword
import threading
import time
import typing
from typing import Any, Literal

import gymnasium as gym
import psutil
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rldataflow
from rldataflow import cli
from rldataflow.algorithms.registry import get_algorithm
from rldataflow.envs import EnvError
from rldataflow.utils.coercion import BOUNDS
from rldataflow.utils.config import ConfigError

ALGORITHMS = ("pg", "a2c", "a3c", "ppo", "dqn", "apex", "impala", "appo")
BASE = dict(env="CartPole-v1", runtime="inline", num_workers=0)
MIN_WORKERS = {"apex": 1}  # Ape-X needs actors (inline ones here)
# words the lenient coercions read as numbers, booleans or None
SPECIAL_WORDS = {"inf", "infinity", "nan", "true", "false", "yes", "no", "on", "off", "none",
                 "null", "y", "n"}
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda w: w.lower() not in SPECIAL_WORDS)


@dataclasses.dataclass
class Case:
    """A broken input: build ``algorithm`` with ``overrides``; ``culprit`` must be named."""

    algorithm: str
    overrides: dict[str, Any]
    culprit: str

    def __repr__(self) -> str:  # hypothesis prints it on failure
        return f"build({self.algorithm!r}, **{self.overrides!r})  # culprit {self.culprit!r}"


def _fields(algorithm: str) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    config_cls = get_algorithm(algorithm).Config
    return ({f.name: f for f in dataclasses.fields(config_cls) if f.init},
            typing.get_type_hints(config_cls))


def _scalar_kind(tp: Any) -> str | None:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    if tp is bool:
        return "bool"
    if tp in (int, float):
        return tp.__name__
    if typing.get_origin(tp) is Literal:
        return "literal"
    return None


@st.composite
def unknown_key(draw) -> Case:
    algorithm = draw(st.sampled_from(ALGORITHMS))
    fields, _ = _fields(algorithm)
    key = draw(WORDS.filter(lambda k: k not in fields and not keyword.iskeyword(k)))
    return Case(algorithm, {key: draw(st.integers())}, key)


@st.composite
def wrong_type(draw) -> Case:
    algorithm = draw(st.sampled_from(ALGORITHMS))
    fields, hints = _fields(algorithm)
    typed = sorted(k for k in fields if _scalar_kind(hints[k]) is not None)
    key = draw(st.sampled_from(typed))
    kind = _scalar_kind(hints[key])
    values = [WORDS, st.lists(st.integers(), min_size=1, max_size=3),
              st.dictionaries(WORDS, st.integers(), min_size=1, max_size=2)]
    if kind == "int":
        values.append(st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda x: not float(x).is_integer()))
    if kind == "bool":
        values.append(st.integers().filter(lambda i: i not in (0, 1)))
    if kind == "literal":
        choices = {str(c).lower() for c in typing.get_args(
            typing.get_args(hints[key])[0] if typing.get_origin(hints[key]) is typing.Union
            else hints[key])}
        values = [WORDS.filter(lambda w: w.lower() not in choices)]
    return Case(algorithm, {key: draw(st.one_of(values))}, key)


def _declared_bounds(algorithm: str) -> list[tuple[str, str, float]]:
    fields, hints = _fields(algorithm)
    return [(key, name, f.metadata[name]) for key, f in fields.items()
            for name in BOUNDS if f.metadata.get(name) is not None
            and _scalar_kind(hints[key]) in ("int", "float")]


# Rules the base config checks in validate() (not as field metadata): key -> a bad value.
BASE_RULES = {
    "num_workers": st.integers(max_value=-1),
    "num_envs_per_worker": st.integers(max_value=0),
    "rollout_fragment_length": st.integers(max_value=0),
    "gamma": st.one_of(st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
                       st.floats(min_value=1.000001, allow_nan=False, allow_infinity=False)),
    "lr": st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.just(float("inf"))),
    "train_batch_size": st.integers(max_value=0),
    "hiddens": st.lists(st.integers(max_value=0), min_size=1, max_size=3),
    "min_time_s_per_iteration": st.floats(max_value=-1e-6, allow_nan=False,
                                          allow_infinity=False),
    "min_steps_per_iteration": st.integers(max_value=-1),
    "evaluation_num_episodes": st.integers(max_value=-1),
    "checkpoint_every": st.integers(max_value=-1),
}


@st.composite
def out_of_range(draw) -> Case:
    algorithm = draw(st.sampled_from(ALGORITHMS))
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(BASE_RULES)))
        return Case(algorithm, {key: draw(BASE_RULES[key])}, key)
    declared = _declared_bounds(algorithm)
    key, name, bound = draw(st.sampled_from(declared))
    _, hints = _fields(algorithm)
    integral = _scalar_kind(hints[key]) == "int"
    step = draw(st.integers(1, 1000)) if integral else draw(st.floats(1e-3, 1e6))
    value = bound - step if name in ("ge", "gt") else bound + step
    value = int(value) if integral else float(value)
    return Case(algorithm, {key: value}, key)


@st.composite
def bad_env_id(draw) -> Case:
    name = draw(WORDS)
    env_id = f"{name.capitalize()}{draw(st.sampled_from(['', 'Env', 'World']))}-v" \
             f"{draw(st.integers(0, 99))}"
    return Case(draw(st.sampled_from(ALGORITHMS)), {"env": env_id}, env_id)


@st.composite
def bad_algorithm(draw) -> Case:
    name = draw(WORDS.filter(lambda w: w not in ALGORITHMS and w != "composite"))
    return Case(name, {}, name)


@st.composite
def bad_policy_mapping(draw) -> Case:
    algorithm = draw(st.sampled_from(("ppo", "pg", "a2c")))
    ids = draw(st.lists(WORDS, min_size=1, max_size=3, unique=True))
    mapping = draw(WORDS.filter(lambda w: w not in ("shared", "by_agent")))
    return Case(algorithm, {"policies": {pid: {} for pid in ids},
                            "policy_mapping_fn": mapping}, "policy_mapping_fn")


class _SpacesEnv(gym.Env):
    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


BOX = spaces.Box(-1.0, 1.0, (2,))
BAD_SPACES = {  # (observation space, action space, algorithms that refuse it, culprit)
    "Text obs": (spaces.Text(5), spaces.Discrete(2), ALGORITHMS, "Text"),
    "Graph obs": (spaces.Graph(BOX, None), spaces.Discrete(2), ALGORITHMS, "Graph"),
    "Tuple actions": (BOX, spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), ALGORITHMS,
                      "Tuple"),
    "MultiBinary actions": (BOX, spaces.MultiBinary(3), ALGORITHMS, "MultiBinary"),
    "Box actions for DQN": (BOX, spaces.Box(-2.0, 2.0, (1,)), ("dqn", "apex"), "Box"),
}


@st.composite
def bad_spaces(draw) -> Case:
    what = draw(st.sampled_from(sorted(BAD_SPACES)))
    obs, act, algorithms, culprit = BAD_SPACES[what]
    algorithm = draw(st.sampled_from(algorithms))
    return Case(algorithm, {"env": lambda cfg, o=obs, a=act: _SpacesEnv(o, a)}, culprit)


BAD_INPUT = st.one_of(unknown_key(), wrong_type(), out_of_range(), bad_env_id(),
                      bad_algorithm(), bad_policy_mapping(), bad_spaces())


def _running() -> set[Any]:
    """Threads and child processes alive now. A Ray instance an earlier test started lives on
    in this process and starts and ends its own workers at any time: its processes are not
    counted (no case here starts Ray)."""
    alive: set[Any] = {t.ident for t in threading.enumerate() if t.is_alive()}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ray" not in " ".join(child.cmdline()).lower():
                alive.add(("pid", child.pid))
    return alive


def _leftovers(before: set[Any], grace_s: float = 5.0) -> list[str]:
    """What started since ``before`` and is still alive after ``grace_s`` (a helper thread that
    is already on its way out, e.g. the background forkserver start, is given time to end)."""
    deadline = time.monotonic() + grace_s
    while (new := _running() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = {t.ident: t.name for t in threading.enumerate()}
    return sorted(f"thread {names.get(x, x)}" if not isinstance(x, tuple) else f"pid {x[1]}"
                  for x in new)


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=BAD_INPUT)
def test_every_bad_build_input_is_one_line_naming_the_culprit(case: Case):
    before = _running()
    overrides = {**BASE, "num_workers": MIN_WORKERS.get(case.algorithm, 0), **case.overrides}
    with pytest.raises((ConfigError, EnvError)) as err:
        with rldataflow.build(case.algorithm, **overrides) as algo:
            algo.train()
    message = str(err.value)
    assert "\n" not in message, message
    assert case.culprit in message, message
    assert not _leftovers(before)


MALFORMED_YAML = st.one_of(
    st.sampled_from(["lr: [1, 2", "{lr: 1", "lr: 1\n  gamma: 2", "- 1\n- 2", "just text",
                     "lr: 1\nlr: 2\n\tgamma: 3", "? [a, b]\n: 1", "lr: *missing"]),
    WORDS.map(lambda w: f"{w}: [unclosed"),
    WORDS.map(lambda w: f"{w}: 1\n  {w}x: 2"),
)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MALFORMED_YAML)
def test_malformed_yaml_on_the_cli_is_one_line_naming_the_file(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", "ppo", "--config", str(path), "--runtime", "inline",
                         "--stop-iters", "1", "--out", str(tmp_path / "run")])
    lines = stderr.getvalue().strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "bad.yaml" in lines[0], lines
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("checkpoint_*"))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=st.one_of(unknown_key(), wrong_type(), out_of_range()))
def test_bad_set_values_on_the_cli_are_one_line(case: Case):
    (key, value), = case.overrides.items()
    text = str(value).lower() if isinstance(value, bool) else str(value)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["plan", case.algorithm, "--set", f"{key}={text}"])
    lines = stderr.getvalue().strip().splitlines()
    assert code != 0, f"--set {key}={text} was accepted"
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert key in lines[0], lines


def test_bad_input_on_the_process_runtime_leaves_nothing_running():
    before = _running()
    for overrides, culprit in [({"env": "NoSuchEnv-v3"}, "NoSuchEnv-v3"),
                               ({"gamma": 2.0}, "gamma"),
                               ({"env": lambda cfg: _SpacesEnv(BOX, spaces.MultiBinary(2))},
                                "MultiBinary")]:
        with pytest.raises((ConfigError, EnvError), match=culprit):
            rldataflow.build("ppo", env=overrides.pop("env", "CartPole-v1"), runtime="process",
                             num_workers=2, **overrides)
        assert not _leftovers(before)
