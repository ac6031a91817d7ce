"""Provenance: errors name the operator, its plan line and the shard; plans print themselves."""

from __future__ import annotations

import re
import sys
import traceback

import pytest

from rldataflow.flow import (
    Concurrently,
    OperatorError,
    from_local_iterable,
    from_range,
)
from rldataflow.runtime import RemoteTraceback, get_runtime

HERE = "test_provenance.py"


def line_above() -> int:
    return sys._getframe(1).f_lineno - 1


def divide_by_zero_on_four(x):
    if x == 4:
        return x / 0
    return x


def causes(exc):
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__
    return out


# -- local operators ---------------------------------------------------------------------------
def test_local_for_each_error_names_operator_and_plan_line_and_chains_the_original():
    it = from_local_iterable(range(10)).for_each(divide_by_zero_on_four)
    line = line_above()
    assert it.take(4) == [0, 1, 2, 3]
    with pytest.raises(OperatorError) as info:
        next(it)
    err = info.value
    msg = str(err)
    assert msg.startswith("operator for_each(divide_by_zero_on_four) ")
    assert f"{HERE}:{line}" in msg and "ZeroDivisionError: division by zero" in msg
    assert "on shard" not in msg  # a driver-side operator has no shard
    assert err.operator == "for_each(divide_by_zero_on_four)" and err.site.endswith(f":{line}")
    assert isinstance(err.__cause__, ZeroDivisionError)
    # the user's frame is where the chained traceback ends; no generator plumbing on top
    last = traceback.extract_tb(err.__cause__.__traceback__)[-1]
    assert last.name == "divide_by_zero_on_four"
    assert err.__traceback__ is not None
    assert len(traceback.extract_tb(err.__traceback__)) <= 2


def test_lambda_errors_in_each_kind_of_local_operator():
    # a function is named by its qualified name: a lambda says where it was defined
    def src():
        return from_local_iterable(range(5))

    cases = [(src().for_each(lambda x: 1 / (x - 2)), line_above() + 1, "for_each",
              ZeroDivisionError),
             (src().filter(lambda x: [][x]), line_above() + 1, "filter", IndexError),
             (src().combine(lambda x: None if x == 2 else [x]), line_above() + 1, "combine",
              TypeError),
             (src().transform(lambda s: (1 / (x - 2) for x in s)), line_above() + 1,
              "transform", ZeroDivisionError)]
    for it, line, kind, error in cases:
        with pytest.raises(OperatorError) as info:
            list(it)
        msg = str(info.value)
        assert re.match(rf"operator {kind}\(test_lambda_errors\S*<lambda>\) \(created at "
                        rf"tests/flow/{HERE}:{line}\) failed: {error.__name__}", msg), msg
        assert isinstance(info.value.__cause__, error)


def test_source_error_names_the_source():
    def broken():
        yield 1
        raise OSError("disk gone")

    it = from_local_iterable(broken, name="read_logs")
    line = line_above()
    assert next(it) == 1
    with pytest.raises(OperatorError, match=rf"operator read_logs .*{HERE}:{line}.*OSError: disk"):
        next(it)


def test_error_in_one_branch_of_a_union_names_that_branch():
    good = from_local_iterable(range(5)).for_each(lambda x: x)
    bad = from_local_iterable(range(5)).for_each(divide_by_zero_on_four)
    line = line_above()
    plan = Concurrently([good, bad], mode="async")
    with pytest.raises(OperatorError) as info:
        list(plan)
    assert f"for_each(divide_by_zero_on_four) (created at tests/flow/{HERE}:{line})" \
        in str(info.value)


# -- remote shards -----------------------------------------------------------------------------
@pytest.mark.parametrize("gather", ["gather_sync", "gather_async"])
def test_remote_shard_error_names_operator_line_and_shard(runtime, gather):
    par = from_range(8, num_shards=2, runtime=runtime).for_each(divide_by_zero_on_four)
    line = line_above()
    it = getattr(par, gather)()
    with pytest.raises(OperatorError) as info:
        list(it)
    err = info.value
    msg = str(err)
    assert msg.startswith("operator for_each(divide_by_zero_on_four) ")
    assert f"(created at tests/flow/{HERE}:{line})" in msg
    assert "on shard 1 (from_range-shard-1)" in msg  # 4 lives on shard 1 (items 4..7)
    assert "ZeroDivisionError: division by zero" in msg
    assert err.shard == "1 (from_range-shard-1)"
    chain = causes(err)
    if runtime.name == "inline":
        assert isinstance(chain[1], ZeroDivisionError)
    else:
        remote = [c for c in chain if isinstance(c, RemoteTraceback)]
        assert remote, chain
        text = remote[0].text
        assert "ZeroDivisionError: division by zero" in text
        assert "divide_by_zero_on_four" in text and HERE in text
        assert "from_range-shard-1" in text  # the actor-side traceback says where it ran
    # it is one error, not an error per layer
    assert sum(isinstance(c, OperatorError) for c in chain) == 1


