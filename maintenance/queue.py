"""The rolling evacuation queue: settle items whose migration or power job ended, start the next.

``evacuation_advance(evacuation_id)`` is the only place items change status. It runs the moment
an item's migration or job ends (receivers.py, on the signals ``migration_settled`` and
``job_ended``), after enter/resume/cancel, and from the periodic sweep (apps.py) that catches
what a dead worker left. Calls for one evacuation are serialised by a row lock on it; items run
as ordinary migrations (``migration_request``: same runner, preflight re-check, lease, slots).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.errors import ServiceRefused
from hosts import services as host_services
from hosts.choices import VM_ACTIVE_STATES, VMActionChoices, VMStateChoices
from hosts.leases import GuestBusy
from hosts.models import Host, VirtualMachine
from migrations_app import placement
from migrations_app.choices import MIGRATION_ACTIVE_STATES
from migrations_app.models import Migration
from migrations_app.services.live import migration_abort, migration_request

from . import decisions, events, planning, run_facts
from .choices import (
    EvacuationAuditActionChoices as A,
    EvacuationKindChoices as K,
    EvacuationStatusChoices as ES,
    ItemActionChoices as IA,
    ItemStatusChoices as IS,
)
from .models import Evacuation, EvacuationItem

log = logging.getLogger(__name__)


def _actor(ev: Evacuation) -> Actor:
    return Actor(user=ev.requested_by)


def _close(item: EvacuationItem, status: str, reason: str = "", remedy: str = "") -> None:
    item.status = status
    item.ended = timezone.now()
    if reason:
        item.reason = reason
    if remedy:
        item.remedy = remedy
    item.save(update_fields=["status", "ended", "reason", "remedy"])
    audit_record(
        actor=Actor.system(), action=A.ITEM,
        result=AuditResultChoices.OK if status == IS.SUCCEEDED else AuditResultChoices.FAILED,
        target=item.evacuation,
        parameters={"vm_uuid": str(item.vm_uuid), "action": item.action, "status": status,
                    "destination": item.destination.name if item.destination_id else None,
                    "migration": item.migration_id},
        message=f"{item.vm_name}: {IS(status).label.lower()}" + (f". {reason}" if reason else "."),
    )


def _pending_memory(ev: Evacuation) -> dict[str, int]:
    """Memory this evacuation still sends to each host (items not yet arrived)."""
    rows = (ev.items.filter(status__in=(IS.PENDING, IS.RUNNING), action=IA.LIVE, destination__isnull=False)
            .values("destination__name").annotate(kib=Sum("memory_kib")))
    return {r["destination__name"]: r["kib"] or 0 for r in rows}


def _retry(ev: Evacuation, item: EvacuationItem, why: str) -> None:
    """Give a failed item a fresh placement (not a host it failed on) and queue it again, or fail it."""
    if ev.kind == K.BALANCE:
        # A balance move was chosen for its gain to that host; another host is another plan.
        _close(item, IS.FAILED, reason=why, remedy="Ask for a new recommendation.")
        return
    tried = list(item.tried or [])
    if item.destination_id and item.destination.name not in tried:
        tried.append(item.destination.name)
    item.tried = tried
    vm = VirtualMachine.objects.filter(uuid=item.vm_uuid, host=item.origin).first()
    if vm is None:
        item.save(update_fields=["tried"])
        _close(item, IS.SKIPPED, reason=f"No longer on {item.origin.name}: moved or deleted since. {why}")
        return
    fresh = planning.replacement_for(vm=vm, evacuated=ev.host, tried=tried, pending=_pending_memory(ev))
    if fresh.outcome != placement.OUTCOME_MOVE:
        item.save(update_fields=["tried"])
        reason = f"{why} No other host can take it: {fresh.blocker.reason if fresh.blocker else fresh.note}"
        _close(item, IS.FAILED, reason=reason, remedy=fresh.blocker.remedy if fresh.blocker else "")
        return
    item.destination = Host.objects.get(name=fresh.destination)
    item.status = IS.PENDING
    item.migration = None
    item.reason = f"Attempt {item.attempts} failed ({why}); trying {fresh.destination}."
    item.save(update_fields=["tried", "destination", "status", "migration", "reason"])


def _settle(ev: Evacuation, item: EvacuationItem, *, cancelling: bool) -> bool:
    m, job = item.migration, item.job
    step = decisions.settle_item(
        action=item.action, attempts=item.attempts, cancelling=cancelling,
        migration_status=m.status if m else None, migration_outcome=m.outcome if m else "",
        migration_error=m.error if m else "",
        job_status=job.status if job else None, job_error=job.error if job else "",
    )
    if step.retry:
        _retry(ev, item, step.reason)
        return True
    if step.status:
        _close(item, step.status, reason=step.reason,
               remedy=(m.repair if m is not None and step.status == IS.FAILED else ""))
        return True
    return False


def _start(ev: Evacuation, item: EvacuationItem) -> bool:
    """Start one item; False when it could not start (it is then closed with the reason)."""
    vm = VirtualMachine.objects.filter(uuid=item.vm_uuid, host=item.origin).select_related("host").first()
    if vm is None:
        where = VirtualMachine.objects.filter(uuid=item.vm_uuid).select_related("host").first()
        _close(item, IS.SKIPPED, reason=(
            f"Now on {where.host.name}: moved since the plan; left there." if where
            else f"No longer on {item.origin.name}: deleted since the plan."
        ))
        return False
    actor = _actor(ev)
    item.attempts += 1
    item.started = item.started or timezone.now()
    try:
        if item.action in (IA.LIVE, IA.OFFLINE):
            options = planning.options_for(
                "shutoff" if item.action == IA.OFFLINE else "running",
                copy_storage=ev.copy_storage, has_local=bool(planning.guest_needs(vm).local_disks),
            )
            item.migration = migration_request(vm=vm, destination=item.destination, options=options, actor=actor)
        elif item.action == IA.SHUTDOWN:
            if vm.state not in VM_ACTIVE_STATES:
                item.save(update_fields=["attempts", "started"])
                _close(item, IS.SUCCEEDED, reason=f"Already {vm.get_state_display().lower()}.")
                return False
            item.job = host_services.vm_action_request(vm=vm, action=VMActionChoices.SHUTDOWN, actor=actor)
        elif item.action == IA.START:
            if vm.state != VMStateChoices.SHUTOFF:
                item.save(update_fields=["attempts", "started"])
                _close(item, IS.SKIPPED, reason=f"Already {vm.get_state_display().lower()}; not started.")
                return False
            item.job = host_services.vm_action_request(vm=vm, action=VMActionChoices.START, actor=actor)
    except GuestBusy as busy:
        # Another operation holds the guest (a manual migration, a power action): wait for it
        # rather than fail; the next advance tries again and finds the guest moved or free.
        item.attempts -= 1
        item.reason = f"Waiting: {busy.message}"
        item.save(update_fields=["attempts", "started", "reason"])
        return False
    except ServiceRefused as refused:
        item.save(update_fields=["attempts", "started"])
        why = refused.message
        if item.action in (IA.LIVE, IA.OFFLINE) and item.attempts < decisions.MAX_ATTEMPTS:
            _retry(ev, item, why)
            return False
        _close(item, IS.FAILED, reason=why, remedy=refused.hint or "")
        return False
    item.status = IS.RUNNING
    item.save(update_fields=["attempts", "started", "migration", "job", "status"])
    return True


def _cancel_running(ev: Evacuation) -> None:
    """Abort the running items' migrations; the pending ones never start."""
    for item in ev.items.filter(status=IS.PENDING):
        _close(item, IS.CANCELLED, reason=f"Cancelled before it started; stays on {item.origin.name}.")
    for item in ev.items.filter(status=IS.RUNNING).select_related("migration"):
        m = item.migration
        if m is not None and m.status in MIGRATION_ACTIVE_STATES and m.abort_requested is None:
            try:
                migration_abort(migration=m, actor=_actor(ev))
            except ServiceRefused:
                pass  # too late (libvirt finished): it settles as it ended


