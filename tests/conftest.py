"""Shared pytest fixtures. Each section belongs to one part of the package; add yours below."""

from __future__ import annotations

import pytest

# =============================================================================================
# runtime fixtures: `runtime` (inline / process / ray), `remote_runtime` (process / ray) and
# the session-wide `ray_runtime` (one local Ray instance for the whole test session).
# =============================================================================================
RUNTIME_PARAMS = [
    pytest.param("inline", id="inline"),
    pytest.param("process", id="process"),
    pytest.param("ray", id="ray", marks=pytest.mark.ray),
]
REMOTE_RUNTIME_PARAMS = RUNTIME_PARAMS[1:]


@pytest.fixture(scope="session")
def ray_runtime():
    """The one local Ray instance of the test session (started on first use, stopped at the end)."""
    pytest.importorskip("ray")
    from rldataflow.runtime.ray import RayRuntime

    rt = RayRuntime(num_cpus=2)
    yield rt
    rt.shutdown()


def _runtime_for(request: pytest.FixtureRequest, name: str):
    if name == "ray":
        request.getfixturevalue("ray_runtime")  # Ray is up; this runtime reuses it
    from rldataflow.runtime import get_runtime

    # per test: shutting it down kills only the actors the test created (Ray stays up)
    rt = get_runtime(name)
    yield rt
    rt.shutdown()


@pytest.fixture(params=RUNTIME_PARAMS)
def runtime(request):
    """A fresh runtime of each kind, shut down after the test."""
    yield from _runtime_for(request, request.param)


@pytest.fixture(params=REMOTE_RUNTIME_PARAMS)
def remote_runtime(request):
    """A fresh runtime whose actors live in other processes (process, ray)."""
    yield from _runtime_for(request, request.param)
# ======================================= end of runtime fixtures =============================


# =============================================================================================
# start-up speed: one forkserver for the session that has imported the rollout worker's module
# (torch, gymnasium) once, so process-runtime actors start in milliseconds in every test.
# =============================================================================================
@pytest.fixture(scope="session", autouse=True)
def _warm_forkserver():
    from rldataflow.startup import make_runtime

    make_runtime("process").shutdown()
    yield


# =============================================================================================
# flow tests: `driver_cpu`, a meter of the CPU the driver spends waiting in a plan (property 3)
# =============================================================================================
class DriverCpuMeter:
    """Times a ``with`` block: wall seconds, CPU seconds of the whole driver process, and CPU
    seconds of the threads a plan runs in (the main thread and rldataflow's own threads).

    The plan figure leaves out threads that are not the plan's, e.g. Ray's background threads,
    which after an earlier test's actors were killed may still be busy in this process.
    """

    def _threads(self) -> dict[int, float]:
        import threading

        import psutil

        ids = {threading.main_thread().native_id}
        ids.update(t.native_id for t in threading.enumerate() if t.name.startswith("rldataflow"))
        return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()
                if t.id in ids}

    def __enter__(self) -> DriverCpuMeter:
        import time

        self._threads0 = self._threads()
        self._process0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self.wall = time.perf_counter() - self._wall0
        self.process_cpu = time.process_time() - self._process0
        end = self._threads()
        self.plan_cpu = sum(t - self._threads0.get(i, 0.0) for i, t in end.items())

    @property
    def plan_share(self) -> float:
        return self.plan_cpu / self.wall

    def __str__(self) -> str:
        return (f"plan threads used {self.plan_cpu:.3f} CPU s, the whole process "
                f"{self.process_cpu:.3f} CPU s, in {self.wall:.2f} s")


@pytest.fixture
def driver_cpu() -> DriverCpuMeter:
    """``with driver_cpu as m: ...`` then ``m.plan_share`` (CPU s per wall s of the plan)."""
    return DriverCpuMeter()
# ======================================= end of flow test fixtures ===========================


# ======================================= shared assertions ===================================
def _assert_same_state(a, b, where: str = "state") -> None:
    """Nested dicts/lists/tuples of tensors, arrays and scalars are equal, exactly."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture
def assert_same_state():
    """``assert_same_state(saved, restored)``: checkpointed state came back exactly."""
    return _assert_same_state
