"""Recovery of a dead host's guests: the request (plan, fencing confirmed, leases, audit), the
runner's record keeping, and removing a stale copy once the host is back. Each writes its audit
row in its transaction."""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from hosts import leases
from hosts import services as host_services
from hosts.choices import VM_ACTIVE_STATES, DiskStorageChoices, GuestLeaseKindChoices, HostStatusChoices
from hosts.models import Host, VirtualMachine
from maintenance.planning import Committed, committed_by_host, guest_needs, host_capacity
from migrations_app.services.refusals import refuse

from . import plan as plans
from .choices import (
    ITEM_ACTIVE,
    RecoveryAuditActionChoices as A,
    RecoveryItemStatusChoices as IS,
    RecoveryJobKindChoices as K,
    RecoveryStatusChoices as RS,
)
from .models import HostRecovery, RecoveryItem

CHECK_JOB = "recovery.jobs.recovery_check_job"
ITEM_JOB = "recovery.jobs.recovery_item_job"
STALE_JOB = "recovery.jobs.stale_remove_job"
# Two connection attempts (SSH, libvirt) of at most ~10 s each, then defining and booting a guest.
CHECK_TIMEOUT_S = 120
ITEM_TIMEOUT_S = 300


def fencing_statement(host: Host) -> str:
    """What the admin confirms, in those words: fencing is theirs, the portal cannot do it."""
    return (f"I have made sure {host.name} is powered off and its guests are not running: starting them "
            "elsewhere while they still run there corrupts their disks.")


# --- The plan, from the inventory ------------------------------------------------------------


def _guest_facts(vm: VirtualMachine) -> plans.GuestFacts:
    disks = tuple(plans.DiskFact(target=d.target, storage=d.storage, readonly=d.readonly, has_source=bool(d.source))
                  for d in vm.disks.all())
    return plans.GuestFacts(
        needs=guest_needs(vm), was_running=vm.state in VM_ACTIVE_STATES,
        has_definition=bool(vm.definition_encrypted), disks=disks, host_devices=vm.host_devices,
        superseded_note=vm.superseded_note if vm.superseded_at else "",
    )


def plan_for(host: Host, *, destination: Host | None = None) -> plans.RecoveryPlan:
    """The plan the page shows and the request executes: the inventory's last view of ``host``."""
    guests = [_guest_facts(vm) for vm in VirtualMachine.objects.filter(host=host).prefetch_related("disks")]
    others = list(Host.objects.exclude(pk=host.pk).select_related("facts", "budget"))
    committed = committed_by_host([h.pk for h in others])
    capacities = [host_capacity(h, committed=committed.get(h.pk, Committed())) for h in others]
    return plans.recovery_plan(guests, capacities, source=host.name,
                               destination=destination.name if destination else None)


# --- The request --------------------------------------------------------------------------------


def recovery_request(
    *, host: Host, fencing_confirmed: bool, destination: Host | None = None, fingerprint: str = "",
    actor: Actor, enqueue: bool = True,
) -> HostRecovery:
    """Ask to bring the guests of the unreachable ``host`` back on other hosts.

    Refused unless the host is marked unreachable and the admin confirmed it is powered off.
    Every guest's lease is claimed here; the check job then proves the host still does not
    answer (SSH and libvirt) before anything starts. ``fingerprint``, when given, must match the
    plan computed now (the page's confirm carries the one it showed).
    """
    parameters = {"host": host.name, "destination": destination.name if destination else None,
                  "fencing_confirmed": fencing_confirmed}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.REQUEST, target=host, parameters=parameters, message=message, hint=hint)

    if host.status != HostStatusChoices.UNREACHABLE:
        refused(f"{host.name} is {host.get_status_display().lower()}, not unreachable: its guests are not lost.",
                "Recovery is for a host that stopped answering. Migrate or evacuate the guests of a live host.")
    if not fencing_confirmed:
        refused(f"Confirm that {host.name} is powered off first.",
                "Fencing is yours: power it off (or cut its storage) and tick the confirmation.")
    if destination is not None and (destination.pk == host.pk or not destination.is_connectable
                                    or not destination.in_service):
        refused(f"{destination.name} cannot take the guests of {host.name}.",
                "Choose another host in service and reachable, or let the placement choose.")
    if HostRecovery.objects.filter(host=host, status__in=(RS.CHECKING, RS.RUNNING)).exists():
        refused(f"A recovery of {host.name} is already running.", "Follow it on its page.")
    plan = plan_for(host, destination=destination)
    if fingerprint and fingerprint != plan.fingerprint:
        refused("The plan changed since it was shown (the inventory moved on).", "Look at the new plan and confirm again.")
    if not plan.moves:
        refused(f"No guest of {host.name} can be recovered: " + " ".join(x.reason for x in plan.left),
                "See why for each guest on the recovery page.")
    vms = {str(vm.uuid): vm for vm in VirtualMachine.objects.filter(host=host).prefetch_related("disks")}
    destinations = {h.name: h for h in Host.objects.filter(name__in={m.destination for m in plan.moves})}
    try:
        with transaction.atomic():
            recovery = HostRecovery.objects.create(
                host=host, destination=destination, fencing_statement=fencing_statement(host),
                left=[{"uuid": x.uuid, "name": x.name, "reason": x.reason} for x in plan.left],
                requested_by=actor.user, requested_by_label=actor.label,
            )
            for move in plan.moves:
                vm = vms[move.uuid]
                item = RecoveryItem.objects.create(
                    recovery=recovery, vm_uuid=vm.uuid, vm_name=vm.name, destination=destinations[move.destination],
                    definition_encrypted=vm.definition_encrypted, warnings=list(move.warnings),
                    disks=sorted({d.source for d in vm.disks.all()
                                  if d.source and d.source_type == "file" and not d.readonly}),
                )
                leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.RECOVERY,
                                   owner=item, actor=actor)
            recovery.job = job_enqueue(kind=K.CHECK, func=CHECK_JOB, args=(recovery.pk,), target=recovery,
                                       timeout_s=CHECK_TIMEOUT_S, actor=actor, enqueue=enqueue)
            recovery.save(update_fields=["job"])
            audit_record(
                actor=actor, action=A.REQUEST, result=AuditResultChoices.OK, target=recovery,
                parameters={**parameters, "fencing_statement": recovery.fencing_statement,
                            "moves": [{"guest": m.name, "to": m.destination} for m in plan.moves],
                            "left": recovery.left},
                message=(f"Recovery of {len(plan.moves)} guest(s) of {host.name} requested; "
                         f"{len(plan.left)} cannot be recovered. Fencing confirmed: {recovery.fencing_statement}"),
                job=recovery.job,
            )
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.REQUEST, target=host, parameters=parameters)
    return recovery


