"""rldataflow: distributed reinforcement learning as dataflow plans."""

__version__ = "0.1.0"
