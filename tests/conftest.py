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
