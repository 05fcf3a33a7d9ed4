"""The calendar's tick: make the occurrences that are near, and take each one's due step once.

``calendar_tick(now=…)`` runs from the ``watch_hosts`` loop (registered in apps.py, at its start
and every ``VMPORTAL_CALENDAR_TICK_SECONDS``), and tests call it directly with the time they
drive. Each step is claimed with one conditional UPDATE of the occurrence (its status, and the
flag of a step that keeps the status): of several processes ticking at once exactly one wins
the row, the others see 0 rows changed and move on. No lock is held across the work.

Steps that need the hosts (the dry run, the start: a plan asks every host) run as jobs; steps
that only touch records (cutoff, warnings, the end: exit maintenance) run here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from maintenance import services as maintenance_services
from maintenance.choices import EVACUATION_TERMINAL_STATES, EvacuationStatusChoices as ES, ItemStatusChoices as IS
from maintenance.models import Evacuation
from migrations_app.services.refusals import ServiceRefused

from . import lifecycle, recurrence
from .choices import (
    OCCURRENCE_TERMINAL_STATES,
    OnEndChoices,
    OnStartChoices,
    OccurrenceStatusChoices as S,
    WindowAuditActionChoices as A,
    WindowJobKindChoices,
)
from .models import MaintenanceWindow, OccurrenceHostRun, WindowOccurrence
from .services import occurrence_warn

log = logging.getLogger(__name__)

LOOKBACK = timedelta(days=7)  # occurrences missed while the portal was down are recorded this far back
STEP_JOB = "calendar_app.jobs.occurrence_step_job"
STEP_JOB_TIMEOUT_S = 900
MAX_STEPS_PER_TICK = 6  # one occurrence may take several steps in a row (a late start after a dry run…)


def _check_lead() -> timedelta:
    return timedelta(minutes=settings.VMPORTAL_CALENDAR_CHECK_MINUTES)


def materialise(now: datetime) -> int:
    """Create the occurrence rows that start before now + the dry run's lead (and are not over). Returns how many."""
    made = 0
    ahead = now + _check_lead() + timedelta(minutes=1)
    windows = MaintenanceWindow.objects.filter(cancelled=False, start__lt=ahead).filter(
        Q(end__gt=now - LOOKBACK) | ~Q(rrule=""))
    for w in windows:
        slots = recurrence.expand(start=w.start, end=w.end, zone=w.zone, rrule_text=w.rrule, exdates=w.exdates,
                                  after=max(now - LOOKBACK, w.created - timedelta(minutes=1)), before=ahead,
                                  limit=20)
        for slot in slots:
            try:
                with transaction.atomic():
                    _, created = WindowOccurrence.objects.get_or_create(
                        window=w, start=slot.start, defaults={"end": slot.end})
            except IntegrityError:  # another process made it first
                created = False
            made += created
    return made


def facts_for(occ: WindowOccurrence) -> lifecycle.OccurrenceFacts:
    """What the state machine needs to know of ``occ`` and its evacuations, from the records."""
    w = occ.window
    runs = list(occ.runs.select_related("evacuation", "return_run"))
    evacs = [r.evacuation for r in runs if r.evacuation is not None]
    returns = [r.return_run for r in runs if r.return_run is not None]
    noted = any(r.note for r in runs)  # a host whose start was refused or failed
    # The start's job is still entering maintenance (a run row, no evacuation or note yet).
    entering = (occ.status == S.EVACUATING and (not runs or any(r.evacuation is None and not r.note for r in runs))
                and not _start_gave_up(occ))
    return lifecycle.OccurrenceFacts(
        status=occ.status, start=occ.start, end=occ.end,
        cutoff_at=max(occ.start, occ.end - timedelta(minutes=w.cutoff_minutes)),
        check_at=occ.start - _check_lead(), on_start=w.on_start,
        checked=occ.checked, cut_off=occ.cut_off, warned_end_soon=occ.warned_end_soon, warned_end=occ.warned_end,
        overran=occ.overran,
        evacuations_settled=not entering and all(_settled(e) for e in evacs),
        evacuations_ok=all(e.status == ES.SUCCEEDED for e in evacs) and not noted,
        returns_settled=all(e.is_terminal for e in returns),
        returns_ok=all(e.status == ES.SUCCEEDED for e in returns),
        late_grace=timedelta(seconds=settings.VMPORTAL_CALENDAR_LATE_START_SECONDS),
    )


