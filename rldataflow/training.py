"""The training loop behind ``rldataflow train``, usable from Python: train an Algorithm until a
stop condition, logging every result to a run directory, checkpointing on a cadence and at the
end, and turning a first Ctrl-C into a clean finish (a second one aborts).

Example::

    from rldataflow import build
    from rldataflow.training import StopConditions, run

    with build("ppo", env="CartPole-v1") as algo:
        outcome = run(algo, "runs/ppo", StopConditions(stop_return=450), progress=False)
    print(outcome.reason, outcome.checkpoint)
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rldataflow.utils.checkpoint import (
    BEST_CHECKPOINT,
    CheckpointError,
    best_checkpoint,
    checkpoint_path,
    read_metadata,
)
from rldataflow.utils.logger import RunLogger
from rldataflow.utils.progress import ProgressDisplay

if TYPE_CHECKING:
    from rldataflow.trainer import Algorithm

__all__ = ["ResultLogger", "StopConditions", "Trainer", "TrainingOutcome", "best_metric", "run"]

#: ``TrainingOutcome.reason`` after a Ctrl-C
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass(frozen=True)
class StopConditions:
    """When to stop; the first condition met wins, and none given means run until Ctrl-C.

    ``stop_return``: episode_return_mean reached (``evaluation/episode_return_mean`` for
    offline algorithms, which sample no episodes); ``stop_steps``: env steps sampled (in total,
    so a resumed run counts the earlier steps); ``stop_time``: seconds since this run started;
    ``stop_iters``: iterations done in this run.

    Example::

        StopConditions(stop_return=475, stop_time=600)
    """

    stop_return: float | None = None
    stop_steps: int | None = None
    stop_time: float | None = None
    stop_iters: int | None = None

    @property
    def empty(self) -> bool:
        """No condition given."""
        return all(v is None for v in (self.stop_return, self.stop_steps, self.stop_time,
                                       self.stop_iters))

    def progress_targets(self) -> dict[str, float]:
        """The conditions a :class:`~rldataflow.utils.progress.ProgressDisplay` shows."""
        return {k: v for k, v in (("stop_return", self.stop_return),
                                  ("stop_steps", self.stop_steps),
                                  ("stop_time", self.stop_time)) if v is not None}

    def reason(self, result: dict[str, Any], iters_done: int, elapsed: float) -> str | None:
        """Why to stop after ``result`` (a line for the user), or None to go on."""
        ret = result.get("episode_return_mean", math.nan)
        if math.isnan(ret):  # offline algorithms sample no episodes; they evaluate
            ret = result.get("evaluation/episode_return_mean", math.nan)
        if self.stop_return is not None and not math.isnan(ret) and ret >= self.stop_return:
            return f"reached return {ret:.1f} >= {self.stop_return:g}"
        if (self.stop_steps is not None
                and result.get("env_steps_sampled", 0) >= self.stop_steps):
            return f"reached {self.stop_steps:,} env steps"
        if self.stop_time is not None and elapsed >= self.stop_time:
            return f"reached {self.stop_time:g}s"
        if self.stop_iters is not None and iters_done >= self.stop_iters:
            return f"reached {self.stop_iters} iterations"
        return None


@dataclass
class TrainingOutcome:
    """How a run ended.

    ``reason``: why it stopped (``"reached 3 iterations"``, ``"interrupted (Ctrl-C)"``, ...);
    ``result``: the last result (empty if no iteration finished); ``checkpoint``: the final
    checkpoint (None if no iteration finished); ``best_checkpoint``: the checkpoint of the best
    return so far (see :func:`best_metric`), None if no result had one; ``iterations``:
    iterations done in this run.
    """

    reason: str
    run_dir: Path
    result: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    interrupted: bool = False
    iterations: int = 0
    elapsed_s: float = 0.0


class ResultLogger(Protocol):
    """What :class:`Trainer` hands each result to besides the run directory's own logs
    (e.g. :class:`~rldataflow.utils.wandb_logger.WandbLogger`)."""

    def log(self, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
def best_metric(config: Any) -> str:
    """The result key the best checkpoint is chosen by: the evaluation return when the run
    evaluates (``evaluation_interval``), else the training return."""
    if getattr(config, "evaluation_interval", None) and getattr(
            config, "evaluation_num_episodes", 0):
        return "evaluation/episode_return_mean"
    return "episode_return_mean"


class _BestCheckpoint:
    """Keeps ``run_dir/best_checkpoint`` at the best value of ``metric`` seen so far.

    Each result whose value beats the best is saved there at once (the iteration's
    ``checkpoint_<n>`` may never be written: ``checkpoint_every`` decides those), atomically
    replacing the previous best. A resumed run starts from the recorded best value.
    """

    def __init__(self, run_dir: Path, metric: str, resume: bool) -> None:
        self.path = run_dir / BEST_CHECKPOINT
        self.metric = metric
        self.value = -math.inf
        existing = best_checkpoint(run_dir) if resume else None
        if existing is not None:
            try:
                best = read_metadata(existing).get("best", {})
            except CheckpointError:
                best = {}
            if best.get("metric") == metric and isinstance(best.get("value"), (int, float)):
                self.value = float(best["value"])
        self.saved: Path | None = existing if self.value > -math.inf else None
        self._pending: float | None = None
        self._next_save_at = 0.0

    #: at most this share of wall time goes to best-checkpoint saves: early in a run the return
    #: improves almost every iteration, and a save can cost a third of a fast iteration
    MAX_SAVE_SHARE = 0.05

    def update(self, algo: Algorithm, result: dict[str, Any], final: bool = False) -> None:
        """Save ``result``'s state as the best if it beats the best so far. Saves are spaced
        so they take at most :attr:`MAX_SAVE_SHARE` of the time; an improvement that falls in
        the gap is saved only if it is still the best at the end of the run (``final``)."""
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or math.isnan(value) or value <= self.value:
            return
        now = time.perf_counter()
        if not final and now < self._next_save_at:
            self._pending = float(value)
            return
        self.value = float(value)
        self._pending = None
        self.saved = algo.save(self.path, metadata={"best": {
            "metric": self.metric, "value": self.value, "iteration": algo.iteration}})
        cost = time.perf_counter() - now
        self._next_save_at = time.perf_counter() + cost / self.MAX_SAVE_SHARE

    def finish(self, algo: Algorithm, result: dict[str, Any]) -> None:
        """At the end of a run: save the last result if it is a best that was not saved."""
        if self._pending is not None and result.get(self.metric) == self._pending:
            self.update(algo, result, final=True)


class _StopRequested(BaseException):
    """Raised by the Ctrl-C handler inside train(); BaseException so no operator wraps it."""


class Trainer:
    """Runs ``algo.train()`` until a stop condition, writing the run directory as it goes.

    Each result (plus ``time_since_start_s``) goes to a :class:`RunLogger` in ``run_dir``;
    a checkpoint is saved every ``checkpoint_every`` iterations (None: the config's
    ``checkpoint_every``; 0: only the final one) and at the end if an iteration ran, also
    when the run ends by a second Ctrl-C. ``run_dir/best_checkpoint`` holds the checkpoint of
    the best return so far (:func:`best_metric`: the evaluation return when the run evaluates).
    A run that ends by an error writes no final
    checkpoint: the error may have struck mid-update, so the last good one stays the latest.
    ``resume=True`` appends to the run directory's logs. ``progress`` shows a
    :class:`ProgressDisplay` on ``stream`` (default ``sys.stdout``), and ``summary`` prints the
    closing lines (reason, checkpoint, run directory) there. ``stop_algorithm=True`` stops
    ``algo`` when the run ends, before the Ctrl-C handler is removed. ``loggers`` get every
    result too (and are closed at the end); ``on_result(trainer, result)`` is called after
    each result is logged, e.g. to :meth:`request_stop` a hyperparameter trial that is pruned.

    In the main thread (and with ``handle_sigint``), the first Ctrl-C ends the run cleanly with
    a final checkpoint, interrupting the ``train()`` in progress; a second raises
    ``KeyboardInterrupt``. From any thread, :meth:`request_stop` ends the run after the
    current iteration (``interrupted`` is then True too).

    Example::

        trainer = Trainer(algo, "runs/ppo", StopConditions(stop_iters=10), progress=False)
        outcome = trainer.run()
        assert outcome.iterations == 10
    """

    def __init__(self, algo: Algorithm, run_dir: str | os.PathLike[str],
                 stop: StopConditions | None = None, *, checkpoint_every: int | None = None,
                 resume: bool = False, progress: bool = True, summary: bool = True,
                 stream: TextIO | None = None, handle_sigint: bool = True,
                 stop_algorithm: bool = False, loggers: Sequence[ResultLogger] = (),
                 on_result: Callable[[Trainer, dict[str, Any]], None] | None = None) -> None:
        self.algo = algo
        self.run_dir = Path(run_dir)
        self.stop = stop if stop is not None else StopConditions()
        self.checkpoint_every = (algo.config.checkpoint_every if checkpoint_every is None
                                 else checkpoint_every)
        self.resume = resume
        self.progress = progress
        self.summary = summary
        self.stream = stream
        self.handle_sigint = handle_sigint
        self.stop_algorithm = stop_algorithm
        self.loggers = list(loggers)
        self.on_result = on_result
        self._stop_requested = threading.Event()
        self._stop_request_reason = "stop requested"

    def request_stop(self, reason: str = "stop requested") -> None:
        """End the run after the current iteration, with ``reason`` (safe from any thread)."""
        self._stop_request_reason = reason
        self._stop_requested.set()

    def run(self) -> TrainingOutcome:
        """Train until a stop condition; see the class docstring."""
        algo, stop = self.algo, self.stop
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            logger = RunLogger(self.run_dir, algo.config.to_dict(), resume=self.resume)
        except BaseException:
            if self.stop_algorithm:
                algo.stop()
            raise
        display = ProgressDisplay(stop.progress_targets(), stream=stream) if self.progress else None
        start = time.perf_counter()
        start_iteration = algo.iteration
        outcome = TrainingOutcome(reason="stopped", run_dir=self.run_dir)
        sigint = _SigintHandler(self) if self._can_handle_sigint() else None
        previous = signal.signal(signal.SIGINT, sigint) if sigint else None
        result: dict[str, Any] = {}
        failed = False
        best = _BestCheckpoint(self.run_dir, best_metric(algo.config), self.resume)
        try:
            while True:
                if self._stop_requested.is_set():
                    outcome.reason, outcome.interrupted = self._stop_request_reason, True
                    break
                try:
                    if sigint:
                        sigint.in_train = True
                    result = algo.train()
                except _StopRequested:
                    outcome.reason, outcome.interrupted = INTERRUPTED, True
                    break
                finally:
                    if sigint:
                        sigint.in_train = False
                result["time_since_start_s"] = time.perf_counter() - start
                logger.log(result)
                for extra in self.loggers:
                    extra.log(result)
                if display:
                    display.update(result)
                if self.on_result is not None:
                    self.on_result(self, result)
                best.update(algo, result)
                done = stop.reason(result, algo.iteration - start_iteration,
                                   time.perf_counter() - start)
                if done:
                    outcome.reason = done
                    break
                if self.checkpoint_every and algo.iteration % self.checkpoint_every == 0:
                    algo.save(checkpoint_path(self.run_dir, algo.iteration))
        except BaseException as e:
            # A failure mid-iteration (the learner thread raised, a worker could not be
            # replaced) may leave half-updated weights: no final checkpoint then, so the run
            # dir keeps its last good one.
            failed = not isinstance(e, KeyboardInterrupt)
            raise
        finally:
            if sigint:
                # The final checkpoint and the shutdown must not be cut short.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                if display:
                    display.close()
                if algo.iteration > start_iteration and not failed:
                    outcome.checkpoint = algo.save(checkpoint_path(self.run_dir, algo.iteration))
                    best.finish(algo, result)
                    if self.summary:
                        self._print_summary(stream, outcome, result, start, best)
                logger.close()
                for extra in self.loggers:
                    extra.close()
            finally:
                try:
                    if self.stop_algorithm:
                        algo.stop()
                finally:
                    if sigint:
                        signal.signal(signal.SIGINT, previous)
        outcome.result = result
        outcome.best_checkpoint = best.saved
        outcome.iterations = algo.iteration - start_iteration
        outcome.elapsed_s = time.perf_counter() - start
        return outcome

    def _can_handle_sigint(self) -> bool:
        # signal.signal only works in the main thread; elsewhere Ctrl-C is the main thread's.
        return self.handle_sigint and threading.current_thread() is threading.main_thread()

    def _print_summary(self, stream: TextIO, outcome: TrainingOutcome, result: dict[str, Any],
                       start: float, best: _BestCheckpoint) -> None:
        print(f"{outcome.reason}: iteration {self.algo.iteration}, "
              f"{int(result.get('env_steps_sampled', 0)):,} env steps, "
              f"return {_fmt(result.get('episode_return_mean'))}, "
              f"{time.perf_counter() - start:.1f}s", file=stream)
        print(f"checkpoint: {outcome.checkpoint}", file=stream)
        if best.saved is not None:
            print(f"best checkpoint: {best.saved} ({best.metric} {best.value:.1f})", file=stream)
        print(f"run directory: {self.run_dir}", file=stream)


class _SigintHandler:
    """First Ctrl-C: stop (interrupting a train() in progress). Second: KeyboardInterrupt."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.count = 0
        self.in_train = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.trainer.request_stop(INTERRUPTED)
        if self.in_train:
            raise _StopRequested()  # otherwise the loop sees the request and stops


def run(algo: Algorithm, run_dir: str | os.PathLike[str], stop: StopConditions | None = None,
        **options: Any) -> TrainingOutcome:
    """Train ``algo`` until ``stop`` with a :class:`Trainer` (``options`` are its keywords).

    Example::

        with build("pg", env="CartPole-v1", runtime="inline", num_workers=0) as algo:
            outcome = run(algo, "runs/pg", StopConditions(stop_iters=5), progress=False)
        print(outcome.checkpoint)   # runs/pg/checkpoint_000005
    """
    return Trainer(algo, run_dir, stop, **options).run()


def _fmt(value: Any) -> str:
    try:
        return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"
    except TypeError:
        return str(value)
