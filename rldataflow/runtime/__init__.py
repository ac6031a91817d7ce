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


def runtime_options_problem(name: str, options: dict[str, Any]) -> str | None:
    """What is wrong with creating runtime ``name`` with ``options``, without creating it (one
    line naming the option), or None. For ``rldataflow plan``, which starts nothing.

    Example::

        runtime_options_problem("ray", {"adress": "auto"})
        # "unknown ray runtime option 'adress' (did you mean 'address'?)"
    """
    import difflib
    import importlib.util
    import inspect

    if name not in RUNTIME_NAMES:
        return f"unknown runtime {name!r}: choose one of {', '.join(RUNTIME_NAMES)}"
    if name == "ray" and importlib.util.find_spec("ray") is None:
        return 'the ray runtime needs Ray: pip install "rldataflow[ray]"'
    if name == "inline":
        from rldataflow.runtime.inline import InlineRuntime as cls
    elif name == "process":
        from rldataflow.runtime.process import ProcessRuntime as cls
    else:
        from rldataflow.runtime.ray import RayRuntime as cls  # imports ray, starts nothing
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"
                and inspect.signature(cls.__init__).parameters[p].kind
                not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    if name == "ray":  # the rest go to ray.init
        import ray

        accepted += [p for p in inspect.signature(ray.init).parameters if p not in accepted
                     and p != "kwargs"]
    for key, value in options.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown {name} runtime option {key!r}{hint}"
        if name == "ray" and key == "placement" and value not in ("default", "spread"):
            return f"ray runtime option 'placement' must be 'default' or 'spread', got {value!r}"
    return None


__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "ActorDiedError", "ActorHandle", "Future", "RemoteError",
    "RemoteTraceback", "Runtime", "RUNTIME_NAMES", "get_runtime", "runtime_options_problem",
]
