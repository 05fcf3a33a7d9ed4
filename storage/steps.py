"""The vocabulary of a setup plan: commands, libvirt calls, probes, steps (plain data).

A ``Step`` is idempotent by construction: its ``check`` probes say whether it is already done
(then nothing runs), its ``actions`` do it, its ``verify`` probes prove it worked. Everything
a plan will run on a host is here as data, so the dry run shows exactly what runs: remote
commands are argv lists rendered with ``shlex.join`` (the SSH adapter sends that same string),
libvirt calls are rendered with their XML.

Plans are stored as JSON on the setup row (``to_json`` / ``from_json``) and executed from there,
so what the admin confirmed is what runs.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

# How a probe's result is judged (see Probe.judge).
MATCH_EXIT0 = "exit0"  # exit status 0
MATCH_EQUALS = "equals"  # exit 0 and stripped stdout == value
MATCH_CONTAINS = "contains"  # exit 0 and value is a substring of stdout
MATCH_LINE_FIELD = "line_field"  # exit 0 and some line's first field == value (showmount -e)
MATCH_WORDS = "words"  # exit 0 and some line, whitespace-normalised, contains value (ufw status)
MATCH_SHARED_MOUNT = "shared_mount"  # `findmnt -n -o FSTYPE,SOURCE`: see plan.mount_matches
MATCH_LINES = "lines"  # exit 0 and every line of value is a line of stdout (any order)
MATCH_EXIT_NONZERO = "exit_nonzero"  # the command fails (e.g. `test -e` on what must not exist)

# libvirt operations a step may perform, and the facts a probe may ask libvirt.
LIBVIRT_POOL_DEFINE = "pool_define"
LIBVIRT_POOL_AUTOSTART = "pool_autostart"
LIBVIRT_POOL_START = "pool_start"
POOL_DEFINED_AT = "defined_at"  # a pool of that name exists with that target path
POOL_ACTIVE = "active"
POOL_AUTOSTART = "autostart"


@dataclass(frozen=True)
class Command:
    """A remote command: argv (never a shell string) and optional text on its stdin."""

    argv: tuple[str, ...]
    stdin: str | None = None
    timeout_s: float = 60.0

    def render(self) -> str:
        line = shlex.join(self.argv)
        if self.stdin is not None:
            lines = self.stdin.count("\n") + (0 if self.stdin.endswith("\n") else 1)
            line += f"   # stdin: {lines} line{'s' if lines != 1 else ''} shown below"
        return line


@dataclass(frozen=True)
class LibvirtCall:
    """A call through the libvirt API on the host's connection (not a shell command)."""

    op: str
    pool: str
    xml: str = ""

    def render(self) -> str:
        if self.op == LIBVIRT_POOL_DEFINE:
            return f"libvirt: virStoragePoolDefineXML(xml below)   # pool {self.pool}"
        if self.op == LIBVIRT_POOL_AUTOSTART:
            return f"libvirt: virStoragePoolSetAutostart({self.pool}, 1)"
        if self.op == LIBVIRT_POOL_START:
            return f"libvirt: virStoragePoolCreate({self.pool})"
        raise ValueError(f"unknown libvirt op {self.op!r}")


@dataclass(frozen=True)
class Probe:
    """A read-only question to a host. Over SSH when ``argv`` is set, else to libvirt (``pool``)."""

    argv: tuple[str, ...] = ()
    match: str = MATCH_EXIT0
    value: str = ""
    pool: str = ""
    pool_fact: str = ""
    # Poll up to this long for the answer to become right (daemons register a moment after start).
    wait_s: float = 0.0
    timeout_s: float = 30.0

    def render(self) -> str:
        if not self.argv:
            what = {
                POOL_DEFINED_AT: f"pool {self.pool} is defined with target {self.value}",
                POOL_ACTIVE: f"pool {self.pool} is active",
                POOL_AUTOSTART: f"pool {self.pool} starts automatically",
            }[self.pool_fact]
            return f"libvirt: {what}"
        line = shlex.join(self.argv)
        expect = {
            MATCH_EXIT0: "",
            MATCH_EQUALS: f"prints {self.value!r}" if self.value else "prints nothing",
            MATCH_CONTAINS: "contains the block this step writes" if "\n" in self.value else f"output contains {self.value!r}",
            MATCH_LINE_FIELD: f"lists {self.value}",
            MATCH_WORDS: f"shows {self.value!r}",
            MATCH_SHARED_MOUNT: f"a shared filesystem ({self.value}) is mounted",
            MATCH_LINES: "prints " + ", ".join(self.value.splitlines()),
            MATCH_EXIT_NONZERO: "fails",
        }[self.match]
        return f"{line}   # {expect}" if expect else line


