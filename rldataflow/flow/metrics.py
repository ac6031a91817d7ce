"""An explicit metrics object, visible in the plan, shared by every branch that feeds one plan.

RLlib's old dataflow layer kept metrics in a hidden thread-local context and dropped whatever
actors measured. Here a :class:`Metrics` is an ordinary object: every LocalIterator has one
(``it.metrics``), a union or Concurrently makes its inputs share one, and the counters and timers
recorded by operators running on actors are shipped back with each result and merged in.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

DEFAULT_WINDOW = 100


class Timer:
    """Accumulated wall time of a repeated section; a context manager.

    Example::

        with metrics.timers["learn"]:
            policy.learn_on_batch(batch)
        metrics.timers["learn"].mean   # seconds per call
    """

    __slots__ = ("total_s", "count", "last_s", "_start", "_units", "total_units")

    def __init__(self) -> None:
        self.total_s = 0.0
        self.count = 0
        self.last_s = 0.0
        self.total_units = 0.0
        self._units = 0.0
        self._start: float | None = None

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.push(time.perf_counter() - self._start)

    def push(self, seconds: float, units: float = 0.0) -> None:
        self.last_s = seconds
        self.total_s += seconds
        self.count += 1
        self.total_units += units

    def push_units(self, units: float) -> None:
        """Attribute work (e.g. env steps) to the last timed section, for a throughput figure."""
        self.total_units += units

    @property
    def mean(self) -> float:
        return self.total_s / self.count if self.count else 0.0

    @property
    def throughput(self) -> float:
        return self.total_units / self.total_s if self.total_s > 0 else 0.0

    def merge(self, other: Timer | dict) -> None:
        if isinstance(other, dict):
            self.total_s += other["total_s"]
            self.count += other["count"]
            self.total_units += other.get("total_units", 0.0)
            self.last_s = other.get("last_s", self.last_s)
        else:
            self.total_s += other.total_s
            self.count += other.count
            self.total_units += other.total_units
            self.last_s = other.last_s

    def state(self) -> dict:
        return {"total_s": self.total_s, "count": self.count, "last_s": self.last_s,
                "total_units": self.total_units}

    def __repr__(self) -> str:
        return f"Timer(mean={self.mean * 1e3:.2f}ms, count={self.count})"


class _Store:
    __slots__ = ("counters", "timers", "info", "windows", "window_size")

    def __init__(self, window_size: int) -> None:
        self.counters: defaultdict[str, float] = defaultdict(int)
        self.timers: defaultdict[str, Timer] = defaultdict(Timer)
        self.info: dict[str, Any] = {}
        self.window_size = window_size
        self.windows: dict[str, deque] = {}


class Metrics:
    """Counters, timers, info and bounded value windows for one plan.

    Example::

        m = Metrics()
        m.counters["env_steps_sampled"] += 200
        m.record("episode_return", 21.0)      # kept in a bounded window
        m.window("episode_return")             # [21.0]

    Two Metrics objects can be :meth:`unify`-ed: both then read and write one store, which is how
    every branch of a union ends up counting into the same place, even operators that captured
    the object before the union was built.
    """

    def __init__(self, window_size: int = DEFAULT_WINDOW) -> None:
        self._store = _Store(window_size)
        self._forward: Metrics | None = None

    # -- sharing -------------------------------------------------------------------------------
    def _root(self) -> Metrics:
        node = self
        while node._forward is not None:
            node = node._forward
        # path compression keeps lookups O(1) after a unify
        if node is not self and self._forward is not node:
            self._forward = node
        return node

    def unify(self, other: Metrics) -> Metrics:
        """Make ``other`` share this object's store (its existing values are merged in)."""
        a, b = self._root(), other._root()
        if a is b:
            return self
        a.merge(b)
        b._forward = a
        b._store = a._store
        return self

    def is_shared_with(self, other: Metrics) -> bool:
        return self._root() is other._root()

    # -- the store -----------------------------------------------------------------------------
    @property
    def counters(self) -> defaultdict[str, float]:
        return self._root()._store.counters

    @property
    def timers(self) -> defaultdict[str, Timer]:
        return self._root()._store.timers

    @property
    def info(self) -> dict[str, Any]:
        return self._root()._store.info

    def record(self, name: str, value: float) -> None:
        """Append a value to a bounded window (oldest values drop out)."""
        store = self._root()._store
        win = store.windows.get(name)
        if win is None:
            win = store.windows[name] = deque(maxlen=store.window_size)
        win.append(value)

    def record_many(self, name: str, values: Iterable[float]) -> None:
        for v in values:
            self.record(name, v)

    def window(self, name: str) -> list[float]:
        win = self._root()._store.windows.get(name)
        return list(win) if win else []

    def window_names(self) -> list[str]:
        return list(self._root()._store.windows)

    # -- shipping deltas from actors -------------------------------------------------------------
    def pop_delta(self) -> dict | None:
        """Take what was recorded since the last call (counters, timers, windows) and reset.

        Used on actors: the delta travels back with each result and is :meth:`merge`-d into the
        driver's Metrics. Returns None when nothing was recorded (the common case is free).
        """
        store = self._root()._store
        if not (store.counters or store.timers or store.windows):
            return None
        delta = {
            "counters": dict(store.counters),
            "timers": {k: t.state() for k, t in store.timers.items()},
            "windows": {k: list(v) for k, v in store.windows.items()},
        }
        store.counters.clear()
        store.timers.clear()
        store.windows.clear()
        return delta

    def merge(self, other: Metrics | dict | None) -> None:
        """Add another Metrics' (or a shipped delta's) counters, timers and windows to this one."""
        if other is None:
            return
        if isinstance(other, Metrics):
            src = other._root()._store
            delta = {"counters": src.counters, "timers": src.timers,
                     "windows": src.windows, "info": src.info}
        else:
            delta = other
        counters = self.counters
        for k, v in delta.get("counters", {}).items():
            counters[k] += v
        timers = self.timers
        for k, t in delta.get("timers", {}).items():
            timers[k].merge(t)
        for k, values in delta.get("windows", {}).items():
            self.record_many(k, values)
        for k, v in delta.get("info", {}).items():
            self.info.setdefault(k, v)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of the current values (for reporting)."""
        store = self._root()._store
        return {
            "counters": dict(store.counters),
            "timers": {k: {"mean_s": t.mean, "count": t.count, "total_s": t.total_s}
                       for k, t in store.timers.items()},
            "info": dict(store.info),
        }

    def __repr__(self) -> str:
        return f"Metrics(counters={dict(self.counters)})"