# --- The runner's record keeping ------------------------------------------------------------------


@transaction.atomic
def recovery_checked(*, recovery: HostRecovery, gone: bool, evidence: str, enqueue: bool = True) -> list[RecoveryItem]:
    """Record the check of the dead host. Gone: each item's job is queued; else every item is skipped
    (leases released) and the recovery refused. Returns the items to run."""
    recovery = HostRecovery.objects.select_for_update().get(pk=recovery.pk)
    if recovery.status != RS.CHECKING:
        return []
    audit_record(actor=Actor.system(), action=A.CHECK,
                 result=AuditResultChoices.OK if gone else AuditResultChoices.REFUSED, target=recovery,
                 parameters={"host": recovery.host.name, "gone": gone}, message=evidence, job=recovery.job)
    items = list(recovery.items.filter(status=IS.PENDING))
    if not gone:
        for item in items:
            _item_end(item, ok=False, status=IS.SKIPPED, error="Not started: the host still answers.")
        _recovery_end(recovery, status=RS.REFUSED, error=evidence)
        return []
    recovery.status = RS.RUNNING
    recovery.save(update_fields=["status"])
    for item in items:
        item.job = job_enqueue(kind=K.ITEM, func=ITEM_JOB, args=(item.pk,), target=item, timeout_s=ITEM_TIMEOUT_S,
                               actor=Actor.system(), enqueue=enqueue)
        item.save(update_fields=["job"])
    return items


def item_begin(*, item: RecoveryItem) -> bool:
    """Pending → running; False when the item was settled meanwhile."""
    return bool(RecoveryItem.objects.filter(pk=item.pk, status=IS.PENDING).update(status=IS.RUNNING,
                                                                                 started=timezone.now()))


def _item_end(item: RecoveryItem, *, ok: bool, status: str, error: str = "") -> bool:
    if not RecoveryItem.objects.filter(pk=item.pk, status__in=ITEM_ACTIVE).update(
            status=status, error=error, ended=timezone.now()):
        return False
    item.refresh_from_db()
    leases.lease_release(owner=item)
    audit_record(
        actor=Actor.system(), action=A.ITEM_OUTCOME,
        result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=item,
        parameters={"guest": item.vm_name, "uuid": str(item.vm_uuid), "destination": item.destination.name,
                    "error": error},
        message=(f"{item.vm_name} of {item.recovery.host.name} runs on {item.destination.name}." if ok
                 else f"{item.vm_name} was not recovered: {error}"),
        job=item.job,
    )
    return True


