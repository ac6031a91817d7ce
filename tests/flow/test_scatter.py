"""ScatterCalls: per-item arguments sent to actors, results in argument order, dead actors
replaced and their calls reissued, errors named by the operator."""

from __future__ import annotations

import os
import signal

import pytest

from rldataflow.flow import OperatorError, ScatterCalls, from_local_iterable
from rldataflow.runtime import ActorDiedError

pytestmark = pytest.mark.timeout(120)


class Holder:
    """An actor with a tag; ``scaled(x)`` answers ``(tag, x * 10)``."""

    def __init__(self, tag):
        self.tag = tag
        self.seen = []

    def scaled(self, x):
        self.seen.append(x)
        return (self.tag, x * 10)


def square(instance, x):  # a function run on the actor
    return x * x


def pid_of(instance, _):
    return os.getpid()


def fail_on_three(instance, x):
    if x == 3:
        raise ValueError("three is bad")
    return x


def rounds(*lists):
    return from_local_iterable(lambda: iter([list(xs) for xs in lists]))


def test_results_come_back_in_argument_order_from_round_robin_actors(runtime):
    actors = [runtime.create_actor(Holder, t, name=t) for t in ("a", "b")]
    out = rounds([1, 2, 3], [4]).for_each(ScatterCalls(lambda: actors, "scaled",
                                                         runtime=runtime))
    assert out.take(2) == [[("a", 10), ("b", 20), ("a", 30)], [("a", 40)]]
    seen = [runtime.call(a, lambda inst: list(inst.seen)).result(timeout=60) for a in actors]
    assert seen == [[1, 3, 4], [2]]  # argument j went to actor j % 2, in order


def test_a_function_runs_on_the_actor_and_names_the_operator(runtime):
    actors = [runtime.create_actor(Holder, "a", name="a")]
    out = rounds([1, 2, 3]).for_each(ScatterCalls(lambda: actors, square, runtime=runtime))
    assert next(out) == [1, 4, 9]
    assert "ScatterCalls(square)" in out.describe()


def test_an_error_on_an_actor_is_an_operator_error_naming_the_argument(runtime):
    actors = [runtime.create_actor(Holder, "a", name="a")]
    out = rounds([1, 3]).for_each(ScatterCalls(lambda: actors, fail_on_three,
                                                 runtime=runtime))
    with pytest.raises(OperatorError, match=r"ScatterCalls\(fail_on_three\).*argument 1.*"
                                            r"three is bad"):
        next(out)


def test_actors_must_be_given_as_a_function(runtime):
    with pytest.raises(TypeError, match="must be a function returning the actors"):
        ScatterCalls([], "scaled", runtime=runtime)


def test_a_dead_actor_is_replaced_and_its_calls_reissued(remote_runtime):
    rt = remote_runtime
    actors = [rt.create_actor(Holder, t, name=t) for t in ("victim", "other")]
    os.kill(rt.call(actors[0], pid_of, None).result(timeout=60), signal.SIGKILL)
    calls = []

    def replace(index, actor, error):
        calls.append((index, actor.name, type(error).__name__))
        actors[index] = rt.create_actor(Holder, "new", name="new")
        return actors[index]

    out = rounds([1, 2, 3]).for_each(ScatterCalls(lambda: list(actors), "scaled", runtime=rt,
                                                    on_failure=replace))
    assert next(out) == [("new", 10), ("other", 20), ("new", 30)]
    assert calls == [(0, "victim", "ActorDiedError")]  # replaced once for its two calls


def test_without_a_policy_a_dead_actor_is_an_error_naming_it(remote_runtime):
    rt = remote_runtime
    actors = [rt.create_actor(Holder, "victim", name="victim")]
    os.kill(rt.call(actors[0], pid_of, None).result(timeout=60), signal.SIGKILL)
    out = rounds([1]).for_each(ScatterCalls(lambda: actors, "scaled", runtime=rt))
    with pytest.raises(OperatorError, match=r"ScatterCalls\(scaled\).*'victim'") as info:
        next(out)
    assert isinstance(info.value.__cause__, ActorDiedError)
