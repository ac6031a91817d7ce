"""A shard's process SIGKILLed mid-stream: named error at once, or the failure policy applies."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rldataflow.flow import from_actors
from rldataflow.runtime import ActorDiedError

pytestmark = pytest.mark.timeout(120)


class Ticker:
    """An endless source: ``tick()`` returns ``(tag, pid, n)``."""

    def __init__(self, tag):
        self.tag = tag
        self.n = 0

    def tick(self):
        self.n += 1
        time.sleep(0.01)
        return (self.tag, os.getpid(), self.n)


def start(rt, gather, on_failure=None):
    victim = rt.create_actor(Ticker, "victim", name="victim")
    other = rt.create_actor(Ticker, "other", name="other")
    par = from_actors([victim, other], "tick", runtime=rt)
    if gather == "gather_async":
        it = par.gather_async(num_async=2, on_failure=on_failure)
    else:
        it = par.gather_sync(on_failure=on_failure)
    return par, it, victim, other


def kill_victim(it):
    """Pull until the victim's pid is known, SIGKILL it; returns the kill time."""
    for _ in range(1000):
        tag, pid, _ = next(it)
        if tag == "victim":
            os.kill(pid, signal.SIGKILL)
            return time.monotonic()
    raise AssertionError("the victim never produced an item")


def pull_until(it, predicate, timeout=30.0):
    """Pull items until ``predicate(items so far)`` holds; returns the items."""
    items = []
    deadline = time.monotonic() + timeout
    while not predicate(items):
        assert time.monotonic() < deadline, f"gave up after {len(items)} items: {items[-5:]}"
        items.append(next(it))
    return items


@pytest.mark.parametrize("gather", ["gather_async", "gather_sync"])
def test_without_policy_a_dead_shard_raises_actor_died_error_promptly(remote_runtime, gather):
    _, it, _, _ = start(remote_runtime, gather)
    killed_at = kill_victim(it)
    with pytest.raises(ActorDiedError) as info:
        for _ in range(100_000):
            next(it)
    elapsed = time.monotonic() - killed_at
    assert elapsed < 3, f"death surfaced after {elapsed:.2f}s"
    err = info.value
    assert err.actor_name == "victim" and "victim" in str(err)
    notes = " ".join(getattr(err, "__notes__", []))
    if hasattr(err, "add_note"):
        assert gather in notes and "on_failure" in notes


@pytest.mark.parametrize("gather", ["gather_async", "gather_sync"])
def test_a_replacement_actor_takes_over_the_shard(remote_runtime, gather):
    rt = remote_runtime
    calls = []

    def replace(index, actor, error):
        calls.append((index, actor.name, type(error).__name__))
        return rt.create_actor(Ticker, "replacement", name="replacement")

    par, it, _, _ = start(rt, gather, on_failure=replace)
    kill_victim(it)
    after = pull_until(it, lambda items: sum(t == "replacement" for t, _, _ in items) >= 3)
    assert calls == [(0, "victim", "ActorDiedError")]
    assert it.metrics.counters["shards_restarted"] == 1
    # the requests in flight to the victim when it died (num_async=2 of them, less a reply
    # already in hand; lock-step: its one request of the next round)
    lost = it.metrics.counters["requests_lost"]
    assert (1 <= lost <= 2) if gather == "gather_async" else lost == 1
    assert "shards_dropped" not in it.metrics.counters
    # the replacement's items start from its own beginning; the other shard went on throughout
    assert [n for t, _, n in after if t == "replacement"][:3] == [1, 2, 3]
    assert sum(t == "other" for t, _, _ in after) >= 2
    assert sum(t == "victim" for t, _, _ in after) <= 2  # only results already in hand
    assert [a.name for a in par.actors()] == ["replacement", "other"]
    if gather == "gather_sync":  # lock-step: the replacement fills the dead shard's slot
        tail = [t for t, _, _ in after[-5:]]
        assert tail == ["replacement", "other", "replacement", "other", "replacement"]


@pytest.mark.parametrize("gather", ["gather_async", "gather_sync"])
def test_a_policy_returning_none_drops_the_shard(remote_runtime, gather):
    dropped = []
    _, it, _, other = start(remote_runtime, gather,
                            on_failure=lambda i, a, e: dropped.append(a.name))
    kill_victim(it)
    after = pull_until(it, lambda items: sum(t == "other" for t, _, _ in items) >= 10)
    assert dropped == ["victim"]
    assert it.metrics.counters["shards_dropped"] == 1
    assert "shards_restarted" not in it.metrics.counters
    assert sum(t == "victim" for t, _, _ in after) <= 2
    assert all(t == "other" for t, _, _ in after[-8:])
    assert other.is_alive()


def test_a_failing_policy_is_reported_as_an_operator_error(remote_runtime):
    from rldataflow.flow import OperatorError

    def broken_policy(index, actor, error):
        raise RuntimeError("no spare workers")

    _, it, _, _ = start(remote_runtime, "gather_async", on_failure=broken_policy)
    kill_victim(it)
    with pytest.raises(OperatorError, match="on_failure policy failed: RuntimeError: no spare"):
        for _ in range(100_000):
            next(it)


@pytest.mark.parametrize("policy", ["replace", "drop", "none"])
def test_a_shard_dead_before_the_gather_starts_gets_the_same_policy(remote_runtime, policy):
    rt = remote_runtime
    victim = rt.create_actor(Ticker, "victim", name="victim")
    other = rt.create_actor(Ticker, "other", name="other")
    os.kill(rt.call(victim, lambda inst: os.getpid()).result(timeout=60), signal.SIGKILL)
    on_failure = {"replace": lambda i, a, e: rt.create_actor(Ticker, "replacement"),
                  "drop": lambda i, a, e: None,
                  "none": None}[policy]
    it = from_actors([victim, other], "tick", runtime=rt).gather_sync(on_failure=on_failure)
    if policy == "none":
        with pytest.raises(ActorDiedError, match="victim"):
            next(it)
        return
    tags = [t for t, _, _ in it.take(4)]
    if policy == "replace":
        assert tags == ["replacement", "other"] * 2
        assert it.metrics.counters["shards_restarted"] == 1
    else:
        assert tags == ["other"] * 4
        assert it.metrics.counters["shards_dropped"] == 1
