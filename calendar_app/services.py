"""What a person (or a script) asks of the maintenance calendar: create, move or change a
window, cancel it, and the iCal feed's tokens.

Each write runs in one transaction with its audit row; bad input is refused (audited) with
``ServiceRefused`` listing every problem, and nothing is saved. The tick (ticker.py) runs the
windows; it writes through ``occurrence_warn`` here and its own compare-and-set claims.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from hosts.models import Host, VirtualMachine
from maintenance import planning
from migrations_app.services.refusals import ServiceRefused, refuse

from . import conflicts, recurrence
from .choices import (
    OCCURRENCE_WAITING_STATES,
    OccurrenceStatusChoices as S,
    OnEndChoices,
    OnStartChoices,
    WindowAuditActionChoices as A,
)
from .models import NOTES_MAX, TITLE_MAX, CalendarFeedToken, CalendarPreference, MaintenanceWindow, WindowOccurrence

__all__ = ["ServiceRefused", "WindowSpec", "window_create", "window_update", "window_cancel", "window_problems",
           "feed_token_create", "feed_token_revoke", "feed_token_user", "occurrence_warn", "user_zone_set", "user_zone"]

MAX_CUTOFF_MINUTES = 7 * 24 * 60
MAX_HOSTS = 50
MAX_EXDATES = 100
CONFLICT_HORIZON = timedelta(days=92)  # overlaps with other windows are looked for this far ahead
_MARKUP_RE = re.compile(r"[<>]|&[#a-zA-Z0-9]+;")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class WindowSpec:
    """A window as asked for; times are aware datetimes (any zone), ``zone`` the recurrence's zone."""

    title: str
    hosts: Sequence[Host]
    start: datetime
    end: datetime
    zone: str = field(default_factory=lambda: settings.TIME_ZONE)
    rrule: str = ""
    exdates: Sequence[str] = ()
    cutoff_minutes: int = 30
    on_start: str = OnStartChoices.EVACUATE
    on_end: str = OnEndChoices.RETURN
    notes: str = ""


def window_problems(spec: WindowSpec, *, now: datetime | None = None) -> dict[str, list[str]]:
    """What is wrong with ``spec``, by field ("title", "hosts", "start", "rrule", …); empty when fine."""
    now = now or timezone.now()
    found: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        found.setdefault(name, []).append(message)

    title = spec.title.strip()
    if not title:
        add("title", "Give the window a title.")
    elif len(title) > TITLE_MAX:
        add("title", f"The title is at most {TITLE_MAX} characters.")
    elif _MARKUP_RE.search(title) or _CONTROL_RE.search(title):
        add("title", "The title may not contain markup (<, >, &…;) or control characters.")
    if len(spec.exdates) > MAX_EXDATES:
        add("exdates", f"At most {MAX_EXDATES} exceptions.")
    if len(spec.notes) > NOTES_MAX:
        add("notes", f"The notes are at most {NOTES_MAX} characters.")
    if not spec.hosts:
        add("hosts", "Choose at least one host.")
    elif len(spec.hosts) > MAX_HOSTS:
        add("hosts", f"At most {MAX_HOSTS} hosts per window.")
    if spec.on_start not in OnStartChoices.values:
        add("on_start", f"At the start: one of {', '.join(OnStartChoices.values)}.")
    if spec.on_end not in OnEndChoices.values:
        add("on_end", f"At the end: one of {', '.join(OnEndChoices.values)}.")
    if spec.start.tzinfo is None or spec.end.tzinfo is None:
        add("start", "Times must carry their zone.")
        return found
    if not 0 <= spec.cutoff_minutes <= MAX_CUTOFF_MINUTES:
        add("cutoff_minutes", f"The cutoff is between 0 and {MAX_CUTOFF_MINUTES} minutes.")
    elif spec.end > spec.start and timedelta(minutes=spec.cutoff_minutes) >= spec.end - spec.start:
        add("cutoff_minutes", "The cutoff must fall after the start: make it shorter than the window.")
    exdates = []
    for d in spec.exdates:
        try:
            dt = datetime.fromisoformat(d)
        except (TypeError, ValueError):
            add("exdates", f"{str(d)[:40]!r} is not a date and time to leave out.")
            continue
        if dt.tzinfo is None:
            add("exdates", f"{d} needs its offset (or Z).")
        exdates.append(d)
    if "exdates" in found:
        return found
    for name, message in recurrence.problems(start=spec.start, end=spec.end, zone=spec.zone, rrule_text=spec.rrule,
                                             exdates=exdates, now=now):
        add(name, message)
    if exdates and not found:
        if not spec.rrule:
            add("exdates", "Only a repeating window has exceptions.")
        for d in exdates:
            at = datetime.fromisoformat(d).astimezone(UTC)
            near = recurrence.expand(start=spec.start, end=spec.end, zone=spec.zone, rrule_text=spec.rrule,
                                     after=at, before=at + timedelta(seconds=1), limit=1)
            if not near or near[0].start != at:
                add("exdates", f"{d} is not the start of an occurrence of this window.")
    return found