@transaction.atomic
def item_finish(*, item: RecoveryItem, ok: bool, error: str = "") -> bool:
    """End one guest's recovery (lease released); on success the dead host's copy is marked replaced.
    Ends the recovery when it was the last item. False when the item had ended already."""
    if not _item_end(item, ok=ok, status=IS.SUCCEEDED if ok else IS.FAILED, error=error):
        return False
    recovery = HostRecovery.objects.select_for_update().get(pk=item.recovery_id)
    if ok:
        host_services.vm_superseded_mark(
            host=recovery.host, vm_uuid=item.vm_uuid,
            note=f"recovered to {item.destination.name} by recovery #{recovery.pk} on {timezone.now():%Y-%m-%d %H:%M} UTC")
    if not recovery.items.filter(status__in=ITEM_ACTIVE).exists() and recovery.status == RS.RUNNING:
        statuses = set(recovery.items.values_list("status", flat=True))
        status = RS.SUCCEEDED if statuses == {IS.SUCCEEDED} else RS.PARTIAL if IS.SUCCEEDED in statuses else RS.FAILED
        _recovery_end(recovery, status=status)
    return True


def _recovery_end(recovery: HostRecovery, *, status: str, error: str = "") -> None:
    recovery.status, recovery.error, recovery.ended = status, error, timezone.now()
    recovery.save(update_fields=["status", "error", "ended"])
    done = recovery.items.filter(status=IS.SUCCEEDED).count()
    audit_record(
        actor=Actor.system(), action=A.OUTCOME,
        result=AuditResultChoices.OK if status == RS.SUCCEEDED else AuditResultChoices.FAILED, target=recovery,
        parameters={"host": recovery.host.name, "status": status, "recovered": done},
        message=f"Recovery of {recovery.host.name}: {recovery.get_status_display().lower()}, {done} guest(s) recovered."
                + (f" {error}" if error else ""),
        job=recovery.job,
    )


# --- After the host came back -----------------------------------------------------------------


@transaction.atomic
def stale_copy_seen(*, item: RecoveryItem, state: str) -> None:
    """The old host answers again and still has the guest: note it (audited once per state seen)."""
    if item.stale_state == state and item.stale_seen_at:
        return
    RecoveryItem.objects.filter(pk=item.pk).update(stale_state=state, stale_seen_at=timezone.now())
    both = state in VM_ACTIVE_STATES
    audit_record(
        actor=Actor.system(), action=A.STALE_COPY,
        result=AuditResultChoices.FAILED if both else AuditResultChoices.OK, target=item,
        parameters={"guest": item.vm_name, "host": item.recovery.host.name, "state": state},
        message=(f"{item.recovery.host.name} is back and RUNS its old copy of {item.vm_name}, which also runs on "
                 f"{item.destination.name}: stop one of them now." if both else
                 f"{item.recovery.host.name} is back with a {state} copy of {item.vm_name} (it runs on "
                 f"{item.destination.name}); remove it from the host's page."),
    )


def stale_remove_request(*, item: RecoveryItem, actor: Actor, enqueue: bool = True):
    """Ask to undefine the old host's shut-off copy of a recovered guest (its disks stay: they are the guest's)."""
    host = item.recovery.host
    parameters = {"item": item.pk, "guest": item.vm_name, "host": host.name}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.STALE_REMOVE, target=item, parameters=parameters, message=message, hint=hint)

    if item.status != IS.SUCCEEDED or not item.stale_seen_at or item.stale_removed_at:
        refused(f"There is no stale copy of {item.vm_name} on {host.name} to remove.")
    if not host.is_connectable or host.status != HostStatusChoices.REACHABLE:
        refused(f"{host.name} is {host.get_status_display().lower()}.", "Wait until it answers again.")
    if item.stale_state in VM_ACTIVE_STATES:
        refused(f"The copy of {item.vm_name} on {host.name} is {item.stale_state}: the guest runs twice.",
                f"Decide which copy to keep and force the other off first (it will not be undefined while it runs).")
    try:
        with transaction.atomic():
            job = job_enqueue(kind=K.STALE_REMOVE, func=STALE_JOB, args=(item.pk,), target=item,
                              timeout_s=CHECK_TIMEOUT_S, actor=actor, enqueue=enqueue)
            leases.lease_claim(guest_uuid=item.vm_uuid, guest_name=item.vm_name, kind=GuestLeaseKindChoices.RECOVERY,
                               owner=job, actor=actor, label=f"removal of the stale copy on {host.name}")
            audit_record(actor=actor, action=A.STALE_REMOVE, result=AuditResultChoices.OK, target=item,
                         parameters=parameters, job=job,
                         message=f"Removal of the stale copy of {item.vm_name} on {host.name} requested.")
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.STALE_REMOVE, target=item, parameters=parameters)
    return job


@transaction.atomic
def stale_removed(*, item: RecoveryItem, job, ok: bool, error: str = "") -> None:
    if ok:
        RecoveryItem.objects.filter(pk=item.pk).update(stale_removed_at=timezone.now())
    leases.lease_release(owner=job)
    audit_record(actor=Actor.system(), action=A.STALE_REMOVE,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=item, job=job,
                 parameters={"guest": item.vm_name, "host": item.recovery.host.name, "error": error},
                 message=(f"The stale copy of {item.vm_name} on {item.recovery.host.name} was undefined (its disks stay)."
                          if ok else f"Removing the stale copy of {item.vm_name} failed: {error}"))