def _settled(ev: Evacuation) -> bool:
    """Ended, or paused by the cutoff with nothing running any more."""
    if ev.status in EVACUATION_TERMINAL_STATES:
        return True
    return ev.status == ES.PAUSED and not ev.items.filter(status=IS.RUNNING).exists()


def _start_gave_up(occ: WindowOccurrence) -> bool:
    # The start's job died before recording anything: after its timeout the occurrence moves on.
    return occ.step_claimed_at is not None and timezone.now() - occ.step_claimed_at > timedelta(
        seconds=STEP_JOB_TIMEOUT_S)


def claim(occ: WindowOccurrence, step: lifecycle.Step, now: datetime) -> bool:
    """The compare-and-set: move ``occ`` from the step's status (and flag unset) to its new one. True if won."""
    match = {"pk": occ.pk, "status": step.from_status}
    changes: dict = {"status": step.to_status}
    if step.flag:
        match[step.flag] = False
        changes[step.flag] = True
    if step.name == lifecycle.START:
        changes.update(started_at=now, started_late=step.late, step_claimed_at=timezone.now())
    if step.to_status in OCCURRENCE_TERMINAL_STATES:
        changes["ended_at"] = now  # a finish records when its last run ended (_finish)
    return WindowOccurrence.objects.filter(**match).update(**changes) == 1


def _audit_step(occ: WindowOccurrence, step: lifecycle.Step, message: str, ok: bool = True) -> None:
    audit_record(actor=Actor.system(), action=A.STEP, result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED,
                 target=occ.window, parameters={"occurrence": occ.pk, "step": step.name, "status": step.to_status,
                                                "late": step.late},
                 message=message)


def _evacuations(occ: WindowOccurrence) -> list[Evacuation]:
    return [r.evacuation for r in occ.runs.select_related("evacuation") if r.evacuation is not None]


def _hosts(occ: WindowOccurrence) -> str:
    return ", ".join(h.name for h in occ.window.hosts.order_by("name"))


def apply(occ: WindowOccurrence, step: lifecycle.Step, now: datetime) -> None:
    """Do what ``step`` means, once its claim was won."""
    name = step.name
    if name == lifecycle.START and occ.window.on_start == OnStartChoices.WARN:
        with transaction.atomic():
            _audit_step(occ, step, f"{occ} starts on {_hosts(occ)}: only a warning, nothing moves.")
        occurrence_warn(occurrence=occ, kind="start-warning", message=(
            f"The window starts now on {_hosts(occ)} (only a warning: the hosts are not put into maintenance)."))
        return
    if name in (lifecycle.CHECK, lifecycle.START):
        with transaction.atomic():
            if name == lifecycle.START:
                _audit_step(occ, step, step.reason or f"{occ} starts: {_hosts(occ)} enter maintenance.")
            job_enqueue(kind=WindowJobKindChoices.STEP, func=STEP_JOB, args=(occ.pk, name), target=occ.window,
                        timeout_s=STEP_JOB_TIMEOUT_S, actor=Actor.system())
        if step.late:
            occurrence_warn(occurrence=occ, kind="late-start", message=step.reason)
        return
    if name == lifecycle.MISS:
        with transaction.atomic():
            WindowOccurrence.objects.filter(pk=occ.pk).update(outcome=step.reason)
            _audit_step(occ, step, f"{occ} missed. {step.reason}", ok=False)
        occurrence_warn(occurrence=occ, kind="missed", message=step.reason)
        return
    if name == lifecycle.CUTOFF:
        paused = []
        for ev in _evacuations(occ):
            if ev.status == ES.RUNNING:
                try:
                    maintenance_services.evacuation_pause(evacuation=ev, actor=Actor.system())
                    paused.append(ev.host.name)
                except ServiceRefused:
                    pass  # it ended meanwhile
        if paused:
            occurrence_warn(occurrence=occ, kind="at-risk", at_risk=True, message=(
                f"Cutoff reached: the evacuation of {', '.join(paused)} finishes what runs and starts no more "
                "guests; the window is at risk."))
        return
    if name == lifecycle.END_SOON_WARNING:
        occurrence_warn(occurrence=occ, kind="overrun-risk", at_risk=True, message=(
            f"Ends at {occ.end:%H:%M} UTC and {_hosts(occ)} is {step.reason}: the window may overrun."))
        return
    if name == lifecycle.OVERRUN_WARNING:
        if step.reason.startswith("still being emptied"):
            WindowOccurrence.objects.filter(pk=occ.pk).update(overran=True)
        occurrence_warn(occurrence=occ, kind="overrun", at_risk=True, message=(
            f"Overrun: the window ended at {occ.end:%H:%M} UTC and {_hosts(occ)} is {step.reason}."))
        return
    if name == lifecycle.EVACUATED:
        evacs = _evacuations(occ)
        with transaction.atomic():
            _audit_step(occ, step, f"{occ}: in maintenance; " + ("; ".join(e.outcome for e in evacs if e.outcome)
                                                                 or "nothing was moved."))
        return
    if name == lifecycle.END:
        _end(occ, step)
        return
    if name == lifecycle.FINISH:
        _finish(occ, step, now)