@dataclass(frozen=True)
class Step:
    """One idempotent change on one host."""

    key: str  # unique in its plan, e.g. "labh1:mount"
    host: str  # host name in the inventory
    title: str
    why: str
    check: tuple[Probe, ...]
    actions: tuple[Command | LibvirtCall, ...]
    verify: tuple[Probe, ...]
    hint: str
    # Run even if the check passes, when one of these steps changed something in the same run
    # (restart the server after its export config changed).
    after_change_of: tuple[str, ...] = ()

    @property
    def is_gate(self) -> bool:
        """A step with nothing to do: its check must pass (e.g. the client sees the export)."""
        return not self.actions


@dataclass(frozen=True)
class Note:
    """What the plan decided not to do, or wants the admin to know, about one host."""

    host: str
    level: str  # "info" | "warning"
    text: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    notes: tuple[Note, ...] = ()
    blockers: tuple[str, ...] = ()
    proof: tuple[Step, ...] = ()  # the verification run after the steps (see storage.proof)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return not self.blockers

    def hosts(self) -> list[str]:
        seen: list[str] = []
        for step in (*self.steps, *self.proof):
            if step.host not in seen:
                seen.append(step.host)
        return seen

    def step(self, key: str) -> Step:
        for step in (*self.steps, *self.proof):
            if step.key == key:
                return step
        raise KeyError(key)


# --------------------------------------------------------------------------
# JSON (stored on the setup row)


def _action_to_json(action: Command | LibvirtCall) -> dict:
    if isinstance(action, Command):
        return {"type": "command", "argv": list(action.argv), "stdin": action.stdin, "timeout_s": action.timeout_s}
    return {"type": "libvirt", "op": action.op, "pool": action.pool, "xml": action.xml}


def _action_from_json(data: dict) -> Command | LibvirtCall:
    if data["type"] == "command":
        return Command(argv=tuple(data["argv"]), stdin=data.get("stdin"), timeout_s=data.get("timeout_s", 60.0))
    return LibvirtCall(op=data["op"], pool=data["pool"], xml=data.get("xml", ""))


def _probe_to_json(probe: Probe) -> dict:
    data = asdict(probe)
    data["argv"] = list(probe.argv)
    return data


def _probe_from_json(data: dict) -> Probe:
    return Probe(**{**data, "argv": tuple(data.get("argv", ()))})


def _step_to_json(step: Step) -> dict:
    return {
        "key": step.key,
        "host": step.host,
        "title": step.title,
        "why": step.why,
        "check": [_probe_to_json(p) for p in step.check],
        "actions": [_action_to_json(a) for a in step.actions],
        "verify": [_probe_to_json(p) for p in step.verify],
        "hint": step.hint,
        "after_change_of": list(step.after_change_of),
    }


def _step_from_json(data: dict) -> Step:
    return Step(
        key=data["key"],
        host=data["host"],
        title=data["title"],
        why=data["why"],
        check=tuple(_probe_from_json(p) for p in data["check"]),
        actions=tuple(_action_from_json(a) for a in data["actions"]),
        verify=tuple(_probe_from_json(p) for p in data["verify"]),
        hint=data["hint"],
        after_change_of=tuple(data.get("after_change_of", ())),
    )


def plan_to_json(plan: Plan) -> dict:
    return {
        "steps": [_step_to_json(s) for s in plan.steps],
        "notes": [asdict(n) for n in plan.notes],
        "blockers": list(plan.blockers),
        "proof": [_step_to_json(s) for s in plan.proof],
        "summary": plan.summary,
    }


def plan_from_json(data: dict) -> Plan:
    return Plan(
        steps=tuple(_step_from_json(s) for s in data.get("steps", ())),
        notes=tuple(Note(**n) for n in data.get("notes", ())),
        blockers=tuple(data.get("blockers", ())),
        proof=tuple(_step_from_json(s) for s in data.get("proof", ())),
        summary=data.get("summary", {}),
    )


def rendered_step(step: Step) -> dict:
    """A step as the plan page and the CLI show it: every probe and action as one line."""
    return {
        "key": step.key,
        "host": step.host,
        "title": step.title,
        "why": step.why,
        "check": [p.render() for p in step.check],
        "actions": [a.render() for a in step.actions],
        "action_items": [{"line": a.render(), "api": isinstance(a, LibvirtCall)} for a in step.actions],
        "inputs": [
            {
                "for": a.render(),
                "what": f"Text written by {a.argv[0]} to {a.argv[-1]}" if isinstance(a, Command) else f"XML of pool {a.pool}",
                "text": a.stdin if isinstance(a, Command) else a.xml,
            }
            for a in step.actions
            if (isinstance(a, Command) and a.stdin is not None) or (isinstance(a, LibvirtCall) and a.xml)
        ],
        "verify": [p.render() for p in step.verify],
        "hint": step.hint,
        "after_change_of": list(step.after_change_of),
    }
