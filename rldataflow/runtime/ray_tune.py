"""Trials on a Ray cluster with Ray Tune (``rldataflow tune ... --runtime ray``).

The layer above hands over a picklable ``trial_fn(params, trial_name, report)`` that trains one
trial and calls ``report(metrics, checkpoint_dir_or_None)`` once per iteration; this module turns
the sweep into a Tune search space (``grid`` -> ``tune.grid_search``, ``search`` kinds ->
``tune.uniform/loguniform/randint/choice``), runs the trials in parallel on the cluster as a
function trainable (each reported checkpoint directory becomes a Tune ``Checkpoint``), and
returns one plain dict per trial. Like ``runtime/ray.py`` it is only imported when Ray is
chosen; nothing else in the package imports Ray Tune.

Example::

    results = run_trials(fn, grid={"lr": [1e-3, 3e-4]}, search={}, num_samples=1,
                         metric="episode_return_mean", mode="max", storage_path="/tmp/s",
                         name="ray_tune")
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

try:
    import ray
    from ray import tune
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError('sweeps on Ray need Ray Tune: pip install "rldataflow[tune]"') from None

__all__ = ["run_trials"]

TrialFn = Callable[[dict[str, Any], str, Callable[[dict[str, Any], "str | None"], None]], None]


def _trainable(config: dict[str, Any], trial_fn: TrialFn) -> None:
    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = (tune.Checkpoint.from_directory(checkpoint_dir)
                      if checkpoint_dir is not None else None)
        tune.report(metrics, checkpoint=checkpoint)

    trial_fn(dict(config), tune.get_context().get_trial_id(), report)


def _space(kind: str, args: tuple[Any, ...]) -> Any:
    if kind == "uniform":
        return tune.uniform(args[0], args[1])
    if kind == "loguniform":
        return tune.loguniform(args[0], args[1])
    if kind == "randint":
        return tune.randint(args[0], args[1] + 1)  # Tune's upper end is exclusive; ours is not
    if kind == "choice":
        return tune.choice(list(args))
    raise ValueError(f"unknown search kind {kind!r}")


def run_trials(trial_fn: TrialFn, *, grid: Mapping[str, list[Any]],
               search: Mapping[str, tuple[str, tuple[Any, ...]]], num_samples: int, metric: str,
               mode: str, storage_path: str, name: str, prune: bool = True,
               address: str | None = None, cpus_per_trial: float = 1.0,
               stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Run the trials with Ray Tune; one dict per trial: ``name`` (the Tune trial id, which
    ``trial_fn`` gets as ``trial_name``), ``config``, ``history`` (the
    metric per iteration), ``status``, ``error`` (one line or None), ``path``.

    ``address``: as for :class:`~rldataflow.runtime.ray.RayRuntime` (None starts a local Ray
    instance unless one is running; ``"auto"`` / ``"HOST:PORT"`` join a cluster).
    ``prune``: Tune's ``MedianStoppingRule`` on ``metric``. Trials ask ``cpus_per_trial`` CPUs
    (the rollout workers they start reserve none, see ``DEFAULT_ACTOR_OPTIONS``)."""
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False)
    try:
        from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule

        param_space: dict[str, Any] = {k: tune.grid_search(list(v)) for k, v in grid.items()}
        param_space.update({k: _space(kind, tuple(args)) for k, (kind, args) in search.items()})
        scheduler = (MedianStoppingRule(time_attr="training_iteration", grace_period=1)
                     if prune else FIFOScheduler())
        trainable = tune.with_resources(tune.with_parameters(_trainable, trial_fn=trial_fn),
                                        {"cpu": cpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples,
                                        scheduler=scheduler),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)))
        grid_results = tuner.fit()
        out = []
        for result in grid_results:
            df = result.metrics_dataframe
            history = (list(df[metric]) if df is not None and metric in df.columns else [])
            error = result.error
            out.append({
                "name": str((result.metrics or {}).get("trial_id", "")),
                "config": dict(result.config or {}),
                "history": [float(v) for v in history if v is not None
                            and not (isinstance(v, float) and math.isnan(v))],
                "status": "complete",
                "error": (" ".join(str(error).split())[:200] if error is not None else None),
                "path": result.path,
            })
        return out
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()
        if stream is not None:
            stream.flush()
        sys.stdout.flush()
