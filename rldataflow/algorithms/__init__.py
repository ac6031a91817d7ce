"""The algorithms: one file each, registered by name (see :mod:`rldataflow.algorithms.registry`).

Nothing here imports an algorithm module: ``get_algorithm("ppo")`` imports it when asked for.
"""

from rldataflow.algorithms.base import AlgorithmBuilder, default_workers
from rldataflow.algorithms.registry import algorithm_names, get_algorithm, register_algorithm

__all__ = ["AlgorithmBuilder", "algorithm_names", "default_workers", "get_algorithm",
           "register_algorithm"]
