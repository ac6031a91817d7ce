"""Live training progress: a rich live table on a terminal, plain throttled lines otherwise.

On a terminal the display redraws in place (``rich.live.Live``) with bars toward the stop
conditions. When the stream is not a terminal (CI logs, pipes, files) it prints one plain line
per update, at most one per ``min_interval_s`` seconds, and always the last one on ``close()``::

    iter 12  return 187.3  steps 24,576  1,930 steps/s  12.7s

With stop conditions the targets and progress are shown too::

    iter 12  return 187.3/475.0  steps 24,576/100,000 (25%)  1,930 steps/s  12.7s/60s (21%)

Example::

    with ProgressDisplay({"stop_steps": 100_000}) as progress:
        while True:
            result = algo.train()
            progress.update(result)
            if result["env_steps_sampled"] >= 100_000:
                break
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["ProgressDisplay"]

# Result keys looked up for each shown quantity, first match wins; nested results are searched
# by the last path component too (e.g. "counters" -> "env_steps_sampled").
ITERATION_KEYS = ("training_iteration", "iteration")
RETURN_KEYS = ("episode_return_mean", "episode_reward_mean")
STEPS_KEYS = ("env_steps_sampled", "num_env_steps_sampled", "timesteps_total")
TIME_KEYS = ("time_total_s",)
STOP_KEYS = ("stop_return", "stop_steps", "stop_time")
EVALUATION_KEY = "evaluation/episode_return_mean"


class ProgressDisplay:
    """Show iteration, mean return, env steps, throughput and time, and progress toward stops.

    ``stop_conditions`` may hold ``stop_return`` (target mean return), ``stop_steps`` (env steps)
    and ``stop_time`` (seconds); ``None`` values and other keys are ignored. ``live`` forces the
    rich live display on (True) or off (False); by default it is on iff ``stream.isatty()``.
    Missing or non-numeric result values show as ``n/a``, never raise.

    Example::

        display = ProgressDisplay({"stop_return": 475.0}, stream=sys.stdout)
        display.update({"training_iteration": 1, "episode_return_mean": float("nan"),
                        "env_steps_sampled": 2048, "time_total_s": 1.1})
        display.close()
    """

    def __init__(self, stop_conditions: Mapping[str, Any] | None = None,
                 stream: TextIO | None = None, *, min_interval_s: float = 1.0,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.stops = {k: float(v) for k, v in (stop_conditions or {}).items()
                      if k in STOP_KEYS and _num(v) is not None}
        self.min_interval_s = min_interval_s
        self._clock = clock
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            try:
                live = bool(isatty()) if callable(isatty) else False
            except (ValueError, OSError):  # closed stream
                live = False
        self.live_mode = live
        self._live: Any = None
        self._closed = False
        self._last: dict[str, float | None] | None = None
        self._pending: dict[str, float | None] | None = None  # shown on close if not yet printed
        self._last_print: float | None = None
        self._prev_steps: float | None = None
        self._prev_time: float | None = None
        self._prev_clock: float | None = None
        # the latest evaluation return, shown until the next evaluation replaces it
        self._last_eval: float | None = None

    # -- public ----------------------------------------------------------------------------

    def update(self, result: Mapping[str, Any], *, final: bool = False) -> None:
        """Show ``result``. In plain mode, print it unless a line was printed less than
        ``min_interval_s`` ago (``final=True`` always prints).

        Example::

            display.update({"training_iteration": 3, "env_steps_sampled": 6144,
                            "episode_return_mean": 35.2, "time_total_s": 3.4})
        """
        if self._closed:
            return
        stats = self._extract(result)
        self._last = stats
        if self.live_mode:
            self._update_live(stats)
            return
        now = self._clock()
        due = self._last_print is None or now - self._last_print >= self.min_interval_s
        if final or due:
            self._print_line(stats)
            self._last_print = now
            self._pending = None
        else:
            self._pending = stats

    def close(self) -> None:
        """Print the last unprinted update (plain mode) or stop the live display; idempotent.

        Example::

            display.close()
        """
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self._pending is not None:
            self._print_line(self._pending)
            self._pending = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def format_line(self, stats: Mapping[str, float | None] | None = None) -> str:
        """The plain one-line form of the latest update (or of ``stats``).

        Example::

            display.format_line()   # 'iter 12  return 187.3  steps 24,576  1,930 steps/s  12.7s'
        """
        s = stats if stats is not None else (self._last or {})
        parts = [f"iter {_fmt_int(s.get('iteration'))}"]

        ret = f"return {_fmt_float(s.get('return'), 1)}"
        if "stop_return" in self.stops:
            ret += f"/{_fmt_float(self.stops['stop_return'], 1)}"
        parts.append(ret)
        if s.get("evaluation") is not None:
            parts.append(f"eval {_fmt_float(s.get('evaluation'), 1)}")

        steps = f"steps {_fmt_int(s.get('steps'))}"
        if "stop_steps" in self.stops:
            steps += f"/{_fmt_int(self.stops['stop_steps'])}"
            steps += _pct(s.get("steps"), self.stops["stop_steps"])
        parts.append(steps)

        parts.append(f"{_fmt_int(s.get('throughput'))} steps/s")

        t = f"{_fmt_float(s.get('time'), 1)}s"
        if "stop_time" in self.stops:
            t += f"/{_fmt_float(self.stops['stop_time'], 0)}s"
            t += _pct(s.get("time"), self.stops["stop_time"])
        parts.append(t)
        return "  ".join(parts)

    # -- internals -------------------------------------------------------------------------

    def _extract(self, result: Mapping[str, Any]) -> dict[str, float | None]:
        flat = _flatten(result)
        iteration = _lookup(flat, ITERATION_KEYS)
        ret = _lookup(flat, RETURN_KEYS)
        steps = _lookup(flat, STEPS_KEYS)
        total_time = _lookup(flat, TIME_KEYS)
        evaluation = _num(flat.get(EVALUATION_KEY))
        if evaluation is not None:
            self._last_eval = evaluation
        now = self._clock()

        # Throughput over the last interval (not since start, which hides slow-downs): steps
        # delta over the result's own time delta, or wall-clock delta if it has no time.
        throughput = None
        if steps is not None:
            if self._prev_steps is None:
                if total_time:
                    throughput = steps / total_time
            else:
                if total_time is not None and self._prev_time is not None:
                    dt = total_time - self._prev_time
                else:
                    dt = now - (self._prev_clock or now)
                if dt > 0:
                    throughput = (steps - self._prev_steps) / dt
            self._prev_steps = steps
            self._prev_time = total_time
            self._prev_clock = now
        return {"iteration": iteration, "return": ret, "steps": steps,
                "throughput": throughput, "time": total_time, "evaluation": self._last_eval}

    def _print_line(self, stats: Mapping[str, float | None]) -> None:
        try:
            self.stream.write(self.format_line(stats) + "\n")
            self.stream.flush()
        except (ValueError, OSError):  # closed pipe: progress is not worth crashing a run
            pass

    def _update_live(self, stats: Mapping[str, float | None]) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, force_terminal=True)
            self._live = Live(self._render(stats), console=console, refresh_per_second=4,
                              transient=False)
            self._live.start(refresh=True)
        else:
            self._live.update(self._render(stats), refresh=True)

    def _render(self, stats: Mapping[str, float | None]) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title="rldataflow training", show_header=False, box=None, padding=(0, 2))
        table.add_column("metric", style="bold cyan")
        table.add_column("value", justify="right")
        table.add_column("progress", width=32)

        def bar(value: float | None, target: str) -> Any:
            if target not in self.stops:
                return ""
            total = self.stops[target]
            done = 0.0 if value is None else max(0.0, min(value, total))
            return ProgressBar(total=max(total, 1e-9), completed=done, width=30)

        ret_text = _fmt_float(stats.get("return"), 1)
        if "stop_return" in self.stops:
            ret_text += f" / {_fmt_float(self.stops['stop_return'], 1)}"
        steps_text = _fmt_int(stats.get("steps"))
        if "stop_steps" in self.stops:
            steps_text += f" / {_fmt_int(self.stops['stop_steps'])}"
        time_text = f"{_fmt_float(stats.get('time'), 1)}s"
        if "stop_time" in self.stops:
            time_text += f" / {_fmt_float(self.stops['stop_time'], 0)}s"

        table.add_row("iteration", _fmt_int(stats.get("iteration")), "")
        table.add_row("return (mean)", ret_text, bar(stats.get("return"), "stop_return"))
        if stats.get("evaluation") is not None:
            table.add_row("evaluation return", _fmt_float(stats.get("evaluation"), 1), "")
        table.add_row("env steps", steps_text, bar(stats.get("steps"), "stop_steps"))
        table.add_row("throughput", f"{_fmt_int(stats.get('throughput'))} steps/s", "")
        table.add_row("time", time_text, bar(stats.get("time"), "stop_time"))
        return table


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _lookup(flat: Mapping[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in flat:
            value = _num(flat[name])
            if value is not None:
                return value
    for name in names:
        for key, v in flat.items():
            if key.endswith("/" + name):
                value = _num(v)
                if value is not None:
                    return value
    return None


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _fmt_int(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value):,}"


def _fmt_float(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None, total: float) -> str:
    if value is None or total <= 0:
        return ""
    return f" ({min(value / total, 1.0) * 100:.0f}%)"
