"""Plain-text help for config dataclasses: each field's type, default and help text, taken from
``field(metadata={"help": ...})`` or else from the attribute docstring under the field (read with
:mod:`ast` from the class source).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

from rldataflow.utils.coercion import _default_of, _short_repr, _type_hints, _type_name
from rldataflow.utils.config_sources import qualified_name

__all__ = ["config_help"]


def config_help(cls: type) -> str:
    """A plain-text table of ``cls``'s fields: name, type, default and help text.

    Help comes from ``field(metadata={"help": ...})``, else from an attribute docstring
    (a string literal right after the field in the class body).

    Example::

        print(config_help(AlgorithmConfig))
        # name        type             default        help
        # env         str or callable  'CartPole-v1'  Gymnasium env id, or a callable ...
        # activation  tanh|relu|elu    'tanh'         activation function of the hidden layers
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_help needs a dataclass type, got {cls!r}")
    hints = _type_hints(cls)
    docs = _attribute_docstrings(cls)
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = _default_of(f)
        default_text = "(required)" if default is dataclasses.MISSING else _display(default)
        help_text = _field_help(cls, f.name) or docs.get(f.name, "")
        rows.append((f.name, _type_name(hints.get(f.name, Any)), default_text,
                     " ".join(str(help_text).split())))
    header = ("name", "type", "default", "help")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = []
    for r in [header, *rows]:
        cells = [r[i].ljust(widths[i]) for i in range(3)]
        lines.append("  ".join([*cells, r[3]]).rstrip())
    return "\n".join(lines)


def _field_help(cls: type, name: str) -> str:
    # A subclass that only changes a default (`lr: float = 5e-5`) keeps the base class's help.
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return str(f.metadata["help"])
    return ""


def _display(value: Any) -> str:
    if callable(value):
        return qualified_name(value)
    return _short_repr(value, limit=40)


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings of ``cls`` and its dataclass bases (nearest class wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs
