"""Starting an algorithm's runtime quickly (a light module: no torch import here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rldataflow.runtime import Runtime, get_runtime

#: The module a process runtime's forkserver imports once for all rollout workers.
WORKER_MODULE = "rldataflow.workers.rollout_worker"


def make_runtime(name: str, options: Mapping[str, Any] | None = None) -> Runtime:
    """The runtime an algorithm runs on. For ``process``, the forkserver preloads the rollout
    worker's module (torch, gymnasium) once and starts in the background right away, so worker
    processes start in milliseconds instead of each importing torch."""
    opts = dict(options or {})
    if name == "process":
        opts.setdefault("preload", (WORKER_MODULE,))
        opts.setdefault("warm_up", True)
    return get_runtime(name, **opts)
