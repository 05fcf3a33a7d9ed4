"""Executing a plan: check → act → verify, step by step, over SSH and libvirt (no Django).

``run_steps()`` runs the setup steps in order and stops at the first failure (raising
``StepFailed`` with the command, its output and the step's suggested fix); a step whose check
already passes is skipped, unless a step it depends on changed something in the same run.
``run_proof()`` runs the proof steps to the end whatever fails (cleanup always runs) and
returns every outcome for the grid.

Hosts are reached through channels (``name → channel``): ``channel.run(argv, stdin=…,
timeout=…, check=False)`` like ``SSHSession.run``, and ``channel.libvirt()`` returning an open
libvirt connection. Every probe and action is recorded as the line the plan showed, so the
executed commands can be compared with the dry run.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import PortalError
from hosts.adapters.errors import AdapterError, HostUnreachable

from . import libvirt_pool
from .choices import StepStateChoices
from .facts import parse_findmnt_fstype_source
from .nfs_checks import mount_matches
from .steps import (
    LIBVIRT_POOL_AUTOSTART,
    LIBVIRT_POOL_DEFINE,
    LIBVIRT_POOL_START,
    MATCH_CONTAINS,
    MATCH_EQUALS,
    MATCH_EXIT0,
    MATCH_EXIT_NONZERO,
    MATCH_LINE_FIELD,
    MATCH_LINES,
    MATCH_SHARED_MOUNT,
    MATCH_WORDS,
    POOL_ACTIVE,
    POOL_AUTOSTART,
    POOL_DEFINED_AT,
    Command,
    LibvirtCall,
    Probe,
    Step,
)

POLL_INTERVAL_S = 0.5
# Multiplies every probe's wait_s (tests shrink it; a probe that must fail should not wait long there).
WAIT_SCALE = 1.0
MAX_OUTPUT_CHARS = 4000

Log = Callable[[str], None]


class Channel(Protocol):
    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 30.0, check: bool = False) -> Any: ...

    def libvirt(self) -> Any: ...


@dataclass
class StepOutcome:
    key: str
    host: str
    title: str
    state: str = StepStateChoices.PENDING
    records: list[dict] = field(default_factory=list)  # {"phase", "line", "exit", "ok", "output"}
    error: str = ""
    output: str = ""
    hint: str = ""
    failed: list[str] = field(default_factory=list)  # the probes that did not pass (rendered)
    forced_by: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "key": self.key, "host": self.host, "title": self.title, "state": str(self.state),
            "records": self.records, "error": self.error, "output": self.output, "hint": self.hint,
            "failed": self.failed, "forced_by": self.forced_by,
        }


class StepFailed(PortalError):
    """A setup step failed; ``message``/``hint`` for the job, ``outcome`` for the page."""

    def __init__(self, outcome: StepOutcome):
        super().__init__(f"Step “{outcome.title}” on {outcome.host} failed: {outcome.error}", hint=outcome.hint)
        self.outcome = outcome


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_OUTPUT_CHARS else "…" + text[-MAX_OUTPUT_CHARS:]


def judge(probe: Probe, exit_status: int, stdout: str) -> bool:
    """Does a command's result answer the probe's question with yes? (pure)"""
    if probe.match == MATCH_EXIT_NONZERO:
        return exit_status != 0
    if exit_status != 0:
        return False
    if probe.match == MATCH_EXIT0:
        return True
    if probe.match == MATCH_EQUALS:
        return stdout.strip() == probe.value
    if probe.match == MATCH_CONTAINS:
        return probe.value in stdout
    if probe.match == MATCH_LINE_FIELD:
        return any(line.split()[:1] == [probe.value] for line in stdout.splitlines())
    if probe.match == MATCH_LINES:
        have = {line.strip() for line in stdout.splitlines()}
        return all(line in have for line in probe.value.splitlines())
    if probe.match == MATCH_WORDS:
        wanted = " ".join(probe.value.split())
        return any(wanted in " ".join(line.split()) for line in stdout.splitlines())
    if probe.match == MATCH_SHARED_MOUNT:
        fstype, source = parse_findmnt_fstype_source(stdout)
        return mount_matches(fstype, source, probe.value)
    raise ValueError(f"unknown probe match {probe.match!r}")


def _require_exit_status(result) -> None:
    if result.exit_status < 0:  # the channel closed before the command reported how it ended
        raise HostUnreachable(f"No exit status for `{shlex.join(result.argv)}`: the SSH connection may have dropped.")


def _ask_libvirt(probe: Probe, channel: Channel) -> tuple[bool, str]:
    pool = libvirt_pool.get_pool(channel.libvirt(), probe.pool)
    if pool is None:
        return False, f"no pool {probe.pool}"
    shown = f"pool {pool.name}: {pool.type} at {pool.path}, {'active' if pool.active else 'inactive'}, autostart {'on' if pool.autostart else 'off'}"
    if probe.pool_fact == POOL_DEFINED_AT:
        return pool.path == probe.value, shown
    if probe.pool_fact == POOL_ACTIVE:
        return pool.active, shown
    if probe.pool_fact == POOL_AUTOSTART:
        return pool.autostart, shown
    raise ValueError(f"unknown pool fact {probe.pool_fact!r}")


def ask(probe: Probe, channel: Channel, *, wait: bool = True) -> tuple[bool, int | None, str]:
    """Run one probe (polling up to probe.wait_s when ``wait``); (passed, exit status, output)."""
    deadline = time.monotonic() + (probe.wait_s * WAIT_SCALE if wait else 0.0)
    while True:
        if probe.argv:
            result = channel.run(list(probe.argv), timeout=probe.timeout_s, check=False)
            _require_exit_status(result)
            output = (result.stdout + (("\n" + result.stderr) if result.stderr.strip() else "")).strip()
            passed, exit_status = judge(probe, result.exit_status, result.stdout), result.exit_status
        else:
            passed, output = _ask_libvirt(probe, channel)
            exit_status = None
        if passed or time.monotonic() >= deadline:
            return passed, exit_status, output
        time.sleep(min(POLL_INTERVAL_S, probe.wait_s * WAIT_SCALE))


def _act(action: Command | LibvirtCall, channel: Channel) -> tuple[bool, int | None, str]:
    if isinstance(action, Command):
        result = channel.run(list(action.argv), stdin=action.stdin, timeout=action.timeout_s, check=False)
        _require_exit_status(result)
        output = (result.stdout + ("\n" + result.stderr if result.stderr.strip() else "")).strip()
        return result.exit_status == 0, result.exit_status, output
    conn = channel.libvirt()
    if action.op == LIBVIRT_POOL_DEFINE:
        libvirt_pool.define_pool(conn, action.xml)
    elif action.op == LIBVIRT_POOL_AUTOSTART:
        libvirt_pool.set_autostart(conn, action.pool)
    elif action.op == LIBVIRT_POOL_START:
        libvirt_pool.start_pool(conn, action.pool)
    else:
        raise ValueError(f"unknown libvirt op {action.op!r}")
    return True, None, ""


def _probes(outcome: StepOutcome, phase: str, probes: Iterable[Probe], channel: Channel, log: Log, *, wait: bool) -> bool:
    all_passed = True
    for probe in probes:
        passed, exit_status, output = ask(probe, channel, wait=wait)
        line = probe.render()
        outcome.records.append({"phase": phase, "line": line, "exit": exit_status, "ok": passed, "output": _tail(output)})
        if not passed:
            outcome.failed.append(line)
            all_passed = False
        shown = output.splitlines()[0][:160] if output.strip() else ""
        log(f"  {phase}: {line} → {'yes' if passed else 'no'}{'' if passed or not shown else f' ({shown})'}")
    return all_passed


def run_step(step: Step, channel: Channel, *, changed: set[str], log: Log) -> StepOutcome:
    """One step: check (skip if done), act, verify. Never raises for the step's own failure."""
    outcome = StepOutcome(key=step.key, host=step.host, title=step.title, hint=step.hint)
    log(f"▶ {step.host} · {step.title}")
    try:
        if step.check:
            done = _probes(outcome, "check", step.check, channel, log, wait=step.is_gate)
            forced = [key for key in step.after_change_of if key in changed]
            if done and not forced:
                outcome.state = StepStateChoices.ALREADY_DONE
                log("  ✓ yes" if step.is_gate else "  ✓ already done, nothing to change")
                return outcome
            if step.is_gate:
                outcome.state = StepStateChoices.FAILED
                outcome.error = "the check did not pass: " + "; ".join(outcome.failed)
                outcome.output = "\n".join(r["output"] for r in outcome.records if not r["ok"])
                log(f"  ✗ {outcome.error}")
                return outcome
            outcome.failed.clear()  # a check that does not pass only means "not done yet"
            if done and forced:
                outcome.forced_by = forced
                log(f"  check passes, but {', '.join(forced)} changed in this run: doing it again")
        for action in step.actions:
            line = action.render()
            log(f"  $ {line}")
            ok, exit_status, output = _act(action, channel)
            outcome.records.append({"phase": "action", "line": line, "exit": exit_status, "ok": ok, "output": _tail(output)})
            if not ok:
                outcome.state = StepStateChoices.FAILED
                outcome.error = f"`{line.split('   #')[0]}` exited with status {exit_status}"
                outcome.output = _tail(output)
                log(f"  ✗ {outcome.error}")
                for out_line in outcome.output.splitlines()[-15:]:
                    log(f"    {out_line}")
                return outcome
        if step.verify and not _probes(outcome, "verify", step.verify, channel, log, wait=True):
            outcome.state = StepStateChoices.FAILED
            outcome.error = "done, but the verification did not pass: " + "; ".join(outcome.failed)
            outcome.output = "\n".join(r["output"] for r in outcome.records if r["phase"] == "verify" and not r["ok"])
            log(f"  ✗ {outcome.error}")
            return outcome
    except AdapterError as exc:
        outcome.state = StepStateChoices.FAILED
        outcome.error = exc.message
        outcome.hint = exc.hint or step.hint
        log(f"  ✗ {exc.message}")
        return outcome
    outcome.state = StepStateChoices.CHANGED
    log("  ✓ done")
    return outcome


def run_steps(
    steps: Iterable[Step],
    channels: Mapping[str, Channel],
    *,
    log: Log,
    on_outcome: Callable[[StepOutcome], None] = lambda _o: None,
    on_start: Callable[[Step], None] = lambda _s: None,
) -> list[StepOutcome]:
    """Run setup steps in order; raise StepFailed at the first failing step."""
    changed: set[str] = set()
    outcomes = []
    for step in steps:
        on_start(step)
        outcome = run_step(step, channels[step.host], changed=changed, log=log)
        outcomes.append(outcome)
        on_outcome(outcome)
        if outcome.state == StepStateChoices.FAILED:
            raise StepFailed(outcome)
        if outcome.state == StepStateChoices.CHANGED:
            changed.add(step.key)
    return outcomes


def run_proof(steps: Iterable[Step], channels: Mapping[str, Channel], *, log: Log) -> dict[str, dict]:
    """Run every proof step whatever fails; {key: outcome as JSON}."""
    outcomes = {}
    for step in steps:
        outcome = run_step(step, channels[step.host], changed=set(), log=log)
        outcomes[step.key] = outcome.to_json()
    return outcomes
