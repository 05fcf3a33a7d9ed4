"""The state machine of an occurrence (pure table): what is due, given the facts and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from calendar_app import lifecycle as L
from calendar_app.choices import OccurrenceStatusChoices as S, OnStartChoices

START = datetime(2027, 3, 6, 2, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
BASE = L.OccurrenceFacts(status=S.SCHEDULED, start=START, end=END, cutoff_at=END - timedelta(minutes=30),
                         check_at=START - timedelta(minutes=30))
M = timedelta(minutes=1)


def f(**kw):
    return replace(BASE, **kw)


# (case, facts, now, expected (step name, to status, late) or None)
CASES = [
    ("long before: nothing", f(), START - 40 * M, None),
    ("T − 30: the dry run", f(), START - 30 * M, ("check", S.PREPARING, False)),
    ("dry run done: wait", f(status=S.PREPARING, checked=True), START - 10 * M, None),
    ("start", f(status=S.PREPARING, checked=True), START, ("start", S.EVACUATING, False)),
    ("start without a dry run (portal just up)", f(), START + 10 * 1 / 60 * M, ("start", S.EVACUATING, False)),
    ("late start before the cutoff", f(), START + 20 * M, ("start", S.EVACUATING, True)),
    ("past the cutoff: missed", f(status=S.PREPARING), END - 30 * M, ("miss", S.MISSED, False)),
    ("long past: missed", f(), END + 60 * M, ("miss", S.MISSED, False)),
    ("warn-only start", f(on_start=OnStartChoices.WARN), START, ("start", S.IN_MAINTENANCE, False)),
    ("evacuating, running: nothing", f(status=S.EVACUATING, evacuations_settled=False), START + 10 * M, None),
    ("evacuation settled", f(status=S.EVACUATING), START + 10 * M, ("evacuated", S.IN_MAINTENANCE, False)),
    ("cutoff while evacuating", f(status=S.EVACUATING, evacuations_settled=False), END - 30 * M,
     ("cutoff", S.EVACUATING, False)),
    ("end − 15 while evacuating", f(status=S.EVACUATING, evacuations_settled=False, cut_off=True), END - 15 * M,
     ("end_soon", S.EVACUATING, False)),
    ("end while still evacuating: overrun", f(status=S.EVACUATING, evacuations_settled=False, cut_off=True,
                                              warned_end_soon=True), END, ("overrun", S.EVACUATING, False)),
    ("overrun told once", f(status=S.EVACUATING, evacuations_settled=False, cut_off=True, warned_end_soon=True,
                            warned_end=True), END + 5 * M, None),
    ("in maintenance, empty: nothing at end − 15", f(status=S.IN_MAINTENANCE), END - 15 * M, None),
    ("a short window hears nothing of its end before its cutoff",
     f(status=S.EVACUATING, evacuations_settled=False, cutoff_at=END), END - 15 * M, None),
    ("in maintenance, not empty: end − 15 warning", f(status=S.IN_MAINTENANCE, evacuations_ok=False), END - 15 * M,
     ("end_soon", S.IN_MAINTENANCE, False)),
    ("not empty at the end: overrun warning first", f(status=S.IN_MAINTENANCE, evacuations_ok=False,
                                                      warned_end_soon=True), END, ("overrun", S.IN_MAINTENANCE, False)),
    ("then the end", f(status=S.IN_MAINTENANCE, evacuations_ok=False, warned_end=True), END,
     ("end", S.RETURNING, False)),
    ("end", f(status=S.IN_MAINTENANCE), END, ("end", S.RETURNING, False)),
    ("warn-only end: done", f(status=S.IN_MAINTENANCE, on_start=OnStartChoices.WARN), END, ("finish", S.DONE, False)),
    ("returning: wait", f(status=S.RETURNING, returns_settled=False), END + M, None),
    ("returned: done", f(status=S.RETURNING), END + 5 * M, ("finish", S.DONE, False)),
    ("returned, a guest stayed: incomplete", f(status=S.RETURNING, returns_ok=False), END + 5 * M,
     ("finish", S.INCOMPLETE, False)),
    ("evacuation left a guest: incomplete", f(status=S.RETURNING, evacuations_ok=False), END + 5 * M,
     ("finish", S.INCOMPLETE, False)),
    ("ran past its end: overran", f(status=S.RETURNING, overran=True, evacuations_ok=False), END + 5 * M,
     ("finish", S.OVERRAN, False)),
    ("done stays done", f(status=S.DONE), END + 60 * M, None),
    ("cancelled stays cancelled", f(status=S.CANCELLED), START, None),
    ("missed stays missed", f(status=S.MISSED), END, None),
]


@pytest.mark.parametrize("case,facts,now,expected", CASES, ids=[c[0] for c in CASES])
def test_next_step(case, facts, now, expected):
    step = L.next_step(facts, now)
    if expected is None:
        assert step is None, step
    else:
        assert (step.name, step.to_status, step.late) == expected
        assert step.from_status == facts.status


def test_a_step_that_keeps_the_status_names_the_flag_its_claim_sets():
    for facts, now in ((f(), START - 30 * M), (f(status=S.EVACUATING, evacuations_settled=False), END - 30 * M)):
        step = L.next_step(facts, now)
        assert step.flag and getattr(facts, step.flag) is False
        assert L.next_step(replace(facts, **{step.flag: True, "status": step.to_status}), now) != step


def test_missed_and_late_say_why_with_the_times():
    assert "2027-03-06 02:00:00 UTC" in L.next_step(f(), END).reason
    assert "instead of 2027-03-06 02:00:00 UTC" in L.next_step(f(), START + 20 * M).reason