def _finish(ev: Evacuation) -> None:
    items = list(ev.items.select_related("origin"))
    status, outcome = decisions.evacuation_end(
        kind=ev.kind, host=ev.host.name, cancelled=ev.status == ES.CANCELLING,
        items=[decisions.SettledItem(
            vm_name=i.vm_name, action=i.action, status=i.status, blocked=i.blocked,
            running=i.vm_state in ("running", "paused"), reason=i.reason,
        ) for i in items],
    )
    ev.status, ev.outcome, ev.ended = status, outcome, timezone.now()
    ev.save(update_fields=["status", "outcome", "ended"])
    audit_record(
        actor=Actor.system(), action=A.OUTCOME,
        result=AuditResultChoices.OK if status == ES.SUCCEEDED else AuditResultChoices.FAILED,
        target=ev, parameters={"status": status, "items": len(items)}, message=outcome,
    )


def evacuation_advance(evacuation_id: int) -> bool:
    """Settle what ended, start what may start, end the evacuation when nothing is left. True if anything changed."""
    with transaction.atomic():
        ev = Evacuation.objects.select_for_update().filter(pk=evacuation_id).first()
        if ev is None or ev.is_terminal:
            return False
        ev = Evacuation.objects.select_related("host", "facts_job").get(pk=ev.pk)
        facts_status = ev.facts_job.status if ev.facts_job is not None else None
        cancelling = ev.status == ES.CANCELLING
        changed = False
        for item in ev.items.filter(status=IS.RUNNING).select_related("migration", "job", "destination", "origin"):
            changed |= _settle(ev, item, cancelling=cancelling)
        if cancelling:
            _cancel_running(ev)
        elif ev.status == ES.RUNNING:
            running = ev.items.filter(status=IS.RUNNING).count()
            # What the return's ordering rule looks at, read once and kept current as items start or close.
            queued = ({i.pk: _queued(i) for i in ev.items.select_related("origin", "destination")}
                      if ev.kind == K.RETURN else {})
            # While the run's check of the hosts is under way, the moves whose own facts it (or the plan) has kept.
            kept = run_facts.kept_for_run(ev) if facts_status in ("queued", "running") else set()
            for item in ev.items.filter(status=IS.PENDING).select_related("origin", "destination").order_by("position"):
                if running >= ev.concurrency:
                    break
                if ev.kind == K.RETURN and not decisions.may_start(_queued(item), queued.values()):
                    continue
                facts_kept = (str(item.vm_uuid).lower(), item.origin_id, item.destination_id) in kept
                if decisions.waits_for_facts(action=item.action, facts_job_status=facts_status, facts_kept=facts_kept):
                    continue  # the run's one check of the hosts is still running: it starts when that ends
                changed = True
                if _start(ev, item):
                    running += 1
                if ev.kind == K.RETURN:
                    queued[item.pk] = _queued(item)
        if not ev.items.filter(status__in=(IS.PENDING, IS.RUNNING)).exists():
            _finish(ev)
            changed = True
        if changed:
            events.evacuation_changed(ev)
    return changed


