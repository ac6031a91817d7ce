"""Errors of the dataflow layer, and where operators were created (their provenance)."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Frames inside these directories are library internals; a creation site is the first frame
# outside them, i.e. the user's plan (or an algorithm file, which is a plan too).
_INTERNAL_DIRS = tuple(os.path.join(_PACKAGE_DIR, d) + os.sep for d in ("flow", "ops", "runtime",
                                                                        "workers"))


def creation_site(extra_internal: tuple[str, ...] = ()) -> str:
    """``file:line`` of the first stack frame outside the library's plumbing."""
    frame = sys._getframe(1)
    internal = _INTERNAL_DIRS + extra_internal
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(internal) and "<frozen" not in filename:
            return f"{_short_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


class FlowError(RuntimeError):
    """A plan was wired or used in a way that cannot work (e.g. one iterator read twice)."""


class OperatorError(RuntimeError):
    """An exception raised inside an operator, named by the operator, its plan line and shard.

    The original exception is chained as ``__cause__`` (for a remote shard, together with the
    actor-side traceback), so the traceback a user sees ends with *their* function, and the
    message says which box of the plan failed.
    """

    def __init__(self, operator: str, site: str, shard: str | None, cause: str) -> None:
        self.operator = operator
        self.site = site
        self.shard = shard
        self.cause_text = cause
        where = f" on shard {shard}" if shard else ""
        super().__init__(f"operator {operator} (created at {site}){where} failed: {cause}")

    def __reduce__(self):
        return (OperatorError, (self.operator, self.site, self.shard, self.cause_text))


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