def _exdates_utc(spec: WindowSpec) -> list[str]:
    return [datetime.fromisoformat(d).astimezone(UTC).isoformat() for d in spec.exdates]


def _refuse_problems(*, actor: Actor, action: str, target, problems: dict[str, list[str]], parameters: dict):
    lines = [m for messages in problems.values() for m in messages]
    exc_message = " ".join(lines)
    try:
        refuse(actor=actor, action=action, target=target, parameters=parameters, message=exc_message,
               hint="Correct the window and save again.")
    except ServiceRefused as exc:
        exc.problems = problems  # the form shows each message at its field
        raise


def _parameters(spec: WindowSpec) -> dict:
    return {"title": spec.title, "hosts": [h.name for h in spec.hosts], "start": spec.start.isoformat(),
            "end": spec.end.isoformat(), "zone": spec.zone, "rrule": spec.rrule, "exdates": list(spec.exdates),
            "cutoff_minutes": spec.cutoff_minutes, "on_start": spec.on_start, "on_end": spec.on_end}


def _busy_spans(spec: WindowSpec, *, now: datetime, exclude_pk: int | None) -> tuple[conflicts.Busy, list]:
    horizon = now + CONFLICT_HORIZON
    mine = recurrence.expand(start=spec.start, end=spec.end, zone=spec.zone, rrule_text=spec.rrule,
                             exdates=spec.exdates, after=now, before=horizon, limit=100)
    others = []
    for w in MaintenanceWindow.objects.filter(cancelled=False).exclude(pk=exclude_pk).prefetch_related("hosts"):
        names = frozenset(h.name for h in w.hosts.all())
        for slot in recurrence.expand(start=w.start, end=w.end, zone=w.zone, rrule_text=w.rrule, exdates=w.exdates,
                                      after=now, before=horizon, limit=100):
            others.append(conflicts.Busy(slot.start, slot.end, names))
    names = frozenset(h.name for h in spec.hosts)
    return [conflicts.Busy(s.start, s.end, names) for s in mine], others


def capacity_conflicts(spec: WindowSpec, *, now: datetime | None = None,
                       exclude_pk: int | None = None) -> list[conflicts.CapacityVerdict]:
    """Each set of hosts (two or more) this window would have in maintenance at once whose guests do not fit."""
    now = now or timezone.now()
    mine, others = _busy_spans(spec, now=now, exclude_pk=exclude_pk)
    sets: set[frozenset[str]] = set()
    for busy in mine:
        sets.update(s for s in conflicts.hosts_down_together(busy, others) if len(s) > 1)
    if not sets:
        return []
    hosts = list(Host.objects.select_related("facts", "budget").order_by("name"))
    committed = planning.committed_by_host([h.pk for h in hosts])
    capacities = [planning.host_capacity(h, committed=committed.get(h.pk, planning.Committed())) for h in hosts]
    by_id = {h.pk: h.name for h in hosts}
    guests: dict[str, list] = {}
    down_all = set().union(*sets)
    for vm in VirtualMachine.objects.filter(host__name__in=down_all).prefetch_related("disks"):
        guests.setdefault(by_id[vm.host_id], []).append(planning.guest_needs(vm))
    verdicts = [conflicts.capacity_check(down=s, guests=guests, hosts=capacities) for s in sorted(sets, key=sorted)]
    return [v for v in verdicts if not v.ok]


def _check(spec: WindowSpec, *, actor: Actor, action: str, target, confirm_at_risk: bool,
           exclude_pk: int | None = None) -> bool:
    """Refuse bad input or an unconfirmed capacity conflict; True when the window is accepted at risk."""
    parameters = _parameters(spec)
    problems = window_problems(spec)
    if problems:
        _refuse_problems(actor=actor, action=action, target=target, problems=problems, parameters=parameters)
    shortfalls = capacity_conflicts(spec, exclude_pk=exclude_pk)
    if shortfalls and not confirm_at_risk:
        _refuse_problems(actor=actor, action=action, target=target, parameters=parameters, problems={
            "hosts": [v.summary() for v in shortfalls] + [
                "Move the window, choose other hosts, or confirm it as at risk."]})
    return bool(shortfalls)


