"""What a person may do to a migration in each status, how destinations rank, and the verdict
vocabulary: pure rules the pages ask instead of restating them (plain tables of cases)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from migrations_app import states
from migrations_app.choices import MigrationStatusChoices as S, VerdictStatusChoices
from migrations_app.preflight import rank_destinations
from migrations_app.verdicts import VerdictStatus, severity, verdicts_overall, worst

ASKED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def migration(status, *, live=True, abort_requested=None):
    return SimpleNamespace(status=status, is_live=live, abort_requested=abort_requested)


@pytest.mark.parametrize("status, abort_requested, expected", [
    (S.QUEUED, None, True),
    (S.CHECKING, None, True),
    (S.MIGRATING, None, True),
    (S.MIGRATING, ASKED, False),  # asked already
    (S.CHECKING, ASKED, False),
    (S.COMPLETING, None, False),  # libvirt has finished: too late
    (S.SUCCEEDED, None, False),
    (S.FAILED, None, False),
    (S.ABORTED, None, False),
    (S.NEEDS_ATTENTION, None, False),
])
def test_can_abort(status, abort_requested, expected):
    assert states.can_abort(migration(status, abort_requested=abort_requested)) is expected


@pytest.mark.parametrize("status, live, abort_requested, expected", [
    (S.MIGRATING, True, None, True),
    (S.MIGRATING, False, None, False),  # offline: nothing to force
    (S.MIGRATING, True, ASKED, False),  # being aborted
    (S.QUEUED, True, None, False),
    (S.CHECKING, True, None, False),
    (S.COMPLETING, True, None, False),
    (S.SUCCEEDED, True, None, False),
    (S.NEEDS_ATTENTION, True, None, False),
])
def test_can_force(status, live, abort_requested, expected):
    assert states.can_force(migration(status, live=live, abort_requested=abort_requested)) is expected


@pytest.mark.parametrize("status, expected", [(s, s == S.NEEDS_ATTENTION) for s in S])
def test_can_reconcile_only_what_needs_attention(status, expected):
    assert states.can_reconcile(migration(status)) is expected


def run(name, overall, free_kib=None, *, pending=False):
    return SimpleNamespace(
        destination=SimpleNamespace(name=name), overall=overall, memory_free_kib=free_kib, is_pending=pending
    )


@pytest.mark.parametrize("runs, expected", [
    ([], []),
    # passes, then warnings, then failures
    ([run("f", "fail", 900), run("w", "warn", 800), run("p", "pass", 1)], ["p", "w", "f"]),
    # within a status, most free memory first; unknown memory counts as none
    ([run("small", "pass", 10), run("none", "pass", None), run("big", "pass", 100)], ["big", "small", "none"]),
    # ties by name, ignoring case
    ([run("b", "pass", 5), run("A", "pass", 5), run("c", "pass", 5)], ["A", "b", "c"]),
    # still checking: last, whatever it says so far
    ([run("wait", "", 999, pending=True), run("f", "fail", 1)], ["f", "wait"]),
    # an empty or unknown stored verdict ranks as a failure
    ([run("odd", "weird", 999), run("w", "warn", 1), run("blank", "", 998)], ["w", "odd", "blank"]),
])
def test_rank_destinations_of_stored_runs(runs, expected):
    assert [r.destination.name for r in rank_destinations(runs)] == expected


@pytest.mark.parametrize("status, expected", [("pass", 0), ("warn", 1), ("fail", 2), ("", 2), ("bogus", 2)])
def test_severity(status, expected):
    assert severity(status) == expected


@pytest.mark.parametrize("statuses, expected", [
    ([], "fail"),  # nothing checked is not a pass
    (["pass"], "pass"),
    (["pass", "warn"], "warn"),
    (["warn", "fail", "pass"], "fail"),
])
def test_worst(statuses, expected):
    assert worst(statuses) == expected


@pytest.mark.parametrize("stored, expected", [
    ([], "fail"),
    ([{"status": "pass"}], "pass"),
    ([{"status": "pass"}, {"status": "warn"}], "warn"),
    ([{"status": "warn"}, {"status": "fail"}], "fail"),
])
def test_verdicts_overall_of_stored_verdicts(stored, expected):
    assert verdicts_overall(stored) == expected


def test_model_choices_speak_the_same_vocabulary():
    assert {c.value for c in VerdictStatusChoices} == {s.value for s in VerdictStatus}
