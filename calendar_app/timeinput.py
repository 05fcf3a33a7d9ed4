"""Times as people type them: ISO 8601, with an offset or in a named zone (pure)."""

from __future__ import annotations

from datetime import datetime

from .recurrence import RecurrenceError, zone_for

MAX_LEN = 40


class TimeInputError(ValueError):
    pass


def parse_time(text: str, zone: str) -> datetime:
    """``text`` (``2027-03-06T02:00``, ``…Z``, ``…+01:00``) as an aware datetime; without an offset it is in ``zone``."""
    value = (text or "").strip()
    if not value or len(value) > MAX_LEN:
        raise TimeInputError(f"{value[:MAX_LEN]!r} is not a date and time (use 2027-03-06T02:00).")
    try:
        dt = datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        raise TimeInputError(f"{value!r} is not a date and time (use 2027-03-06T02:00).") from None
    if dt.tzinfo is None:
        try:
            dt = dt.replace(tzinfo=zone_for(zone))
        except RecurrenceError as exc:
            raise TimeInputError(str(exc)) from None
    return dt
