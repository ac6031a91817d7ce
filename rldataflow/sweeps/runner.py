"""Running a sweep: embedded with Optuna (the default) or on a Ray cluster with Ray Tune.

Embedded, trials run one after another in this process (each trial's rollout workers are
processes of one shared process runtime): a grid uses Optuna's ``GridSampler``, a search space
its ``TPESampler`` (grid combinations are then enqueued, so each one still gets ``samples``
trials), and a ``MedianPruner`` stops a trial whose metric, reported every iteration, is below
the median of earlier trials at the same iteration. Each trial is a normal run directory
(``trial_000/``: config.yaml, progress.csv, checkpoints) under the sweep directory, which also
gets ``sweep.json``.

On ``runtime: ray`` the trials are Ray Tune trials (``rldataflow/runtime/ray_tune.py``), run in
parallel on the cluster, their checkpoints reported through Tune; Tune's ``MedianStoppingRule``
plays the pruner's part.

Example::

    from rldataflow.sweeps import Sweep, parse_sweep
    from rldataflow.training import StopConditions

    sweep = Sweep("ppo", {"env": "CartPole-v1", "num_workers": 1},
                  parse_sweep(["lr=[1e-3,3e-4]"]), StopConditions(stop_iters=5), "sweeps/ppo")
    trials = sweep.run()
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rldataflow.sweeps.spec import SweepSpec, nested_overrides
from rldataflow.sweeps.summary import (
    TrialRecord,
    best_of,
    format_value,
    print_summary,
    write_summary,
)
from rldataflow.training import StopConditions, Trainer
from rldataflow.utils.coercion import ConfigError
from rldataflow.utils.config_sources import merge_overrides
from rldataflow.utils.logger import flatten_dict

__all__ = ["Sweep", "metric_of"]

log = logging.getLogger(__name__)


def metric_of(result: Mapping[str, Any], metric: str) -> float:
    """``result[metric]`` as a float (nested keys by ``a/b``), NaN if it is missing.

    ``episode_return_mean`` falls back to ``evaluation/episode_return_mean`` (offline
    algorithms sample no episodes), as the stop conditions do."""
    flat = flatten_dict(result)
    value = flat.get(metric)
    if metric == "episode_return_mean" and not _finite(value):
        value = flat.get("evaluation/episode_return_mean")
    return float(value) if _finite(value) else math.nan


def _finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _missing(package: str, extra: str) -> ConfigError:
    # a ConfigError, like a missing pyarrow for `output`: one line, before anything runs
    return ConfigError(f"rldataflow tune needs {package}: pip install \"rldataflow[{extra}]\"")


def _check_installed(backend: str) -> None:
    import importlib.util

    if backend == "ray":
        if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
            raise _missing("Ray Tune", "tune")
    elif importlib.util.find_spec("optuna") is None:
        raise _missing("Optuna", "tune")


@dataclass
class Sweep:
    """A sweep of ``algo`` over ``spec`` with the fixed config ``base``; see the module doc.

    ``wandb``: keyword arguments of :class:`~rldataflow.utils.wandb_logger.WandbLogger` (each
    trial is one W&B run, grouped by the sweep directory's name), or None.
    """

    algo: str
    base: dict[str, Any]
    spec: SweepSpec
    stop: StopConditions
    sweep_dir: Path
    checkpoint_every: int | None = None
    prune: bool = True
    wandb: dict[str, Any] | None = None
    address: str | None = None
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        self.sweep_dir = Path(self.sweep_dir)

    @property
    def backend(self) -> str:
        return "ray" if self.base.get("runtime") == "ray" else "optuna"

    def validate(self) -> None:
        """Every swept key and value against the algorithm's config (before anything runs)."""
        from rldataflow.algorithms.registry import get_algorithm
        from rldataflow.trainer import make_config

        make_config(self.algo, self.base, from_cli=True)
        self.spec.validate_against(get_algorithm(self.algo).Config, self.base)
        _check_installed(self.backend)

    def run(self) -> list[TrialRecord]:
        """Run every trial, print the summary table, write ``sweep.json``; the trials."""
        self.validate()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        trials = self._run_ray() if self.backend == "ray" else self._run_optuna()
        trials.sort(key=lambda t: t.number)
        write_summary(self.sweep_dir, trials, self.spec.metric, self.spec.mode, self.backend)
        print_summary(trials, self.spec.metric, self.spec.mode, self.stream, self.sweep_dir)
        return trials

    # -- one trial (both backends) ---------------------------------------------------------------
    def _config(self, params: Mapping[str, Any]):
        from rldataflow.trainer import make_config

        return make_config(self.algo, merge_overrides(self.base, nested_overrides(params)),
                           from_cli=True)

    def _loggers(self, run_dir: Path, config: Any) -> list[Any]:
        if self.wandb is None:
            return []
        from rldataflow.utils.wandb_logger import WandbLogger

        return [WandbLogger(run_dir, config.to_dict(), name=run_dir.name,
                            group=self.sweep_dir.name, **self.wandb)]

    # -- embedded: Optuna ----------------------------------------------------------------------
    def _run_optuna(self) -> list[TrialRecord]:
        try:
            import optuna
        except ImportError:
            raise _missing("Optuna", "tune") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = self.spec
        seed = int(self.base.get("seed", 0) or 0)
        grid = spec.effective_grid(seed)
        codec = {key: _Codec(values) for key, values in grid.items()}
        if spec.search:
            sampler: Any = optuna.samplers.TPESampler(seed=seed)
        else:
            sampler = optuna.samplers.GridSampler(
                {k: c.choices for k, c in codec.items()}, seed=seed)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
                  if self.prune else optuna.pruners.NopPruner())
        study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize",
                                    sampler=sampler, pruner=pruner)
        n_trials = spec.num_trials(seed)
        if spec.search:  # each grid combination gets `samples` TPE draws of the rest
            for point in spec.grid_points(seed):
                for _ in range(spec.num_samples):
                    study.enqueue_trial({k: codec[k].encode(v) for k, v in point.items()})
        trials: list[TrialRecord] = []
        runtime = self._shared_runtime()
        try:
            study.optimize(lambda t: self._optuna_trial(t, codec, runtime, trials, n_trials),
                           n_trials=n_trials, catch=(Exception,))
        finally:
            if runtime is not None:
                runtime.shutdown()
        return trials

    def _shared_runtime(self) -> Any:
        """One process runtime (one forkserver) for all trials, unless the runtime is swept."""
        swept = {k.split(".")[0] for k in self.spec.keys}
        if self.base.get("runtime", "process") != "process" or swept & {"runtime",
                                                                      "runtime_options"}:
            return None
        from rldataflow.startup import make_runtime

        return make_runtime("process", self.base.get("runtime_options"))

    def _optuna_trial(self, trial: Any, codec: dict[str, _Codec], runtime: Any,
                      trials: list[TrialRecord], n_trials: int) -> float:
        import optuna

        from rldataflow.trainer import Algorithm

        params = {k: c.decode(trial.suggest_categorical(k, c.choices)) for k, c in codec.items()}
        for key, dist in self.spec.search.items():
            params[key] = _suggest(trial, key, dist)
        run_dir = self.sweep_dir / f"trial_{trial.number:03d}"
        record = TrialRecord(trial.number, params, run_dir=str(run_dir))
        trials.append(record)
        start = time.perf_counter()
        pruned = False

        def on_result(trainer: Trainer, result: dict[str, Any]) -> None:
            nonlocal pruned
            value = metric_of(result, self.spec.metric)
            record.history.append(value)
            record.iterations += 1
            if math.isfinite(value):
                trial.report(value, step=trainer.algo.iteration)
                if trial.should_prune():
                    pruned = True
                    trainer.request_stop("pruned (below the median of earlier trials)")

        try:
            config = self._config(params)
            algo = Algorithm(self.algo, config, runtime=runtime,
                             owns_runtime=runtime is None)
            outcome = Trainer(algo, run_dir, self.stop, checkpoint_every=self.checkpoint_every,
                              progress=False, summary=False, stop_algorithm=True,
                              loggers=self._loggers(run_dir, config), on_result=on_result).run()
        except Exception as exc:
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"[:200]
            self._trial_line(record, n_trials, start)
            raise
        record.best = best_of(record.history, self.spec.mode)
        if pruned:
            record.status = "pruned"
        elif outcome.interrupted:
            record.status = "interrupted"
            trial.study.stop()  # a Ctrl-C ends the sweep after this trial's final checkpoint
        elif not math.isfinite(record.best):
            record.status = f"no {self.spec.metric}"
        self._trial_line(record, n_trials, start)
        if pruned:
            raise optuna.TrialPruned()
        return record.best

    def _trial_line(self, record: TrialRecord, n_trials: int, start: float) -> None:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in record.params.items())
        best = "n/a" if not math.isfinite(record.best) else f"{record.best:.4g}"
        print(f"trial {record.number} ({record.number + 1}/{n_trials}; {params}): "
              f"{record.status}, best "
              f"{self.spec.metric} {best} after {record.iterations} iterations "
              f"({time.perf_counter() - start:.1f}s)", file=self.stream, flush=True)

    # -- on a Ray cluster: Ray Tune --------------------------------------------------------------
    def _run_ray(self) -> list[TrialRecord]:
        try:
            from rldataflow.runtime import ray_tune
        except ImportError:
            raise _missing("Ray Tune", "tune") from None
        spec = self.spec
        seed = int(self.base.get("seed", 0) or 0)
        search = {k: (d.kind, d.args) for k, d in spec.search.items()}
        trial_dirs = self.sweep_dir / "trials"
        trial_dirs.mkdir(parents=True, exist_ok=True)
        fn = _TuneTrial(self.algo, self.base, self.stop, str(trial_dirs.resolve()),
                        self.checkpoint_every, self.wandb, self.sweep_dir.name, spec.metric)
        results = ray_tune.run_trials(
            fn, grid=spec.effective_grid(seed), search=search,
            num_samples=spec.num_samples if spec.search else 1, metric=spec.metric,
            mode=spec.mode, storage_path=str(self.sweep_dir.resolve()), name="ray_tune",
            prune=self.prune, address=self.address, stream=self.stream)
        trials = []
        for number, r in enumerate(results):
            history = [float(v) for v in r["history"]]
            trials.append(TrialRecord(
                number, {k: r["config"].get(k) for k in spec.keys if k in r["config"]},
                status="failed" if r["error"] else r["status"],
                best=best_of(history, spec.mode), iterations=len(history),
                run_dir=str(trial_dirs / r["name"]), error=r["error"] or "", history=history))
        return trials


