"""Keep `make run`'s children running: restart one that dies, with backoff; stop all on request.

The way systemd's ``Restart=on-failure`` and supervisord's ``autorestart`` do it:

- a child that exits is started again after a delay that doubles with each quick death
  (``base_s``, 2·base, 4·base … up to ``cap_s``); a child that stayed up ``stable_s`` starts
  the count afresh;
- a child that dies ``loop_limit`` times within ``loop_window_s`` is crash-looping: it is left
  stopped, said loudly, and everything else keeps running;
- only ``stop()`` (Ctrl-C, SIGTERM) stops everything, newest first.

``restart_decision`` is the policy alone (no processes, no clock), tested with a table. The
``Supervisor`` writes what it sees to a JSON file (atomically: a temporary file renamed over
the old one) that the portal's health page reads.

Imports nothing of the portal: it runs before Django is set up, and tests use it on trivial
commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# How often the state file is rewritten even when nothing changed: the health page calls the
# supervisor gone when the file is older than a few of these.
STATE_REFRESH_S = 2.0


@dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    loop_limit: int = 5
    loop_window_s: float = 60.0


@dataclass(frozen=True)
class Decision:
    """What to do after a child exited: start it again in ``delay_s``, or give up."""

    give_up: bool
    delay_s: float
    failures: int  # quick deaths in a row, this one included
    crashes: tuple[float, ...]  # exit times inside the crash-loop window, this one included


def restart_decision(
    *, policy: RestartPolicy, now: float, uptime_s: float, failures: int, crashes: tuple[float, ...]
) -> Decision:
    """Decide about a child that exited at ``now`` after ``uptime_s`` seconds up.

    ``failures`` counts its quick deaths in a row before this one; ``crashes`` its earlier exit
    times (any within the window count, however long each run lasted).
    """
    failures = 1 if uptime_s >= policy.stable_s else failures + 1
    recent = tuple(t for t in crashes if now - t < policy.loop_window_s) + (now,)
    if len(recent) >= policy.loop_limit:
        return Decision(give_up=True, delay_s=0.0, failures=failures, crashes=recent)
    delay = min(policy.cap_s, policy.base_s * 2 ** (failures - 1))
    return Decision(give_up=False, delay_s=delay, failures=failures, crashes=recent)


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by signal 9' (Popen reports a signal as a negative code)."""
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    state: str = "starting"  # up | restarting | given up | stopped
    started_at: float = 0.0  # monotonic
    up_since: float | None = None  # wall clock, for the health page
    restarts: int = 0
    failures: int = 0
    crashes: tuple[float, ...] = ()
    last_exit_code: int | None = None
    last_exit_at: float | None = None  # wall clock
    restart_at: float | None = None  # monotonic
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "pid": self.proc.pid if self.proc is not None and self.state == "up" else None,
            "state": self.state,
            "up_since": self.up_since if self.state == "up" else None,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_exit_at": self.last_exit_at,
            "note": self.note,
        }


def write_json_atomically(path: Path, data: dict) -> None:
    """Write ``data`` so a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class Supervisor:
    """Starts children, restarts the ones that die (``poll``), stops them all (``stop``)."""

    env: dict
    cwd: Path
    state_path: Path | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    log: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    children: list[Child] = field(default_factory=list)
    _state_written: float = field(default=-1e9, init=False)

    def start(self, name: str, argv: list[str]) -> Child:
        """Start ``argv`` now and keep it running from then on."""
        child = Child(name=name, argv=list(argv))
        self.children.append(child)
        self._spawn(child)
        self.log(f"started {name} (pid {child.proc.pid})")
        self.write_state()
        return child

    def _spawn(self, child: Child) -> None:
        # Own session: Ctrl-C in the terminal reaches only this process, which stops the
        # children in order (workers before Redis) instead of all at once.
        child.proc = subprocess.Popen(child.argv, cwd=self.cwd, env=self.env, start_new_session=True)
        child.state = "up"
        child.started_at = self.clock()
        child.up_since = time.time()
        child.restart_at = None

    def poll(self) -> None:
        """One pass: notice children that exited, decide about each, start the ones now due."""
        now = self.clock()
        changed = False
        for child in self.children:
            if child.state == "up" and child.proc.poll() is not None:
                self._exited(child, now)
                changed = True
            elif child.state == "restarting" and now >= child.restart_at:
                self._spawn(child)
                child.note = ""  # how it last died stays in last_exit_code
                child.restarts += 1
                self.log(f"restarted {child.name} (pid {child.proc.pid}, restart {child.restarts})")
                changed = True
        if changed or now - self._state_written >= STATE_REFRESH_S:
            self.write_state()

    def _exited(self, child: Child, now: float) -> None:
        code = child.proc.returncode
        child.last_exit_code = code
        child.last_exit_at = time.time()
        decision = restart_decision(
            policy=self.policy, now=now, uptime_s=now - child.started_at,
            failures=child.failures, crashes=child.crashes,
        )
        child.failures, child.crashes = decision.failures, decision.crashes
        if decision.give_up:
            child.state = "given up"
            child.note = (f"died {len(decision.crashes)} times within {self.policy.loop_window_s:g} s "
                          f"(last: {describe_exit(code)}); not restarted — the rest keeps running")
            banner = "!" * 72
            self.log(f"\n{banner}\n{child.name} IS CRASH-LOOPING: {child.note}.\n"
                     f"Fix the cause and restart `make run`.\n{banner}\n")
            return
        child.state = "restarting"
        child.restart_at = now + decision.delay_s
        child.note = f"{describe_exit(code)}; restarting in {decision.delay_s:g} s"
        self.log(f"{child.name} (pid {child.proc.pid}) died: {child.note}")

    def run_until(self, stopping: Callable[[], bool], *, interval_s: float = 0.2) -> None:
        """Supervise until ``stopping()`` says so (checked every ``interval_s``)."""
        while not stopping():
            self.poll()
            time.sleep(interval_s)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop every child, newest first, each fully before the next (workers still have
        Redis while they shut down); none is restarted any more."""
        for child in reversed(self.children):
            proc = child.proc
            if child.state == "up" and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            child.state = "stopped"
            self.log(f"stopped {child.name}")
        self.write_state()

    def state(self) -> dict:
        return {"supervisor_pid": os.getpid(), "updated": time.time(),
                "children": [child.as_dict() for child in self.children]}

    def write_state(self) -> None:
        self._state_written = self.clock()
        if self.state_path is None:
            return
        try:
            write_json_atomically(self.state_path, self.state())
        except OSError as exc:  # the health page goes stale; supervising must go on
            self.log(f"cannot write {self.state_path}: {exc}")
