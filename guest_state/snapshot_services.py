"""Snapshot requests (take, revert, delete, check with libvirt) and the runner's record keeping.

Each writes its audit row in its transaction; taking, reverting and deleting claim the guest's
lease in the transaction that creates their record or job, like save and restore. The
verdict (snapshot_rules) is judged here on the inventory's rows and again by the job on
libvirt's own description of the guest.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from typing import NoReturn

from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import active_job, job_enqueue
from hosts import leases
from hosts.adapters.libvirt import SnapshotInfo
from hosts.choices import GuestLeaseKindChoices, HostStatusChoices
from hosts.models import Host, VirtualMachine
from migrations_app.services.refusals import refuse

from .choices import (
    SNAPSHOT_LIVE,
    GuestStateAuditActionChoices as A,
    GuestStateJobKindChoices as K,
    SnapshotStatusChoices as S,
)
from .models import GuestSnapshot
from .snapshot_rules import DiskFact, NameProblem, SnapshotFacts, reconcile, snapshot_verdict, validate_name, validate_note

CREATE_JOB = "guest_state.jobs.snapshot_create_job"
REVERT_JOB = "guest_state.jobs.snapshot_revert_job"
DELETE_JOB = "guest_state.jobs.snapshot_delete_job"
CHECK_JOB = "guest_state.jobs.snapshot_check_job"
# savevm writes the guest's memory into its qcow2 image: seconds per GiB; a generous bound.
JOB_TIMEOUT_S = 1800


def inventory_facts(vm: VirtualMachine) -> SnapshotFacts:
    """The verdict's facts as the inventory last saw the guest (no host is asked)."""
    return SnapshotFacts(
        name=vm.name, state=vm.state, persistent=vm.persistent, managed_save=vm.managed_save,
        host_devices=vm.host_devices,
        libvirt_version=getattr(getattr(vm.host, "facts", None), "libvirt_version", "") or "",
        disks=tuple(DiskFact(target=d.target, source=d.source, format=d.format, device=d.device or "disk",
                             source_type=d.source_type or "file", readonly=d.readonly) for d in vm.disks.all()),
    )


def _from_epoch(seconds: int):
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc) if seconds > 0 else None


def snapshot_request(*, vm: VirtualMachine, name: str, note: str = "", actor: Actor,
                     enqueue: bool = True) -> GuestSnapshot:
    """Ask for an internal snapshot of ``vm`` named ``name``: with its memory when it runs or is
    paused, of its disks when it is shut off."""
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    host = vm.host
    parameters = {"vm_uuid": str(vm.uuid), "host": host.name, "name": str(name)[:80]}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.SNAPSHOT_REQUEST, target=vm, parameters=parameters, message=message, hint=hint)

    try:
        name = validate_name(name)
        note = validate_note(note)
    except NameProblem as problem:
        refused(str(problem))
    if not host.is_connectable:
        refused(f"The host {host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    verdict = snapshot_verdict(inventory_facts(vm))
    if not verdict.ok:
        refused(" ".join(verdict.problems))
    if GuestSnapshot.objects.filter(vm_uuid=vm.uuid, host=host, name=name, status__in=SNAPSHOT_LIVE).exists():
        refused(f"{vm.name} already has a snapshot named {name}.", "Choose another name, or delete that one first.")
    try:
        with transaction.atomic():
            snapshot = GuestSnapshot.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, name=name,
                                                    note=note, with_memory=verdict.with_memory,
                                                    requested_by=actor.user)
            snapshot.job = job_enqueue(kind=K.SNAPSHOT_CREATE, func=CREATE_JOB, args=(snapshot.pk,), target=snapshot,
                                       timeout_s=JOB_TIMEOUT_S, actor=actor, enqueue=enqueue)
            snapshot.save(update_fields=["job"])
            leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.SAVE,
                               owner=snapshot, actor=actor, label=f"snapshot {name}")
            audit_record(actor=actor, action=A.SNAPSHOT_REQUEST, result=AuditResultChoices.OK, target=snapshot,
                         parameters={**parameters, "note": note, "with_memory": verdict.with_memory},
                         message=f"Snapshot {name} of {vm.name} on {host.name} requested"
                                 + (" (with memory)." if verdict.with_memory else " (disks only)."),
                         job=snapshot.job)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.SNAPSHOT_REQUEST, target=vm, parameters=parameters)
    except IntegrityError:  # the same name asked for at the same moment
        refused(f"{vm.name} already has a snapshot named {name}.", "Choose another name.")
    return snapshot


