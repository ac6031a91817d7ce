"""Hyperparameter sweeps (``rldataflow tune``): embedded with Optuna, or on Ray Tune.

See ``docs/tune.md``. Optuna and Ray Tune are optional: ``pip install "rldataflow[tune]"``.
"""

from rldataflow.sweeps.runner import Sweep, metric_of
from rldataflow.sweeps.spec import (
    Distribution,
    SweepSpec,
    parse_grid_args,
    parse_sweep,
    split_sweep_file,
)
from rldataflow.sweeps.summary import TrialRecord

__all__ = ["Distribution", "Sweep", "SweepSpec", "TrialRecord", "metric_of", "parse_grid_args",
           "parse_sweep", "split_sweep_file"]
