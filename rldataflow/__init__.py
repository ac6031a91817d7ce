"""rldataflow: distributed reinforcement learning as dataflow plans.

Example::

    import rldataflow

    with rldataflow.build("ppo", env="CartPole-v1", num_workers=2) as algo:
        while (result := algo.train())["episode_return_mean"] < 475:
            print(result["env_steps_sampled"], result["episode_return_mean"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rldataflow.trainer import Algorithm
    from rldataflow.training import StopConditions, Trainer, TrainingOutcome, run


def build(algo: str, config: Any = None, **overrides: Any) -> Algorithm:
    """Build an algorithm by name (see :func:`rldataflow.trainer.build`)."""
    from rldataflow.trainer import build as _build

    return _build(algo, config, **overrides)


_TRAINING_NAMES = ("StopConditions", "Trainer", "TrainingOutcome", "run")


def __getattr__(name: str) -> Any:
    # Keep `import rldataflow` light (no torch) until the Algorithm class is asked for.
    if name == "Algorithm":
        from rldataflow.trainer import Algorithm

        return Algorithm
    if name in _TRAINING_NAMES:
        from rldataflow import training

        return getattr(training, name)
    raise AttributeError(f"module 'rldataflow' has no attribute {name!r}")


__all__ = ["Algorithm", "StopConditions", "Trainer", "TrainingOutcome", "__version__", "build",
           "run"]
