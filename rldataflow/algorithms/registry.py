"""The names ``build(name)`` and ``rldataflow train NAME`` accept, and where they come from.

Three sources, looked up in this order:

1. classes registered with the :func:`register_algorithm` decorator (in an imported module);
2. the built-in algorithms, each imported only when it is first asked for;
3. installed packages declaring an entry point in the group ``rldataflow.algorithms``
   (``name = "package.module:ClassName"`` or just ``"package.module"`` whose import
   registers the class). Example, in a plugin's ``pyproject.toml``::

       [project.entry-points."rldataflow.algorithms"]
       my_pg = "my_package.my_pg:MyPG"
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import TypeVar

from rldataflow.algorithms.base import AlgorithmBuilder
from rldataflow.utils.config import ConfigError

ENTRY_POINT_GROUP = "rldataflow.algorithms"

#: built-in algorithm name -> the module that registers it
BUILTIN: dict[str, str] = {
    "pg": "rldataflow.algorithms.pg",
    "a2c": "rldataflow.algorithms.a2c",
    "a3c": "rldataflow.algorithms.a3c",
    "ppo": "rldataflow.algorithms.ppo",
    "ddppo": "rldataflow.algorithms.ddppo",
    "dqn": "rldataflow.algorithms.dqn",
    "apex": "rldataflow.algorithms.apex",
    "r2d2": "rldataflow.algorithms.r2d2",
    "apex_ddpg": "rldataflow.algorithms.apex_ddpg",
    "impala": "rldataflow.algorithms.impala",
    "appo": "rldataflow.algorithms.appo",
    "sac": "rldataflow.algorithms.sac",
    "ddpg": "rldataflow.algorithms.ddpg",
    "td3": "rldataflow.algorithms.td3",
    "qmix": "rldataflow.algorithms.qmix",
    "maddpg": "rldataflow.algorithms.maddpg",
    "composite": "rldataflow.algorithms.composite",
    "es": "rldataflow.algorithms.es",
    "ars": "rldataflow.algorithms.ars",
    "marwil": "rldataflow.algorithms.marwil",
    "bc": "rldataflow.algorithms.marwil",
    "maml": "rldataflow.algorithms.maml",
    "cql": "rldataflow.algorithms.cql",
    "cql_dqn": "rldataflow.algorithms.cql",
}

_REGISTERED: dict[str, type[AlgorithmBuilder]] = {}
#: names registered as a module path (``register_module``): imported on first use
_MODULES: dict[str, str] = {}

B = TypeVar("B", bound=type[AlgorithmBuilder])


def register_algorithm(name: str) -> Callable[[B], B]:
    """Class decorator: make ``build(name)`` use this :class:`AlgorithmBuilder`. Example::

        @register_algorithm("my_pg")
        class MyPG(AlgorithmBuilder):
            Config = MyPGConfig
            ...
    """
    key = name.lower()

    def decorate(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, AlgorithmBuilder)):
            raise TypeError(f"register_algorithm({name!r}) decorates an AlgorithmBuilder "
                            f"subclass, not {cls!r}")
        cls.name = key
        _REGISTERED[key] = cls
        return cls

    return decorate


def register_module(name: str, module: str) -> None:
    """Make ``name`` refer to the algorithm registered by importing ``module`` (lazily)."""
    _MODULES[name.lower()] = module


def _entry_points() -> dict[str, metadata.EntryPoint]:
    try:
        return {ep.name.lower(): ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - a broken installed package must not break built-ins
        return {}


def algorithm_names() -> list[str]:
    """Every name that can be built (registered, built-in and from entry points), sorted."""
    return sorted(set(_REGISTERED) | set(BUILTIN) | set(_MODULES) | set(_entry_points()))


def get_algorithm(name: str) -> AlgorithmBuilder:
    """The builder of algorithm ``name``; a :class:`ConfigError` with a hint if unknown."""
    key = str(name).lower()
    if key not in _REGISTERED:
        module = _MODULES.get(key) or BUILTIN.get(key)
        if module is not None:
            importlib.import_module(module)
        else:
            ep = _entry_points().get(key)
            if ep is not None:
                loaded = ep.load()
                if isinstance(loaded, type) and issubclass(loaded, AlgorithmBuilder):
                    register_algorithm(key)(loaded)
    if key not in _REGISTERED:
        names = algorithm_names()
        hint = difflib.get_close_matches(key, names, n=1)
        where = (f" (module {_MODULES.get(key) or BUILTIN.get(key)} registered none under "
                 "that name)" if key in _MODULES or key in BUILTIN else "")
        raise ConfigError(f"unknown algorithm {name!r}{where}; choose one of "
                          f"{', '.join(names)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return _REGISTERED[key]()


def module_of(builder: AlgorithmBuilder) -> ModuleType:
    """The module an algorithm is defined in (its docstring is the algorithm's help)."""
    return sys.modules[type(builder).__module__]
