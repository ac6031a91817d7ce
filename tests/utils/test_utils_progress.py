"""ProgressDisplay: throttled plain lines off a terminal, rich live display on one."""

from __future__ import annotations

import io

from rldataflow.utils.progress import ProgressDisplay


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def res(i: int, ret=None, **extra) -> dict:
    out = {"training_iteration": i, "env_steps_sampled": 2048 * i, "time_total_s": 1.0 * i}
    if ret is not None:
        out["episode_return_mean"] = ret
    out.update(extra)
    return out


def test_plain_line_format():
    out = io.StringIO()
    clock = FakeClock()
    with ProgressDisplay(None, stream=out, clock=clock) as display:
        display.update({"training_iteration": 12, "episode_return_mean": 187.34,
                        "env_steps_sampled": 24576, "time_total_s": 12.73})
    assert out.getvalue() == "iter 12  return 187.3  steps 24,576  1,931 steps/s  12.7s\n"


def test_plain_lines_are_throttled_and_final_line_always_printed():
    out = io.StringIO()
    clock = FakeClock()
    display = ProgressDisplay(None, stream=out, clock=clock, min_interval_s=1.0)
    assert not display.live_mode  # StringIO is not a terminal
    for i in range(1, 6):  # 5 updates within 0.4 s: only the first is printed now
        display.update(res(i, ret=float(i)))
        clock.t += 0.1
    assert out.getvalue().count("\n") == 1
    clock.t += 1.0
    display.update(res(6, ret=6.0))
    assert out.getvalue().count("\n") == 2
    display.update(res(7, ret=7.0))
    display.close()
    display.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("iter 1  ") and lines[1].startswith("iter 6  ")
    assert lines[2].startswith("iter 7  return 7.0  steps 14,336")
    # throughput over the last interval: 2048 steps in 1 s of result time
    assert "2,048 steps/s" in lines[2]


def test_missing_keys_and_nan_do_not_crash():
    out = io.StringIO()
    with ProgressDisplay({"stop_return": 200, "stop_steps": None}, stream=out) as display:
        display.update({})
        display.update({"training_iteration": 1, "episode_return_mean": float("nan"),
                        "env_steps_sampled": "oops"}, final=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "iter n/a  return n/a/200.0  steps n/a  n/a steps/s  n/as"
    assert lines[1].startswith("iter 1  return n/a/200.0")


def test_stop_conditions_progress_and_nested_keys():
    out = io.StringIO()
    stops = {"stop_return": 475, "stop_steps": 100_000, "stop_time": 60}
    with ProgressDisplay(stops, stream=out) as display:
        display.update({"training_iteration": 12, "time_total_s": 12.7,
                        "counters": {"env_steps_sampled": 25_000},
                        "episodes": {"episode_return_mean": 187.3}})
    line = out.getvalue().strip()
    assert line == ("iter 12  return 187.3/475.0  steps 25,000/100,000 (25%)  1,969 steps/s  "
                    "12.7s/60s (21%)")


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_live_display_on_a_terminal():
    out = TtyStringIO()
    with ProgressDisplay({"stop_steps": 10_000, "stop_time": 30}, stream=out) as display:
        assert display.live_mode
        display.update(res(1, ret=12.5))
        display.update(res(2))
    text = out.getvalue()
    assert "env steps" in text and "4,096" in text and "12.5" in text
