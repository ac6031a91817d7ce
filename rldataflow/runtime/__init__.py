"""Actor runtimes behind one small protocol: ``inline``, ``process`` (the default) and ``ray``.

Example::

    from rldataflow.runtime import get_runtime

    with get_runtime("process") as rt:
        actor = rt.create_actor(dict)
        actor.call("update", a=1).result()
        print(actor.call("get", "a").result())   # 1
"""

from __future__ import annotations

from typing import Any

from rldataflow.runtime.base import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    ActorDiedError,
    ActorHandle,
    Future,
    RemoteError,
    RemoteTraceback,
    Runtime,
)

RUNTIME_NAMES = ("inline", "process", "ray")


def get_runtime(name: str | Runtime = "process", **options: Any) -> Runtime:
    """Create a runtime by name: ``"inline"``, ``"process"`` (default) or ``"ray"``.

    Options go to the runtime's constructor (e.g. ``address=`` for ray, ``start_method=`` for
    process). A :class:`Runtime` instance is returned as it is.
    """
    if isinstance(name, Runtime):
        return name
    if name == "inline":
        from rldataflow.runtime.inline import InlineRuntime

        return InlineRuntime(**options)
    if name == "process":
        from rldataflow.runtime.process import ProcessRuntime

        return ProcessRuntime(**options)
    if name == "ray":
        from rldataflow.runtime.ray import RayRuntime  # imports ray only now

        return RayRuntime(**options)
    raise ValueError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIME_NAMES)}")


__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "ActorDiedError", "ActorHandle", "Future", "RemoteError",
    "RemoteTraceback", "Runtime", "RUNTIME_NAMES", "get_runtime",
]
