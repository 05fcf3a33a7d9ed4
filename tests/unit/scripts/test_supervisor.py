"""`make run`'s supervisor: the restart policy as a table, then the real thing over trivial commands."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("supervisor", ROOT / "scripts" / "supervisor.py")
supervisor = importlib.util.module_from_spec(_spec)
sys.modules["supervisor"] = supervisor  # dataclasses look their module up by name
_spec.loader.exec_module(supervisor)

POLICY = supervisor.RestartPolicy(base_s=0.5, cap_s=4.0, stable_s=30.0, loop_limit=4, loop_window_s=60.0)


@pytest.mark.parametrize(
    "uptime_s, failures, crashes, give_up, delay_s, failures_after",
    [
        (0.1, 0, (), False, 0.5, 1),  # first quick death: the base delay
        (0.1, 1, (), False, 1.0, 2),  # doubles with each quick death in a row
        (0.1, 2, (), False, 2.0, 3),
        (0.1, 5, (), False, 4.0, 6),  # … up to the cap
        (30.0, 5, (), False, 0.5, 1),  # up for stable_s: the count starts afresh
        (0.1, 2, (950.0, 960.0, 990.0), True, 0.0, 3),  # 4th death within the window: crash loop
        (0.1, 2, (900.0, 920.0, 990.0), False, 2.0, 3),  # older deaths fall out of the window
        (10.0, 0, (960.0, 975.0, 990.0), True, 0.0, 1),  # runs of some seconds still count toward the loop
    ],
)
def test_restart_decision(uptime_s, failures, crashes, give_up, delay_s, failures_after):
    decision = supervisor.restart_decision(
        policy=POLICY, now=1000.0, uptime_s=uptime_s, failures=failures, crashes=crashes
    )
    assert (decision.give_up, decision.delay_s, decision.failures) == (give_up, delay_s, failures_after)
    assert decision.crashes[-1] == 1000.0 and all(1000.0 - t < 60.0 for t in decision.crashes)


def test_describe_exit():
    assert supervisor.describe_exit(-9) == "killed by signal 9"
    assert supervisor.describe_exit(3) == "exit code 3"


def poll_until(sup, predicate, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sup.poll()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


@pytest.fixture
def run_sup(tmp_path):
    logged: list[str] = []
    sup = supervisor.Supervisor(
        env=dict(os.environ), cwd=tmp_path, state_path=tmp_path / "state.json",
        policy=supervisor.RestartPolicy(base_s=0.1, cap_s=0.4, stable_s=30.0, loop_limit=4, loop_window_s=30.0),
        log=logged.append,
    )
    sup.logged = logged
    yield sup
    sup.stop(timeout_s=5)


def test_a_killed_child_comes_back_within_5_s_and_the_state_file_says_so(run_sup, tmp_path):
    sleeper = run_sup.start("sleeper", ["sleep", "600"])
    other = run_sup.start("other", ["sleep", "600"])
    first_pid, other_pid = sleeper.proc.pid, other.proc.pid

    os.kill(first_pid, signal.SIGKILL)
    poll_until(run_sup, lambda: sleeper.state == "up" and sleeper.proc.pid != first_pid,
               timeout_s=5, what="the killed child running again")

    assert sleeper.restarts == 1 and sleeper.last_exit_code == -9
    assert other.proc.pid == other_pid and other.proc.poll() is None  # the others were left alone
    assert any("sleeper" in line and "killed by signal 9" in line for line in run_sup.logged)
    state = json.loads((tmp_path / "state.json").read_text())
    row = next(c for c in state["children"] if c["name"] == "sleeper")
    assert row["state"] == "up" and row["pid"] == sleeper.proc.pid
    assert row["restarts"] == 1 and row["last_exit_code"] == -9


def test_a_crash_looping_child_backs_off_then_is_given_up_loudly_while_the_rest_runs(run_sup, tmp_path):
    steady = run_sup.start("steady", ["sleep", "600"])
    looper = run_sup.start("looper", ["false"])
    # The supervisor's own clock of each start (a poll sees every one: a start happens in a poll).
    starts = [looper.started_at]

    def watch():
        if looper.state == "up" and looper.started_at != starts[-1]:
            starts.append(looper.started_at)
        return looper.state == "given up"

    poll_until(run_sup, watch, timeout_s=20, what="the crash-looping child given up on")

    assert looper.restarts == 3  # started 4 times in all: the 4th death within the window ends it
    delays = [float(m) for m in re.findall(r"looper \(pid \d+\) died: .*?restarting in ([\d.]+) s",
                                           "\n".join(run_sup.logged))]
    assert delays == [0.1, 0.2, 0.4]  # backing off, doubling
    # Each start came no sooner than its delay after the one before (a busy machine only adds to it).
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 3 and all(gap >= delay for gap, delay in zip(gaps, delays)), (gaps, delays)
    assert any("LOOPER IS CRASH-LOOPING" in line.upper() for line in run_sup.logged)
    assert steady.state == "up" and steady.proc.poll() is None
    state = json.loads((tmp_path / "state.json").read_text())
    row = next(c for c in state["children"] if c["name"] == "looper")
    assert row["state"] == "given up" and row["last_exit_code"] == 1 and "not restarted" in row["note"]


def test_stop_stops_every_child_and_none_comes_back(run_sup):
    children = [run_sup.start(f"c{i}", ["sleep", "600"]) for i in range(3)]
    run_sup.stop(timeout_s=5)
    run_sup.poll()
    assert all(c.state == "stopped" and c.proc.poll() is not None for c in children)