def test_remote_lambda_error_names_the_lambda_and_its_line():
    with get_runtime("process") as rt:
        par = from_range(4, num_shards=1, runtime=rt).filter(lambda x: {}[x])
        line = line_above()
        with pytest.raises(OperatorError) as info:
            next(par.gather_async())
    msg = str(info.value)
    assert re.match(rf"operator filter\(\S*<lambda>\) \(created at tests/flow/{HERE}:{line}\) "
                    r"on shard 0 \(from_range-shard\) failed: KeyError: 0", msg), msg
    assert "KeyError: 0" in msg


def test_error_in_the_driver_after_a_gather_has_no_shard(runtime):
    it = from_range(8, num_shards=2, runtime=runtime).gather_sync().for_each(
        divide_by_zero_on_four)
    with pytest.raises(OperatorError) as info:
        list(it)
    assert info.value.shard is None
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# -- describe / DOT / Mermaid ----------------------------------------------------------------
def _plan(rt):
    par = from_range(8, num_shards=2, runtime=rt).for_each(divide_by_zero_on_four)
    line_par = line_above()
    rollouts = par.gather_async(num_async=2)
    a, b = rollouts.duplicate(2)
    left = a.batch(2)
    right = b.filter(lambda x: x % 2 == 0)
    plan = Concurrently([left, right], mode="async", output_indexes=[0])
    line_plan = line_above()
    return plan, line_par, line_plan


NODE_NAMES = ["Concurrently(mode=async, output_indexes=[0])", "batch(2)",
              "filter(_plan.<locals>.<lambda>)",
              "duplicate(2)[0]", "duplicate(2)[1]", "gather_async(num_async=2)",
              "for_each(divide_by_zero_on_four)", "from_range(8, 2 shards)"]


def test_describe_lists_every_operator_with_its_site():
    with get_runtime("inline") as rt:
        plan, line_par, line_plan = _plan(rt)
        text = plan.describe()
    lines = text.splitlines()
    assert lines[0] == f"Concurrently(mode=async, output_indexes=[0])  @ tests/flow/{HERE}:" \
        f"{line_plan}"
    for name in NODE_NAMES:
        assert name in text, name
    assert f"for_each(divide_by_zero_on_four) [2 shards: from_range-shard, from_range-shard-1; " \
           f"inline runtime]  @ tests/flow/{HERE}:{line_par}" in text
    # every line names a site in this file (the shared gather is printed once, then referenced)
    assert all(f"@ tests/flow/{HERE}:" in ln for ln in lines)
    assert sum("(shown above)" in ln for ln in lines) == 1
    assert lines[1].startswith("├─ batch(2)") and lines[-1].endswith("(shown above)")


def test_to_dot_and_to_mermaid_contain_every_node_and_edge():
    with get_runtime("inline") as rt:
        plan, _, _ = _plan(rt)
        dot, mermaid = plan.to_dot(), plan.to_mermaid()
    # DOT: a digraph with one labelled box per node and an edge per parent link
    assert dot.startswith("digraph plan {") and dot.rstrip().endswith("}")
    node_lines = re.findall(r'^  n(\d+) \[label="([^"]*)"\];$', dot, re.M)
    edge_lines = re.findall(r"^  n(\d+) -> n(\d+);$", dot, re.M)
    assert len(node_lines) == len(NODE_NAMES)
    labels = [label for _, label in node_lines]
    for name in NODE_NAMES:
        assert sum(label.startswith(name) for label in labels) == 1, name
    assert all(f"{HERE}:" in label for label in labels)
    ids = {i for i, _ in node_lines}
    assert {a for a, _ in edge_lines} | {b for _, b in edge_lines} == ids
    assert len(edge_lines) == 8  # 7 parent links in the tree + the duplicate's second branch
    # Mermaid: the same graph
    assert mermaid.startswith("flowchart TB")
    m_nodes = re.findall(r'^  n(\d+)\["([^"]*)"\]$', mermaid, re.M)
    m_edges = re.findall(r"^  n(\d+) --> n(\d+)$", mermaid, re.M)
    assert len(m_nodes) == len(NODE_NAMES) and sorted(m_edges) == sorted(edge_lines)
    for name in NODE_NAMES:
        assert any(label.startswith(name) for _, label in m_nodes), name