@transaction.atomic
def snapshot_finish(*, snapshot: GuestSnapshot, ok: bool, info: SnapshotInfo | None = None, error: str = "") -> bool:
    """End a snapshot with what libvirt showed, releasing the guest. False when it had ended already."""
    fields = {"status": S.PRESENT if ok else S.FAILED, "error": error}
    if info is not None:
        fields.update(with_memory=info.with_memory, kind=info.kind, taken=_from_epoch(info.created),
                      checked=timezone.now())
    if not GuestSnapshot.objects.filter(pk=snapshot.pk, status=S.TAKING).update(**fields):
        return False
    for field_name, value in fields.items():
        setattr(snapshot, field_name, value)
    leases.lease_release(owner=snapshot)
    audit_record(actor=Actor.system(), action=A.SNAPSHOT_OUTCOME,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=snapshot,
                 parameters={"name": snapshot.name, "with_memory": snapshot.with_memory, "error": error},
                 message=(f"Snapshot {snapshot.name} of {snapshot.vm_name} taken." if ok
                          else f"Snapshot {snapshot.name} of {snapshot.vm_name} failed: {error}"), job=snapshot.job)
    return True


def _operation_request(*, snapshot: GuestSnapshot, confirmed: bool, actor: Actor, enqueue: bool, revert: bool):
    snapshot = GuestSnapshot.objects.select_related("host", "vm").get(pk=snapshot.pk)
    host = snapshot.host
    action = A.SNAPSHOT_REVERT if revert else A.SNAPSHOT_DELETE
    parameters = {"snapshot": snapshot.pk, "name": snapshot.name, "vm_uuid": str(snapshot.vm_uuid), "host": host.name}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=action, target=snapshot, parameters=parameters, message=message, hint=hint)

    if revert and snapshot.status != S.PRESENT:
        refused(f"Snapshot {snapshot.name} is {snapshot.get_status_display().lower()}: nothing to revert to.",
                "Check the snapshots with libvirt if this is out of date.")
    if not revert and snapshot.status not in (S.PRESENT, S.MISSING, S.FAILED):
        refused(f"Snapshot {snapshot.name} is {snapshot.get_status_display().lower()}: nothing to delete.")
    if not confirmed:
        refused(f"Confirm the revert of {snapshot.vm_name} to {snapshot.name}: the guest's current state is lost."
                if revert else f"Confirm the deletion of snapshot {snapshot.name}: it cannot be reverted to afterwards.",
                "Tick the confirmation.")
    if not host.is_connectable:
        refused(f"The host {host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    vm = VirtualMachine.objects.filter(uuid=snapshot.vm_uuid, host=host).first()
    if vm is None:
        refused(f"{snapshot.vm_name} is no longer on {host.name}, where libvirt keeps this snapshot.",
                "Move the guest back to revert it, or delete the snapshot's record.")
    kind = K.SNAPSHOT_REVERT if revert else K.SNAPSHOT_DELETE
    try:
        with transaction.atomic():
            job = job_enqueue(kind=kind, func=REVERT_JOB if revert else DELETE_JOB, args=(snapshot.pk,),
                              target=snapshot, timeout_s=JOB_TIMEOUT_S, actor=actor, enqueue=enqueue)
            leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name,
                               kind=GuestLeaseKindChoices.RESTORE if revert else GuestLeaseKindChoices.SAVE,
                               owner=job, actor=actor, label=f"{kind.label.lower()} {snapshot.name} (job #{job.pk})")
            audit_record(actor=actor, action=action, result=AuditResultChoices.OK, target=snapshot,
                         parameters=parameters, job=job,
                         message=(f"Revert of {vm.name} to snapshot {snapshot.name} requested." if revert
                                  else f"Deletion of snapshot {snapshot.name} of {vm.name} requested."))
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=action, target=snapshot, parameters=parameters)
    return job


def snapshot_revert_request(*, snapshot: GuestSnapshot, confirmed: bool, actor: Actor, enqueue: bool = True):
    """Ask to revert the guest to ``snapshot`` (confirmed: its current state is lost). Returns the job."""
    return _operation_request(snapshot=snapshot, confirmed=confirmed, actor=actor, enqueue=enqueue, revert=True)


def snapshot_delete_request(*, snapshot: GuestSnapshot, confirmed: bool, actor: Actor, enqueue: bool = True):
    """Ask to delete ``snapshot`` in libvirt (confirmed) and mark its record deleted. Returns the job."""
    return _operation_request(snapshot=snapshot, confirmed=confirmed, actor=actor, enqueue=enqueue, revert=False)


@transaction.atomic
def snapshot_reverted(*, snapshot: GuestSnapshot, job, ok: bool, error: str = "", problems: list | None = None) -> None:
    leases.lease_release(owner=job)
    if ok:
        GuestSnapshot.objects.filter(pk=snapshot.pk).update(reverted=timezone.now(), revert_count=snapshot.revert_count + 1)
    audit_record(actor=Actor.system(), action=A.SNAPSHOT_REVERT,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=snapshot, job=job,
                 parameters={"name": snapshot.name, "error": error, "problems": problems or []},
                 message=(f"{snapshot.vm_name} reverted to snapshot {snapshot.name}." if ok
                          else f"Revert of {snapshot.vm_name} to {snapshot.name} refused or failed: {error}"))