class _Codec:
    """Optuna's categorical choices must be None/bool/int/float/str: others (a list of hidden
    sizes) travel as their JSON text."""

    def __init__(self, values: list[Any]) -> None:
        self.values = list(values)
        self.choices = [v if v is None or isinstance(v, (bool, int, float, str))
                        else "json:" + json.dumps(v) for v in self.values]

    def encode(self, value: Any) -> Any:
        return self.choices[self.values.index(value)]

    def decode(self, choice: Any) -> Any:
        return self.values[self.choices.index(choice)]


def _suggest(trial: Any, key: str, dist: Any) -> Any:
    low_high = dist.args
    if dist.kind == "uniform":
        return trial.suggest_float(key, low_high[0], low_high[1])
    if dist.kind == "loguniform":
        return trial.suggest_float(key, low_high[0], low_high[1], log=True)
    if dist.kind == "randint":
        return trial.suggest_int(key, low_high[0], low_high[1])
    codec = _Codec(list(dist.args))
    return codec.decode(trial.suggest_categorical(key, codec.choices))


class _TuneTrial:
    """One Ray Tune trial: build the algorithm on the cluster, train it until the stop
    conditions, write its run directory, report every result (and the checkpoints) to Tune.

    A plain picklable object, so that the runtime module (which imports Ray) needs nothing of
    the layers above it."""

    def __init__(self, algo: str, base: dict[str, Any], stop: StopConditions, trial_dirs: str,
                 checkpoint_every: int | None, wandb: dict[str, Any] | None, group: str,
                 metric: str) -> None:
        self.algo, self.base, self.stop = algo, base, stop
        self.trial_dirs, self.checkpoint_every = trial_dirs, checkpoint_every
        self.wandb, self.group, self.metric = wandb, group, metric

    def __call__(self, params: dict[str, Any], trial_name: str,
                 report: Callable[[dict[str, Any], str | None], None]) -> None:
        from rldataflow.trainer import Algorithm, make_config
        from rldataflow.utils.checkpoint import checkpoint_path
        from rldataflow.utils.logger import RunLogger

        config = make_config(self.algo, merge_overrides(self.base, nested_overrides(params)),
                             from_cli=True)
        run_dir = Path(self.trial_dirs) / trial_name
        every = config.checkpoint_every if self.checkpoint_every is None \
            else self.checkpoint_every
        loggers: list[Any] = []
        if self.wandb is not None:
            from rldataflow.utils.wandb_logger import WandbLogger

            loggers.append(WandbLogger(run_dir, config.to_dict(), name=trial_name,
                                       group=self.group, **self.wandb))
        logger = RunLogger(run_dir, config.to_dict())
        start = time.perf_counter()
        try:
            with Algorithm(self.algo, config) as algo:
                while True:
                    result = algo.train()
                    result["time_since_start_s"] = time.perf_counter() - start
                    logger.log(result)
                    for extra in loggers:
                        extra.log(result)
                    done = self.stop.reason(result, algo.iteration, time.perf_counter() - start)
                    checkpoint = None
                    if done or (every and algo.iteration % every == 0):
                        checkpoint = str(algo.save(checkpoint_path(run_dir, algo.iteration)))
                    metrics = {k: v for k, v in flatten_dict(result).items() if _finite(v)}
                    metrics.setdefault(self.metric, metric_of(result, self.metric))
                    report(metrics, checkpoint)
                    if done:
                        return
        finally:
            logger.close()
            for extra in loggers:
                extra.close()
