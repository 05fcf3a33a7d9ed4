"""maintenance.decisions: the rolling queue's pure decisions, as tables."""

from __future__ import annotations

import pytest

from maintenance import decisions
from maintenance.choices import ItemActionChoices as IA, ItemStatusChoices as IS
from maintenance.decisions import QueuedMove, SettledItem, evacuation_end, may_start, settle_item

LIVE, SHUT, START, STAY = IA.LIVE, IA.SHUTDOWN, IA.START, IA.STAY


@pytest.mark.parametrize("kw, status, retry", [
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="migrating"), "", False),
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="queued"), "", False),
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="succeeded"), IS.SUCCEEDED, False),
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="failed"), "", True),
    (dict(action=LIVE, attempts=2, cancelling=False, migration_status="failed"), IS.FAILED, False),
    (dict(action=LIVE, attempts=1, cancelling=True, migration_status="failed"), IS.CANCELLED, False),
    (dict(action=LIVE, attempts=1, cancelling=True, migration_status="aborted"), IS.CANCELLED, False),
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="aborted"), IS.FAILED, False),
    (dict(action=LIVE, attempts=1, cancelling=False, migration_status="needs-attention"), IS.FAILED, False),
    (dict(action=IA.OFFLINE, attempts=1, cancelling=False, migration_status=None), IS.FAILED, False),
    (dict(action=SHUT, attempts=1, cancelling=False, job_status="running"), "", False),
    (dict(action=SHUT, attempts=1, cancelling=False, job_status="succeeded"), IS.SUCCEEDED, False),
    (dict(action=SHUT, attempts=1, cancelling=False, job_status="failed", job_error="ignored ACPI"), IS.FAILED, False),
    (dict(action=START, attempts=1, cancelling=False, job_status="aborted"), IS.FAILED, False),
])
def test_settle_item(kw, status, retry):
    step = settle_item(**kw)
    assert (step.status, step.retry) == (status, retry)


def test_needs_attention_is_never_retried_and_says_why():
    step = settle_item(action=LIVE, attempts=1, cancelling=False, migration_status="needs-attention",
                       migration_outcome="on both hosts")
    assert step.reason == "Needs attention: on both hosts"


def _m(position, status, origin, destination):
    return QueuedMove(position=position, status=status, origin=origin, destination=destination)


@pytest.mark.parametrize("earlier, mine, ok", [
    ([], _m(1, IS.PENDING, "h2", "h1"), True),
    ([_m(1, IS.RUNNING, "h1", "h3")], _m(2, IS.PENDING, "h2", "h1"), False),  # waits: h1's room is still taken
    ([_m(1, IS.SUCCEEDED, "h1", "h3")], _m(2, IS.PENDING, "h2", "h1"), True),
    ([_m(1, IS.RUNNING, "h3", "h2")], _m(2, IS.PENDING, "h2", "h1"), True),  # into h2, not out of h1
    ([_m(3, IS.PENDING, "h1", "h3")], _m(2, IS.PENDING, "h2", "h1"), True),  # later moves do not hold it
])
def test_may_start_waits_for_earlier_moves_out_of_its_destination(earlier, mine, ok):
    assert may_start(mine, [*earlier, mine]) is ok


def _s(name, action=LIVE, status=IS.SUCCEEDED, blocked=False, running=True, reason=""):
    return SettledItem(vm_name=name, action=action, status=status, blocked=blocked, running=running, reason=reason)


