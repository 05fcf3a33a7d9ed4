"""When a window's occurrences fall: pure functions over its start, end, zone, RRULE and EXDATEs.

A recurrence is expanded in the window's own zone (the portal's ``TIME_ZONE`` unless the person
chose another), so "every first Saturday 02:00–04:00" stays 02:00–04:00 on the wall clock when
daylight saving time changes; every result is in UTC. The length of an occurrence is the
window's wall-clock length, as iCalendar clients compute it for DTSTART/DTEND with a TZID.
No I/O here; tests/unit/calendar_app/test_recurrence.py holds the tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil.rrule import rrule, rrulestr

# Bounds of what a window may be: one occurrence a day at most, each from a minute to a week.
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=7)
CHECK_SPAN = timedelta(days=366)  # "more than one occurrence per day" is looked for over a year
MAX_EXPANSION = 1000  # occurrences returned by one expansion, at most

_RRULE_RE = re.compile(r"^[A-Z0-9=;,+\-]+$")
_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")


class RecurrenceError(ValueError):
    """An RRULE or zone that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class Slot:
    """One occurrence, in UTC."""

    start: datetime
    end: datetime


def zone_for(name: str) -> ZoneInfo:
    """The zone called ``name``; RecurrenceError when there is none (paths and odd names included)."""
    if not name or len(name) > 64 or name not in _zone_names():
        raise RecurrenceError(f"There is no time zone called {name!r} (use a name such as Europe/Berlin or UTC).")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RecurrenceError(f"There is no time zone called {name!r}.") from exc


_ZONES: frozenset[str] | None = None


def _zone_names() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


def normalise_rrule(text: str) -> str:
    """The RRULE value as stored ("FREQ=…;…"): "RRULE:" prefix and spaces removed, upper case."""
    value = "".join((text or "").split()).upper()
    if value.startswith("RRULE:"):
        value = value[len("RRULE:"):]
    return value


def _rule(value: str, dtstart: datetime) -> rrule:
    if not _RRULE_RE.match(value) or "DTSTART" in value:
        raise RecurrenceError("The RRULE may hold only its parts (FREQ=…;BYDAY=…), no other lines or properties.")
    parts = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    if parts.get("FREQ") not in _FREQS:
        raise RecurrenceError(f"The RRULE needs FREQ set to one of {', '.join(_FREQS)} "
                              "(at most one occurrence a day).")
    if "UNTIL" in parts and not parts["UNTIL"].endswith("Z"):
        raise RecurrenceError("UNTIL must be in UTC, ending in Z (for example UNTIL=20271231T000000Z).")
    try:
        rule = rrulestr(value, dtstart=dtstart, cache=False)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise RecurrenceError(f"The RRULE does not parse: {exc}.") from exc
    if not isinstance(rule, rrule):
        raise RecurrenceError("The RRULE must be a single rule.")
    return rule


def _wall(dt: datetime, tz: ZoneInfo) -> datetime:
    return dt.astimezone(tz).replace(tzinfo=None)


def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    return wall.replace(tzinfo=tz).astimezone(UTC)


def _exdate_set(exdates: Iterable[str | datetime]) -> set[datetime]:
    found = set()
    for d in exdates:
        dt = datetime.fromisoformat(d) if isinstance(d, str) else d
        found.add(dt.astimezone(UTC).replace(microsecond=0))
    return found


def expand(
    *, start: datetime, end: datetime, zone: str, rrule_text: str = "", exdates: Iterable[str | datetime] = (),
    after: datetime, before: datetime, limit: int = MAX_EXPANSION,
) -> list[Slot]:
    """Occurrences that overlap [after, before), in order, at most ``limit`` of them.

    ``start``/``end`` are the first occurrence (aware datetimes); ``exdates`` are starts left out.
    """
    tz = zone_for(zone)
    skip = _exdate_set(exdates)

    def wanted(slot: Slot) -> bool:
        return slot.end > after and slot.start < before and slot.start.replace(microsecond=0) not in skip

    wall_start, wall_length = _wall(start, tz), _wall(end, tz) - _wall(start, tz)
    if not rrule_text:
        slot = Slot(start.astimezone(UTC), end.astimezone(UTC))
        return [slot] if wanted(slot) and limit > 0 else []
    rule = _rule(normalise_rrule(rrule_text), wall_start.replace(tzinfo=tz))
    # Widened by the length so an occurrence in progress at ``after`` is included.
    lo, hi = (after - (end - start) - timedelta(days=1)).astimezone(tz), before.astimezone(tz)
    slots: list[Slot] = []
    for dt in rule.xafter(lo, inc=True):
        if dt >= hi or len(slots) >= limit:
            break
        wall = dt.replace(tzinfo=None)
        slot = Slot(_to_utc(wall, tz), _to_utc(wall + wall_length, tz))
        if wanted(slot):
            slots.append(slot)
    return slots


def next_slot(*, start, end, zone, rrule_text="", exdates=(), now: datetime) -> Slot | None:
    """The first occurrence that has not ended at ``now`` (None when the series is over)."""
    found = expand(start=start, end=end, zone=zone, rrule_text=rrule_text, exdates=exdates, after=now,
                   before=now + CHECK_SPAN * 5, limit=1)
    return found[0] if found else None


def problems(
    *, start: datetime, end: datetime, zone: str, rrule_text: str = "", exdates: Iterable[str | datetime] = (),
    now: datetime,
) -> list[str]:
    """What is wrong with these times, as (field, words) pairs (empty when a window may have them).

    The field is "start", "end", "zone" or "rrule": where a form shows the message."""
    found: list[tuple[str, str]] = []
    try:
        tz = zone_for(zone)
    except RecurrenceError as exc:
        return [("zone", str(exc))]
    if end <= start:
        return [("end", "The end must be after the start.")]
    if end - start < MIN_DURATION:
        found.append(("end", "A window lasts at least a minute."))
    if end - start > MAX_DURATION:
        found.append(("end", "A window lasts at most 7 days."))
    if not rrule_text:
        if start < now:
            found.append(("start", "The window starts in the past; choose a start from now on."))
        return found
    try:
        first = _wall(start, tz).replace(tzinfo=tz)
        rule = _rule(normalise_rrule(rrule_text), first)
    except RecurrenceError as exc:
        return [*found, ("rrule", str(exc))]
    days: set = set()
    first_year = []
    for i, dt in enumerate(rule):
        if i > 400 or dt - first > CHECK_SPAN:
            break
        day = dt.date()
        if day in days:
            found.append(("rrule", f"The RRULE gives more than one occurrence on {day.isoformat()}; a window "
                                   "occurs at most once a day."))
            break
        days.add(day)
        first_year.append(dt)
    wall_length = _wall(end, tz) - _wall(start, tz)
    for a, b in zip(first_year, first_year[1:]):
        if a.replace(tzinfo=None) + wall_length > b.replace(tzinfo=None):
            found.append(("rrule", f"Occurrences overlap: the one of {a.date().isoformat()} lasts into the next one."))
            break
    if next_slot(start=start, end=end, zone=zone, rrule_text=rrule_text, exdates=exdates, now=now) is None:
        found.append(("rrule", "The RRULE (with its exceptions) yields no occurrence from now on."))
    return found
