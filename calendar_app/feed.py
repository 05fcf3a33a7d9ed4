"""The iCal feed: one VEVENT per window, built with the ``icalendar`` library.

UID is the window's own (stable), SEQUENCE goes up on every change, STATUS follows the window
(CANCELLED; TENTATIVE while at risk; CONFIRMED otherwise). A one-off window has DTSTART/DTEND in
UTC; a recurring one carries its zone (TZID and its VTIMEZONE) with RRULE and EXDATE, because an
RRULE expanded in UTC would move the wall-clock time by an hour across daylight saving time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from icalendar import Calendar, Event, vText

from . import recurrence
from .models import MaintenanceWindow

PRODID = "-//VMPortal//Maintenance calendar//EN"
REFRESH = timedelta(minutes=15)


def _event(window: MaintenanceWindow, *, base_url: str, now: datetime) -> Event:
    ev = Event()
    ev.add("uid", f"{window.uid}@vmportal")
    ev.add("dtstamp", now)
    ev.add("sequence", window.sequence)
    ev.add("summary", window.title)
    hosts = ", ".join(sorted(h.name for h in window.hosts.all()))
    link = f"{base_url}{window.get_absolute_url()}"
    ev.add("description", f"Hosts: {hosts}\nAt the start: {window.get_on_start_display()}\n"
                          f"At the end: {window.get_on_end_display()}\n{link}"
                          + (f"\n\n{window.notes}" if window.notes else ""))
    ev.add("url", link)
    ev.add("categories", ["maintenance"])
    ev.add("status", "CANCELLED" if window.cancelled else "TENTATIVE" if window.accepted_at_risk else "CONFIRMED")
    if window.rrule:
        tz = recurrence.zone_for(window.zone)
        ev.add("dtstart", window.start.astimezone(tz))
        ev.add("dtend", window.end.astimezone(tz))
        ev.add("rrule", vRecur_from(window.rrule))
        for d in window.exdates:
            ev.add("exdate", datetime.fromisoformat(d).astimezone(tz))
    else:
        ev.add("dtstart", window.start.astimezone(UTC))
        ev.add("dtend", window.end.astimezone(UTC))
    return ev


def vRecur_from(value: str):  # noqa: N802 - named after icalendar's type
    from icalendar import vRecur

    return vRecur.from_ical(recurrence.normalise_rrule(value))


def calendar_ics(windows: Iterable[MaintenanceWindow], *, base_url: str, name: str = "VMPortal maintenance",
                 now: datetime | None = None) -> bytes:
    """The feed (or a single window's .ics) as bytes."""
    now = now or datetime.now(UTC)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", vText(name))
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", REFRESH)
    for w in windows:
        cal.add_component(_event(w, base_url=base_url, now=now))
    cal.add_missing_timezones()
    return cal.to_ical()