@pytest.mark.parametrize("kind, items, cancelled, status, words", [
    ("enter", [_s("a"), _s("b")], False, "succeeded", "2 of 2 guest(s) moved; h1 is empty"),
    ("enter", [_s("a"), _s("b", action=STAY, status=IS.SKIPPED, blocked=True, reason="local disk")], False,
     "incomplete", "still on h1: b (local disk)"),
    ("enter", [_s("a"), _s("b", action=STAY, status=IS.SKIPPED, running=False, reason="stays")], False,
     "succeeded", "1 of 1"),  # a shut-off guest that stays does not keep the host busy
    ("enter", [_s("a"), _s("x", action=STAY, status=IS.SKIPPED, reason="Excluded by the admin")], False,
     "succeeded", "1 of 1"),  # excluded by choice: the plan said it stays
    ("enter", [_s("a"), _s("m", status=IS.SKIPPED, reason="Now on h3")], False, "succeeded", "1 of 1"),
    ("enter", [_s("m", status=IS.SKIPPED, reason="Now on h3")], False, "succeeded", "0 of 0"),
    ("enter", [_s("a", status=IS.FAILED, reason="no room"), _s("b", status=IS.FAILED, reason="no room")], False,
     "failed", "0 of 2"),
    ("enter", [_s("a"), _s("b", status=IS.CANCELLED)], True, "cancelled", "1 of 2"),
    ("return", [_s("a"), _s("b", status=IS.FAILED, reason="no room on h1")], False, "incomplete",
     "not brought home: b (no room on h1)"),
    ("return", [_s("a"), _s("s", action=START)], False, "succeeded", "2 of 2 guest(s) brought home"),
])
def test_evacuation_end(kind, items, cancelled, status, words):
    got, line = evacuation_end(kind=kind, host="h1", items=items, cancelled=cancelled)
    assert got == status
    assert words in line


@pytest.mark.parametrize("durations, c, expected", [
    ([], 2, 0), ([10], 2, 10), ([10, 10, 10, 10], 2, 20), ([10, 10, 10], 2, 20), ([30, 10, 10, 10], 2, 30),
    ([5, 5, 5], 1, 15), ([5, 5, 5], 8, 5),
])
def test_makespan(durations, c, expected):
    assert decisions.makespan_s(durations, c) == expected


def test_estimate_and_measured_link():
    assert decisions.estimate_s(memory_kib=1024 * 1024, action=LIVE, bandwidth_bps=1024 ** 3 / 2, overhead_s=3) == 5
    assert decisions.estimate_s(memory_kib=1024 * 1024, action=IA.OFFLINE, bandwidth_bps=1, overhead_s=3) == 3
    assert decisions.estimate_s(memory_kib=1, action=STAY, bandwidth_bps=1, overhead_s=3) == 0
    assert decisions.measured_link([]) is None
    bw, overhead, n = decisions.measured_link([(100, 1000, 3000), (300, 1000, 2000), (0, 0, 0), (200, 1000, 4000)])
    assert (bw, overhead, n) == (200.0, 2.0, 3)


@pytest.mark.parametrize("action, facts_job_status, facts_kept, waits", [
    (LIVE, "queued", False, True), (LIVE, "running", False, True), (IA.OFFLINE, "running", False, True),
    (LIVE, "succeeded", False, False), (LIVE, "failed", False, False), (LIVE, None, False, False),  # ended: go
    (IA.SHUTDOWN, "running", False, False), (START, "queued", False, False),  # power actions never wait for it
    # Its own facts kept for the run already (the plan's, or its source's gather ended): it goes.
    (LIVE, "queued", True, False), (LIVE, "running", True, False), (IA.OFFLINE, "running", True, False),
    (LIVE, "succeeded", True, False),
])
def test_waits_for_facts(action, facts_job_status, facts_kept, waits):
    assert decisions.waits_for_facts(action=action, facts_job_status=facts_job_status,
                                     facts_kept=facts_kept) is waits


@pytest.mark.parametrize("moves, kept, needed", [
    ([], [], []),
    ([("A", "1", "2"), ("b", "1", "3")], [], [("A", "1", "2"), ("b", "1", "3")]),
    ([("A", "1", "2"), ("b", "1", "3")], [("a", "1", "2")], [("b", "1", "3")]),  # any spelling of the UUID
    ([("a", "1", "2")], [("a", "1", "3")], [("a", "1", "2")]),  # kept for another destination: still needed
    ([("a", "2", "1"), ("b", "3", "1")], [("a", "2", "1"), ("b", "3", "1")], []),
])
def test_facts_needed(moves, kept, needed):
    assert decisions.facts_needed(moves, kept) == needed