@transaction.atomic
def snapshot_deleted(*, snapshot: GuestSnapshot, job, ok: bool, error: str = "", already_gone: bool = False) -> None:
    leases.lease_release(owner=job)
    if ok:
        GuestSnapshot.objects.filter(pk=snapshot.pk).update(status=S.DELETED, checked=timezone.now())
    audit_record(actor=Actor.system(), action=A.SNAPSHOT_DELETE,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=snapshot, job=job,
                 parameters={"name": snapshot.name, "error": error, "already_gone": already_gone},
                 message=(f"Snapshot {snapshot.name} of {snapshot.vm_name} deleted"
                          + (" (libvirt had no such snapshot any more)." if already_gone else ".")) if ok
                 else f"Deleting snapshot {snapshot.name} of {snapshot.vm_name} failed: {error}")


# --- libvirt's truth -------------------------------------------------------------------------------


def snapshot_check_request(*, vm: VirtualMachine, actor: Actor, enqueue: bool = True):
    """Ask a job to compare the guest's snapshot records with libvirt's list (no lease: it reads)."""
    return job_enqueue(kind=K.SNAPSHOT_CHECK, func=CHECK_JOB, args=(vm.pk,), target=vm, timeout_s=120, actor=actor,
                       enqueue=enqueue)


# Guests whose snapshots one sweep asks libvirt about, at most (the longest unchecked first).
SWEEP_GUESTS = 200


def snapshots_check_due(*, older_than_s: int, limit: int = SWEEP_GUESTS, now: datetime | None = None) -> int:
    """Periodic: queue a check with libvirt for each guest whose snapshot records on its current
    host were last compared longer than ``older_than_s`` ago, so a snapshot deleted (or taken)
    behind the portal's back shows without anyone clicking Check. Skips a guest whose host is not
    answering (its check would only wait for it) or whose check is queued already. Returns how many were queued."""
    now = now or timezone.now()
    due = (GuestSnapshot.objects.filter(status=S.PRESENT, vm__isnull=False, host_id=F("vm__host_id"),
                                        vm__superseded_at__isnull=True)
           .filter(Q(checked__isnull=True) | Q(checked__lt=now - timedelta(seconds=older_than_s)))
           .values("vm_id").annotate(oldest=Min("checked")).order_by(F("oldest").asc(nulls_first=True))[:limit])
    vm_ids = [row["vm_id"] for row in due]
    queued = 0
    for vm in VirtualMachine.objects.filter(pk__in=vm_ids).select_related("host"):
        answering = vm.host.is_connectable and vm.host.status == HostStatusChoices.REACHABLE
        if not answering or active_job(kind=K.SNAPSHOT_CHECK, target=vm) is not None:
            continue
        snapshot_check_request(vm=vm, actor=Actor.system())
        queued += 1
    return queued


@transaction.atomic
def snapshots_reconcile(*, vm: VirtualMachine, host: Host, found: list[SnapshotInfo], job=None) -> dict:
    """Bring the records of ``vm``'s snapshots on ``host`` to libvirt's list ``found``: gone ones
    marked missing, back ones present, ones taken outside the portal recorded. Audited when anything
    changed. Returns what changed."""
    now = timezone.now()
    records = {s.name: s for s in GuestSnapshot.objects.select_for_update().filter(
        vm_uuid=vm.uuid, host=host, status__in=(S.PRESENT, S.MISSING))}
    by_name = {info.name: info for info in found}
    result = reconcile(recorded={n: s.status for n, s in records.items()}, in_libvirt=set(by_name))
    taking = set(GuestSnapshot.objects.filter(vm_uuid=vm.uuid, host=host, status=S.TAKING).values_list("name", flat=True))
    unrecorded = [n for n in result.unrecorded if n not in taking]  # a job records its own
    GuestSnapshot.objects.filter(pk__in=[records[n].pk for n in result.gone]).update(status=S.MISSING, checked=now)
    GuestSnapshot.objects.filter(pk__in=[records[n].pk for n in result.back]).update(status=S.PRESENT, checked=now)
    GuestSnapshot.objects.filter(vm_uuid=vm.uuid, host=host, status=S.PRESENT).update(checked=now)
    for name in unrecorded:
        info = by_name[name]
        GuestSnapshot.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, name=name[:255],
                                     note=info.description[:500], with_memory=info.with_memory, kind=info.kind,
                                     status=S.PRESENT, made_here=False, taken=_from_epoch(info.created), checked=now)
    changes = {"gone": list(result.gone), "back": list(result.back), "unrecorded": unrecorded}
    if any(changes.values()):
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("gone from libvirt", result.gone), ("back in libvirt", result.back),
                  ("taken outside the portal", unrecorded)) if names]
        audit_record(actor=Actor.system(), action=A.SNAPSHOT_CHECKED, result=AuditResultChoices.OK, target=vm,
                     parameters={"host": host.name, **changes}, job=job,
                     message=f"Snapshots of {vm.name} on {host.name} checked with libvirt — " + "; ".join(parts) + ".")
    return changes
