"""`manage.py host_maintenance HOST enter|exit`: the plan, the evacuation and the way home from a terminal."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from maintenance.models import Evacuation


def run(*argv) -> tuple[str, int]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("host_maintenance", *argv, stdout=out)
    except SystemExit as exc:
        return out.getvalue(), int(exc.code)
    return out.getvalue(), 0


def test_dry_run_json_lists_the_blocker_and_exits_2(evac):
    out, code = run("kvm-a", "enter", "--dry-run", "--no-check", "--json")
    plan = json.loads(out)
    assert code == 2
    assert plan["blocked"] == ["local-1"]
    by = {g["vm"]: g for g in plan["guests"]}
    assert by["local-1"]["status"] == "blocked" and "copy-storage" in by["local-1"]["remedy"]
    assert by["web-1"]["to"] in ("kvm-b", "kvm-c") and by["web-1"]["from"] == "kvm-a"
    assert set(by["web-1"]) >= {"vm", "uuid", "from", "to", "status", "migration", "reason"}
    assert Evacuation.objects.count() == 0  # a dry run changes nothing


def test_dry_run_without_blockers_exits_0_and_prints_words(evac):
    out, code = run("kvm-a", "enter", "--dry-run", "--no-check", "--exclude", "local-1")
    assert code == 0
    assert "Plan for kvm-a" in out and "local-1" in out and "Excluded" in out


@pytest.mark.parametrize("argv, message", [
    (("nope", "enter"), "No host 'nope'"),
    (("kvm-a", "enter", "--concurrency", "0"), "from 1 to 8"),
    (("kvm-a", "enter", "--concurrency", "x; rm -rf /"), "whole number"),
    (("kvm-a", "enter", "--exclude", "ghost"), "has no guest 'ghost'"),
    (("kvm-a", "enter", "--to", "web-1"), "VM=HOST"),
    (("kvm-a", "enter", "--to", "web-1=kvm-z"), "No host 'kvm-z'"),
    (("kvm-a", "enter", "--no-return"), "belongs to exit"),
    (("kvm-a", "exit", "--exclude", "web-1"), "belongs to enter"),
    (("kvm-a", "exit"), "not in maintenance"),
])
def test_bad_input_is_a_clear_message(evac, argv, message):
    with pytest.raises(CommandError, match=message):
        run(*argv, "--no-check")


def test_enter_wait_then_exit_wait_round_trip(transactional_db, evac, world):
    out, code = run("kvm-a", "enter", "--no-check", "--wait", "--json")
    outcome = json.loads(out)
    assert code == 1  # local-1 could not move: incomplete
    assert outcome["status"] == "incomplete" and "local-1" in outcome["outcome"]
    moved = {g["vm"]: g for g in outcome["guests"] if g["status"] == "succeeded"}
    assert set(moved) == {"web-1", "web-2", "cold-1"}
    for name, g in moved.items():
        assert list(world.where(g["uuid"])) == [g["to"]]
        assert g["migration"] is not None
    assert moved["web-1"]["total_ms"] is not None
    out, code = run("kvm-a", "exit", "--wait", "--json")
    back = json.loads(out)
    assert code == 0 and back["status"] == "succeeded", back
    for g in moved.values():
        assert list(world.where(g["uuid"])) == ["kvm-a"]
