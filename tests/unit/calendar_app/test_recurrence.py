"""Occurrence expansion and the checks of a window's times (pure tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from calendar_app import recurrence


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def starts(start, end, zone, rule, *, exdates=(), days=400):
    return [(s.start, s.end) for s in recurrence.expand(start=start, end=end, zone=zone, rrule_text=rule,
                                                        exdates=exdates, after=start, before=start + timedelta(days=days))]


# (case, first start UTC, length, zone, RRULE, exdates, how many to look at, expected (start, end) UTC)
CASES = [
    ("weekly Saturday 02:00 Berlin keeps 02:00 across spring DST (CET → CEST)",
     utc(2027, 3, 20, 1, 0), timedelta(hours=2), "Europe/Berlin", "FREQ=WEEKLY;BYDAY=SA", (), 2,
     [(utc(2027, 3, 20, 1, 0), utc(2027, 3, 20, 3, 0)), (utc(2027, 3, 27, 1, 0), utc(2027, 3, 27, 3, 0))]),
    ("…and the Saturday after the change is 02:00 CEST = 00:00 UTC",
     utc(2027, 3, 27, 1, 0), timedelta(hours=2), "Europe/Berlin", "FREQ=WEEKLY;BYDAY=SA", (), 2,
     [(utc(2027, 3, 27, 1, 0), utc(2027, 3, 27, 3, 0)), (utc(2027, 4, 3, 0, 0), utc(2027, 4, 3, 2, 0))]),
    ("a night that spans the autumn change lasts its wall-clock 2 h (3 h of real time)",
     utc(2027, 10, 30, 0, 0), timedelta(hours=2), "Europe/Berlin", "FREQ=DAILY", (), 2,
     [(utc(2027, 10, 30, 0, 0), utc(2027, 10, 30, 2, 0)), (utc(2027, 10, 31, 0, 0), utc(2027, 10, 31, 3, 0))]),
    ("first Saturday of the month (BYDAY=1SA), New York, over the March change",
     utc(2027, 2, 6, 7, 0), timedelta(hours=2), "America/New_York", "FREQ=MONTHLY;BYDAY=1SA", (), 3,
     [(utc(2027, 2, 6, 7, 0), utc(2027, 2, 6, 9, 0)), (utc(2027, 3, 6, 7, 0), utc(2027, 3, 6, 9, 0)),
      (utc(2027, 4, 3, 6, 0), utc(2027, 4, 3, 8, 0))]),
    ("last day of the month (BYMONTHDAY=-1) across February",
     utc(2027, 1, 31, 22, 0), timedelta(hours=1), "UTC", "FREQ=MONTHLY;BYMONTHDAY=-1", (), 3,
     [(utc(2027, 1, 31, 22), utc(2027, 1, 31, 23)), (utc(2027, 2, 28, 22), utc(2027, 2, 28, 23)),
      (utc(2027, 3, 31, 22), utc(2027, 3, 31, 23))]),
    ("the 31st skips the months that have none (RFC 5545)",
     utc(2027, 1, 31, 22, 0), timedelta(hours=1), "UTC", "FREQ=MONTHLY;BYMONTHDAY=31", (), 3,
     [(utc(2027, 1, 31, 22), utc(2027, 1, 31, 23)), (utc(2027, 3, 31, 22), utc(2027, 3, 31, 23)),
      (utc(2027, 5, 31, 22), utc(2027, 5, 31, 23))]),
    ("an EXDATE leaves one out",
     utc(2027, 1, 2, 1, 0), timedelta(hours=2), "UTC", "FREQ=WEEKLY", ("2027-01-09T01:00:00+00:00",), 2,
     [(utc(2027, 1, 2, 1), utc(2027, 1, 2, 3)), (utc(2027, 1, 16, 1), utc(2027, 1, 16, 3))]),
    ("COUNT ends the series", utc(2027, 1, 2, 1, 0), timedelta(hours=2), "UTC", "FREQ=WEEKLY;COUNT=2", (), 5,
     [(utc(2027, 1, 2, 1), utc(2027, 1, 2, 3)), (utc(2027, 1, 9, 1), utc(2027, 1, 9, 3))]),
    ("no RRULE: the one window", utc(2027, 1, 2, 1, 0), timedelta(hours=2), "UTC", "", (), 5,
     [(utc(2027, 1, 2, 1), utc(2027, 1, 2, 3))]),
    ("'RRULE:' prefix and lower case are accepted", utc(2027, 1, 2, 1, 0), timedelta(hours=1), "UTC",
     "rrule:freq=weekly;count=1", (), 5, [(utc(2027, 1, 2, 1), utc(2027, 1, 2, 2))]),
]


@pytest.mark.parametrize("case,start,length,zone,rule,exdates,n,expected", CASES, ids=[c[0] for c in CASES])
def test_expansion(case, start, length, zone, rule, exdates, n, expected):
    assert starts(start, start + length, zone, rule, exdates=exdates)[:n] == expected


def test_an_occurrence_in_progress_is_included_and_the_range_is_bounded():
    start = utc(2027, 1, 2, 1, 0)
    found = recurrence.expand(start=start, end=start + timedelta(hours=2), zone="UTC", rrule_text="FREQ=DAILY",
                              after=utc(2027, 1, 5, 2, 0), before=utc(2027, 1, 7, 0, 0))
    assert [s.start for s in found] == [utc(2027, 1, 5, 1), utc(2027, 1, 6, 1)]
    assert len(recurrence.expand(start=start, end=start + timedelta(hours=1), zone="UTC", rrule_text="FREQ=DAILY",
                                 after=start, before=start + timedelta(days=3000), limit=10)) == 10


NOW = utc(2027, 1, 1, 0, 0)
PROBLEMS = [
    ("fine", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "UTC", "", None),
    ("fine, recurring", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "Europe/Berlin", "FREQ=MONTHLY;BYDAY=1SA", None),
    ("end before start", utc(2027, 1, 2, 3), utc(2027, 1, 2, 1), "UTC", "", "end must be after the start"),
    ("in the past", utc(2026, 12, 31, 1), utc(2026, 12, 31, 3), "UTC", "", "starts in the past"),
    ("RRULE that does not parse", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "UTC", "FREQ=WEEKLY;BYDAY=XX",
     "does not parse"),
    ("RRULE with no occurrence", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "UTC",
     "FREQ=WEEKLY;UNTIL=20261201T000000Z", "yields no occurrence"),
    ("hourly", utc(2027, 1, 2, 1), utc(2027, 1, 2, 1, 30), "UTC", "FREQ=HOURLY", "at most one occurrence a day"),
    ("two a day", utc(2027, 1, 2, 1), utc(2027, 1, 2, 2), "UTC", "FREQ=DAILY;BYHOUR=1,13",
     "more than one occurrence on"),
    ("occurrences that overlap", utc(2027, 1, 2, 1), utc(2027, 1, 3, 2), "UTC", "FREQ=DAILY", "overlap"),
    ("another property smuggled in", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "UTC",
     "FREQ=DAILY\nDTSTART:20200101T000000", "only its parts"),
    ("UNTIL not in UTC", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "UTC", "FREQ=DAILY;UNTIL=20270301T000000",
     "UNTIL must be in UTC"),
    ("unknown zone", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "Mars/Olympus", "", "no time zone called"),
    ("a path as zone", utc(2027, 1, 2, 1), utc(2027, 1, 2, 3), "../../etc/passwd", "", "no time zone called"),
    ("too long", utc(2027, 1, 2, 1), utc(2027, 1, 10, 1), "UTC", "", "at most 7 days"),
]


@pytest.mark.parametrize("case,start,end,zone,rule,expected", PROBLEMS, ids=[c[0] for c in PROBLEMS])
def test_problems(case, start, end, zone, rule, expected):
    found = recurrence.problems(start=start, end=end, zone=zone, rrule_text=rule, now=NOW)
    if expected is None:
        assert found == []
    else:
        assert any(expected in message for _, message in found), found


def test_the_next_occurrence_skips_exceptions_and_ones_already_over():
    start = utc(2027, 1, 2, 1, 0)
    kw = dict(start=start, end=start + timedelta(hours=2), zone="UTC", rrule_text="FREQ=DAILY")
    assert recurrence.next_slot(**kw, exdates=[start.isoformat()], now=start - timedelta(hours=1)).start == utc(
        2027, 1, 3, 1)
    assert recurrence.next_slot(**kw, now=utc(2027, 1, 5, 4)).start == utc(2027, 1, 6, 1)
    assert recurrence.next_slot(**kw, now=utc(2027, 1, 5, 2)).start == utc(2027, 1, 5, 1)  # in progress