def window_create(*, spec: WindowSpec, actor: Actor, confirm_at_risk: bool = False) -> MaintenanceWindow:
    """Create a maintenance window (audited); the tick runs its occurrences."""
    at_risk = _check(spec, actor=actor, action=A.CREATE, target=None, confirm_at_risk=confirm_at_risk)
    with transaction.atomic():
        window = MaintenanceWindow.objects.create(
            title=spec.title.strip(), start=spec.start, end=spec.end, zone=spec.zone,
            rrule=recurrence.normalise_rrule(spec.rrule), exdates=_exdates_utc(spec),
            cutoff_minutes=spec.cutoff_minutes, on_start=spec.on_start, on_end=spec.on_end, notes=spec.notes,
            accepted_at_risk=at_risk, created_by=actor.user, created_by_label=actor.label,
        )
        window.hosts.set(spec.hosts)
        audit_record(actor=actor, action=A.CREATE, result=AuditResultChoices.OK, target=window,
                     parameters=_parameters(spec) | {"at_risk": at_risk},
                     message=f"Maintenance window {window.title!r} on {', '.join(h.name for h in spec.hosts)} "
                             f"from {spec.start:%Y-%m-%d %H:%M %Z}" + (" (accepted at risk)" if at_risk else "") + ".")
        _changed(window)
    return window


def _started(window: MaintenanceWindow) -> bool:
    return window.occurrences.exclude(status__in=(*OCCURRENCE_WAITING_STATES, S.CANCELLED)).exists()


def window_update(*, window: MaintenanceWindow, spec: WindowSpec, actor: Actor,
                  confirm_at_risk: bool = False) -> MaintenanceWindow:
    """Move, resize or change a window that has not started yet (the calendar's drag goes here too)."""
    if window.cancelled:
        refuse(actor=actor, action=A.UPDATE, target=window, parameters=_parameters(spec),
               message=f"{window} is cancelled.", hint="Create a new window.")
    if _started(window):
        refuse(actor=actor, action=A.UPDATE, target=window, parameters=_parameters(spec),
               message=f"{window} has already started; a window that ran cannot be moved.",
               hint="Create a new window for the next time.")
    at_risk = _check(spec, actor=actor, action=A.UPDATE, target=window, confirm_at_risk=confirm_at_risk,
                     exclude_pk=window.pk)
    with transaction.atomic():
        w = MaintenanceWindow.objects.select_for_update().get(pk=window.pk)
        if _started(w):  # started between the check and now: the tick won
            refuse(actor=actor, action=A.UPDATE, target=window, parameters=_parameters(spec),
                   message=f"{window} started just now; it cannot be moved.")
        w.title, w.start, w.end, w.zone = spec.title.strip(), spec.start, spec.end, spec.zone
        w.rrule, w.exdates = recurrence.normalise_rrule(spec.rrule), _exdates_utc(spec)
        w.cutoff_minutes, w.on_start, w.on_end, w.notes = spec.cutoff_minutes, spec.on_start, spec.on_end, spec.notes
        w.accepted_at_risk = at_risk
        w.sequence += 1
        w.save()
        w.hosts.set(spec.hosts)
        # Occurrences not started are made again from the new times by the tick.
        w.occurrences.filter(status__in=OCCURRENCE_WAITING_STATES).delete()
        audit_record(actor=actor, action=A.UPDATE, result=AuditResultChoices.OK, target=w,
                     parameters=_parameters(spec) | {"sequence": w.sequence, "at_risk": at_risk},
                     message=f"{w} now from {spec.start:%Y-%m-%d %H:%M %Z} to {spec.end:%Y-%m-%d %H:%M %Z}.")
        _changed(w)
    return w


def window_cancel(*, window: MaintenanceWindow, actor: Actor) -> MaintenanceWindow:
    """Cancel a window: occurrences not started are cancelled; one in progress runs to its end."""
    if window.cancelled:
        refuse(actor=actor, action=A.CANCEL, target=window, parameters={}, message=f"{window} is already cancelled.")
    with transaction.atomic():
        w = MaintenanceWindow.objects.select_for_update().get(pk=window.pk)
        w.cancelled = True
        w.sequence += 1
        w.save(update_fields=["cancelled", "sequence"])
        n = w.occurrences.filter(status__in=OCCURRENCE_WAITING_STATES).update(status=S.CANCELLED)
        running = w.occurrences.exclude(status__in=(*OCCURRENCE_WAITING_STATES, S.CANCELLED)).filter(
            ended_at__isnull=True).count()
        audit_record(actor=actor, action=A.CANCEL, result=AuditResultChoices.OK, target=w,
                     parameters={"sequence": w.sequence, "occurrences_cancelled": n},
                     message=f"{w} cancelled" + (f"; {running} occurrence in progress runs to its end." if running
                                                 else "."))
        _changed(w)
    return w