def _end(occ: WindowOccurrence, step: lifecycle.Step) -> None:
    """Exit maintenance on every host of the occurrence, bringing guests home unless told to leave them."""
    actor = Actor.system()
    bring_back = occ.window.on_end == OnEndChoices.RETURN
    for run in occ.runs.select_related("host", "evacuation"):
        ev = run.evacuation
        try:
            if ev is not None and ev.is_active:
                # Paused at the cutoff with nothing running: what did not start never will.
                maintenance_services.evacuation_cancel(evacuation=ev, actor=actor)
            host = type(run.host).objects.get(pk=run.host_id)
            back = None
            if host.in_maintenance:
                back = maintenance_services.maintenance_exit(host=host, actor=actor, bring_back=bring_back)
            OccurrenceHostRun.objects.filter(pk=run.pk).update(return_run=back, exited=True)
        except ServiceRefused as exc:
            OccurrenceHostRun.objects.filter(pk=run.pk).update(note=f"{run.note} Exit refused: {exc.message}".strip())
            occurrence_warn(occurrence=occ, kind="exit-refused", message=f"{run.host.name}: {exc.message} {exc.hint}")
    with transaction.atomic():
        _audit_step(occ, step, f"{occ} ends: {_hosts(occ)} exit maintenance"
                    + ("; guests come home." if bring_back else ", guests stay where they are."))


def _finish(occ: WindowOccurrence, step: lifecycle.Step, now: datetime) -> None:
    runs = list(occ.runs.select_related("host", "evacuation", "return_run"))
    lines = []
    for r in runs:
        parts = [p for p in (r.note, r.evacuation.outcome if r.evacuation else "",
                             r.return_run.outcome if r.return_run else "") if p]
        lines.append(f"{r.host.name}: " + (" ".join(parts) or "nothing to move."))
    ended = max([now, *[e.ended for r in runs for e in (r.evacuation, r.return_run) if e is not None and e.ended]])
    outcome = " ".join(lines) or "Only a warning: nothing was moved."
    with transaction.atomic():
        WindowOccurrence.objects.filter(pk=occ.pk).update(outcome=outcome, ended_at=ended)
        _audit_step(occ, step, f"{occ}: {S(step.to_status).label.lower()}. {outcome}",
                    ok=step.to_status == S.DONE)


def occurrence_advance(occ: WindowOccurrence, now: datetime) -> list[str]:
    """Take every step due now for ``occ`` (each claimed once). Returns the step names this call took."""
    taken = []
    for _ in range(MAX_STEPS_PER_TICK):
        occ = WindowOccurrence.objects.select_related("window").get(pk=occ.pk)
        step = lifecycle.next_step(facts_for(occ), now)
        if step is None or not claim(occ, step, now):
            break
        taken.append(step.name)
        try:
            apply(occ, step, now)
        except Exception:  # recorded; the next tick carries on from the claimed status
            log.exception("calendar: step %s of occurrence %s failed", step.name, occ.pk)
            break
    return taken


def calendar_tick(*, now: datetime | None = None) -> dict[int, list[str]]:
    """Make near occurrences and take every due step. Returns {occurrence id: steps taken}."""
    now = now or timezone.now()
    materialise(now)
    done: dict[int, list[str]] = {}
    due = (WindowOccurrence.objects.exclude(status__in=OCCURRENCE_TERMINAL_STATES)
           .filter(start__lte=now + _check_lead()).select_related("window").order_by("start", "pk"))
    for occ in due:
        if occ.window.cancelled and occ.is_waiting:
            WindowOccurrence.objects.filter(pk=occ.pk, status=occ.status).update(status=S.CANCELLED)
            continue
        try:
            taken = occurrence_advance(occ, now)
        except Exception:  # one broken occurrence must not stop the others
            log.exception("calendar: occurrence %s could not advance", occ.pk)
            continue
        if taken:
            done[occ.pk] = taken
    return done
