"""Windows and occurrences as plain dicts: the calendar's events, the CLI's --json."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from . import recurrence
from .choices import OccurrenceStatusChoices as S
from .models import MaintenanceWindow, WindowOccurrence

# Status colours of the calendar (and its legend): distinguishable, with text that stays readable.
STATUS_COLOURS = {
    S.SCHEDULED: "#2563eb", S.PREPARING: "#7c3aed", S.EVACUATING: "#d97706", S.IN_MAINTENANCE: "#b45309",
    S.RETURNING: "#0891b2", S.DONE: "#15803d", S.MISSED: "#6b7280", S.INCOMPLETE: "#be123c",
    S.OVERRAN: "#991b1b", S.CANCELLED: "#9ca3af",
}
AT_RISK_COLOUR = "#dc2626"


def legend() -> list[dict]:
    return [{"status": s.value, "label": s.label, "colour": STATUS_COLOURS[s]} for s in S] + [
        {"status": "at_risk", "label": "At risk (border)", "colour": AT_RISK_COLOUR}]


def with_occurrences(windows: QuerySet, after: datetime, before: datetime) -> QuerySet:
    """``windows`` with their hosts and their stored occurrences overlapping [after, before), each
    read in one query for all the windows (what occurrences_between reads per window otherwise)."""
    overlapping = WindowOccurrence.objects.filter(start__lt=before, end__gt=after)
    return windows.prefetch_related("hosts", Prefetch("occurrences", queryset=overlapping,
                                                      to_attr="occurrences_overlapping"))


def occurrences_between(window: MaintenanceWindow, after: datetime, before: datetime,
                        limit: int = 200) -> list[dict]:
    """The window's occurrences overlapping [after, before): stored ones with their status, the rest expanded."""
    rows = getattr(window, "occurrences_overlapping", None)  # read ahead by with_occurrences
    if rows is None:
        rows = window.occurrences.filter(start__lt=before, end__gt=after)
    # The rows read ahead may cover a wider range than this call's.
    stored = {o.start: o for o in rows if o.start < before and o.end > after}
    found = []
    for slot in recurrence.expand(start=window.start, end=window.end, zone=window.zone, rrule_text=window.rrule,
                                  exdates=window.exdates, after=after, before=before, limit=limit):
        occ = stored.pop(slot.start, None)
        found.append(_occurrence(window, slot.start, slot.end, occ))
    # Stored occurrences no longer in the series (they ran before a change) stay visible.
    found += [_occurrence(window, o.start, o.end, o) for o in stored.values()]
    return sorted(found, key=lambda d: d["start"])


def _occurrence(window: MaintenanceWindow, start: datetime, end: datetime, occ: WindowOccurrence | None) -> dict:
    status = occ.status if occ else (S.CANCELLED if window.cancelled else S.SCHEDULED)
    return {
        "window": window.pk, "occurrence": occ.pk if occ else None, "title": window.title,
        "start": start.isoformat(), "end": end.isoformat(), "status": status, "status_label": S(status).label,
        "when": when_label(start, end),
        "at_risk": bool(occ and occ.at_risk) or window.accepted_at_risk, "started_late": bool(occ and occ.started_late),
        "hosts": sorted(h.name for h in window.hosts.all()), "url": window.get_absolute_url(),
        "recurring": bool(window.rrule),
        "editable": occ is None and not window.rrule and not window.cancelled and start > timezone.now(),
    }


def when_label(start: datetime, end: datetime) -> str:
    """"2027-03-06 02:00 – 04:00 CET" in the zone active for this request (each person's own)."""
    a, b = timezone.localtime(start), timezone.localtime(end)
    return f"{a:%Y-%m-%d %H:%M} – " + (f"{b:%H:%M}" if a.date() == b.date() else f"{b:%Y-%m-%d %H:%M}") + f" {b:%Z}"


def wall_clock(iso: str, zone) -> str:
    """An aware ISO time as the wall-clock time in ``zone``, without offset (FullCalendar shows it as given)."""
    return datetime.fromisoformat(iso).astimezone(zone).replace(tzinfo=None).isoformat()


def calendar_event(o: dict, zone) -> dict:
    """One FullCalendar event in ``zone``'s wall-clock time (its title is text: set with textContent)."""
    colour = STATUS_COLOURS[o["status"]]
    return {
        "id": f"{o['window']}-{o['start']}", "title": f"{o['title']} · {', '.join(o['hosts'])}",
        "start": wall_clock(o["start"], zone), "end": wall_clock(o["end"], zone), "url": o["url"], "backgroundColor": colour,
        "borderColor": AT_RISK_COLOUR if o["at_risk"] else colour, "editable": o["editable"],
        "textColor": "#111827" if o["status"] == S.CANCELLED else "#ffffff",
        "classNames": [f"status-{o['status']}"] + (["at-risk"] if o["at_risk"] else []),
        "extendedProps": {"window": o["window"], "status": o["status"], "statusLabel": o["status_label"],
                          "hosts": o["hosts"], "atRisk": o["at_risk"]},
    }


def window_dict(window: MaintenanceWindow, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    nxt = recurrence.next_slot(start=window.start, end=window.end, zone=window.zone, rrule_text=window.rrule,
                               exdates=window.exdates, now=now)
    return {
        "id": window.pk, "uid": str(window.uid), "title": window.title,
        "hosts": sorted(h.name for h in window.hosts.all()), "start": window.start.isoformat(),
        "end": window.end.isoformat(), "zone": window.zone, "rrule": window.rrule, "exdates": window.exdates,
        "cutoff_minutes": window.cutoff_minutes, "on_start": window.on_start, "on_end": window.on_end,
        "sequence": window.sequence, "cancelled": window.cancelled, "at_risk": window.accepted_at_risk,
        "next": {"start": nxt.start.isoformat(), "end": nxt.end.isoformat()} if nxt and not window.cancelled else None,
        "occurrences": [occurrence_dict(o) for o in window.occurrences.all()],
    }


def occurrence_dict(o: WindowOccurrence) -> dict:
    return {"id": o.pk, "start": o.start.isoformat(), "end": o.end.isoformat(), "status": o.status,
            "started_late": o.started_late, "at_risk": o.at_risk, "overran": o.overran, "outcome": o.outcome,
            "warnings": o.warnings,
            "evacuations": [{"host": r.host.name, "evacuation": r.evacuation_id, "return": r.return_run_id,
                             "note": r.note} for r in o.runs.select_related("host")]}


def near(after: datetime, hours: int = 24) -> tuple[datetime, datetime]:
    return after, after + timedelta(hours=hours)