def _changed(window: MaintenanceWindow) -> None:
    broadcast.inventory_changed()


# --- Warnings of the tick -------------------------------------------------------------------------


def occurrence_warn(*, occurrence: WindowOccurrence, kind: str, message: str, live: bool = True,
                    at_risk: bool = False, actor: Actor | None = None) -> None:
    """Add a warning to an occurrence (its page, the calendar, the banner), audit it and, if ``live``, tell every page."""
    actor = actor or Actor.system()
    with transaction.atomic():
        occ = WindowOccurrence.objects.select_for_update().select_related("window").get(pk=occurrence.pk)
        occ.warnings = [*occ.warnings, {"at": timezone.now().isoformat(), "kind": kind, "message": message}]
        occ.at_risk = occ.at_risk or at_risk
        occ.save(update_fields=["warnings", "at_risk"])
        audit_record(actor=actor, action=A.WARNING, result=AuditResultChoices.FAILED, target=occ.window,
                     parameters={"occurrence": occ.pk, "kind": kind}, message=message)
        if live:
            broadcast.warning_announced(title=occ.window.title, message=message,
                                        url=occ.window.get_absolute_url(), kind=kind)
        broadcast.inventory_changed()


# --- The feed's tokens ------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def feed_token_create(*, actor: Actor) -> str:
    """A new feed token for the acting user (shown once; only its SHA-256 is kept)."""
    if actor.user is None:
        raise ServiceRefused("Only a signed-in user has a calendar feed.")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        row = CalendarFeedToken.objects.create(user=actor.user, digest=_digest(token))
        audit_record(actor=actor, action=A.FEED_TOKEN, result=AuditResultChoices.OK, target=row,
                     parameters={"created": True}, message=f"Calendar feed token #{row.pk} created.")
    return token


def feed_token_revoke(*, token: CalendarFeedToken, actor: Actor) -> None:
    """Revoke a feed token: calendars using it get 403 from now on."""
    with transaction.atomic():
        n = CalendarFeedToken.objects.filter(pk=token.pk, user=actor.user, revoked__isnull=True).update(
            revoked=timezone.now())
        if n:
            audit_record(actor=actor, action=A.FEED_TOKEN, result=AuditResultChoices.OK, target=token,
                         parameters={"revoked": True}, message=f"Calendar feed token #{token.pk} revoked.")


def feed_token_user(token: str):
    """The active user a feed token belongs to, or None (unknown, revoked, or the user is inactive)."""
    if not token or len(token) > 200:
        return None
    row = (CalendarFeedToken.objects.select_related("user")
           .filter(digest=_digest(token), revoked__isnull=True).first())
    if row is None or not row.user.is_active:
        return None
    CalendarFeedToken.objects.filter(pk=row.pk).update(last_used=timezone.now())
    return row.user


# --- Each person's zone ---------------------------------------------------------------------------


def user_zone(user) -> str:
    """The zone ``user`` sees times in: their choice, else the portal's TIME_ZONE."""
    if user is None or not getattr(user, "is_authenticated", False):
        return settings.TIME_ZONE
    row = CalendarPreference.objects.filter(user=user).values_list("zone", flat=True).first()
    return row or settings.TIME_ZONE


def user_zone_set(*, actor: Actor, zone: str) -> str:
    """Choose the zone the acting user sees and enters times in (audited); refused for a zone that does not exist."""
    zone = (zone or "").strip()
    try:
        recurrence.zone_for(zone)
    except recurrence.RecurrenceError as exc:
        refuse(actor=actor, action=A.ZONE, target=None, parameters={"zone": zone[:64]}, message=str(exc))
    if actor.user is None:
        raise ServiceRefused("Only a signed-in user chooses a zone.")
    with transaction.atomic():
        CalendarPreference.objects.update_or_create(user=actor.user, defaults={"zone": zone})
        audit_record(actor=actor, action=A.ZONE, result=AuditResultChoices.OK, target=None,
                     parameters={"zone": zone}, message=f"{actor.label} sees times in {zone}.")
    return zone