def _queued(item: EvacuationItem) -> decisions.QueuedMove:
    return decisions.QueuedMove(position=item.position, status=item.status, origin=item.origin.name,
                                destination=item.destination.name if item.destination_id else None)


def evacuation_for_migration(migration_id: int) -> int | None:
    """The active evacuation one of whose items ran this migration, if any."""
    return (EvacuationItem.objects.filter(migration_id=migration_id, evacuation__status__in=(
        ES.RUNNING, ES.PAUSED, ES.CANCELLING)).values_list("evacuation_id", flat=True).first())


def evacuation_for_job(job_id: int) -> int | None:
    """The active evacuation one of whose items ran this power job, or whose check of the hosts it was."""
    found = (EvacuationItem.objects.filter(job_id=job_id, evacuation__status__in=(
        ES.RUNNING, ES.PAUSED, ES.CANCELLING)).values_list("evacuation_id", flat=True).first())
    if found is None:
        found = (Evacuation.objects.filter(facts_job_id=job_id, status__in=(ES.RUNNING, ES.PAUSED, ES.CANCELLING))
                 .values_list("pk", flat=True).first())
    return found


def evacuations_advance_all() -> int:
    """The sweep: advance every active evacuation (each in its own transaction). Returns how many changed."""
    moved = 0
    for pk in Evacuation.objects.filter(status__in=(ES.RUNNING, ES.PAUSED, ES.CANCELLING)).values_list("pk", flat=True):
        try:
            moved += evacuation_advance(pk)
        except Exception:  # one broken evacuation must not stop the others from moving
            log.exception("evacuation %s could not advance", pk)
    return moved
