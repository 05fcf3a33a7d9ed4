"""Cold migration: a shut-off guest's disks copied and its definition moved.

``cold_migration_request`` is what a person asks; the rest is the cold runner's (and the
cold reconciler's) record keeping, from ``cold_begin`` to ``cold_finish``.
"""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices, RoleChoices
from core.jobs import active_job, job_enqueue
from core.models import Job
from hosts import leases, services as host_services
from hosts.choices import GuestLeaseKindChoices, VMStateChoices
from hosts.models import Host, VirtualMachine
from hosts.permissions import actor_refused_on
from storage.models import Share

from .. import policy
from ..choices import (
    COLD_ACTIVE_STATES,
    ColdMigrationStatusChoices as ColdStatus,
    MigrationAuditActionChoices as A,
    MigrationJobKindChoices,
)
from ..models import ColdMigration
from .events import cold_changed
from .refusals import refuse

COLD_MIGRATION_JOB = "migrations_app.jobs.cold_migration_job"
COLD_RECONCILE_JOB = "migrations_app.jobs.cold_reconcile_job"


def cold_migration_request(
    *,
    vm: VirtualMachine,
    destination: Host,
    share: Share | None = None,
    start: bool = False,
    keep_source: bool = False,
    actor: Actor,
    run_by_worker: bool = True,
    disk_bytes_hint: int = 0,
) -> ColdMigration:
    """Ask to cold-migrate a shut-off ``vm`` to ``destination`` (its own host: onto ``share``).

    Refused (and audited) when the guest is not shut off in the inventory, a host cannot be
    contacted or the destination is in maintenance, the share is not seen by the destination,
    nothing would move, or another operation holds the guest's lease (GuestBusy) — claimed in
    the transaction that creates the record, so of two simultaneous requests of any kinds
    exactly one gets through. The job re-checks everything on the hosts.

    The job's timeout follows the disk sizes the inventory recorded (``policy.cold_copy_plan``;
    ``disk_bytes_hint`` overrides them); the audit row keeps the bytes assumed and why.
    """
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    source = vm.host
    same_host = destination.pk == source.pk
    parameters = {
        "vm_uuid": str(vm.uuid), "source": source.name, "destination": destination.name,
        "share": str(share) if share else None, "start": start, "keep_source": keep_source,
    }

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.COLD_REQUEST, target=vm, parameters=parameters, message=message, hint=hint)

    outside = actor_refused_on(actor, RoleChoices.OPERATOR, (source, destination))
    if outside:
        refused(f"{actor.label} does not hold the Operator role on {', '.join(outside)}.",
                "Ask an admin for a grant on the host's group, or choose a host of your groups.")
    if vm.state != VMStateChoices.SHUTOFF:
        refused(f"{vm.name} is {vm.get_state_display().lower()}; a cold migration moves a shut-off guest.",
                "Shut it down from its page first, or use live migration.")
    for role, host in (("source", source), ("destination", destination)):
        if not host.is_connectable:
            refused(f"The {role} host {host.name} cannot be contacted: {host.get_status_display()}.",
                    "Fix the host's connection first (see its page).")
    if destination.in_maintenance and not same_host:
        refused(f"{destination.name} is in maintenance.", "Take it out of maintenance, or choose another destination.")
    if same_host and share is None:
        refused(f"{vm.name} is already on {source.name} and no shared storage was chosen: nothing would move.",
                "Choose a share to move its disks onto, or another destination host.")
    if share is not None:
        if share.path_seen_by(destination) is None:
            refused(f"{destination.name} does not mount the share {share}.",
                    "Add it as a client of the share (the NFS wizard), or choose another destination.")
    estimate, timeout_s = policy.cold_copy_plan(vm.disks.all())
    if disk_bytes_hint:
        timeout_s = policy.cold_job_timeout_s(disk_bytes_hint)
    try:
        with transaction.atomic():
            cold = ColdMigration.objects.create(
                vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=source, destination=destination, share=share,
                start=start, keep_source=keep_source, requested_by=actor.user, run_by_worker=run_by_worker,
                phase="Waiting for a worker" if run_by_worker else "Waiting to start",
            )
            cold.job = job_enqueue(
                kind=MigrationJobKindChoices.COLD_RUN, func=COLD_MIGRATION_JOB, args=(cold.pk,), target=cold,
                timeout_s=timeout_s, actor=actor,
                enqueue=run_by_worker,
            )
            cold.save(update_fields=["job"])
            # Held until cold_finish; the database decides between simultaneous requests.
            leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.COLD_MIGRATION,
                               owner=cold, actor=actor)
            where = f"onto {share}" if same_host else f"from {source.name} to {destination.name}"
            audit_record(
                actor=actor, action=A.COLD_REQUEST, result=AuditResultChoices.OK, target=cold,
                parameters={**parameters, "copy_bytes": disk_bytes_hint or estimate.bytes,
                            "copy_bytes_basis": "given" if disk_bytes_hint else (estimate.note or "recorded sizes"),
                            "timeout_s": timeout_s},
                message=f"Cold-migrate {vm.name} {where} requested.",
            )
            cold_changed(cold)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.COLD_REQUEST, target=vm, parameters=parameters)
    return cold


@transaction.atomic
def cold_begin(*, cold: ColdMigration, job: Job | None) -> bool:
    """Queued → checking, by whoever runs it; False if it is not queued any more."""
    now = timezone.now()
    changed = ColdMigration.objects.filter(pk=cold.pk, status=ColdStatus.QUEUED).update(
        status=ColdStatus.CHECKING, phase="Checking both hosts", started=now, heartbeat=now,
        job=job if job is not None else cold.job,
    )
    if changed:
        cold.refresh_from_db()
        cold_changed(cold)
    return bool(changed)


@transaction.atomic
def cold_step(*, cold: ColdMigration, status: ColdStatus | None = None, phase: str | None = None,
              reached: str | None = None, **fields) -> None:
    """Record progress of a running cold migration: status, phase, a milestone, or other fields."""
    if status is not None:
        cold.status = status
    if phase is not None:
        cold.phase = phase
    if reached is not None and reached not in cold.reached:
        cold.reached = [*cold.reached, reached]
    for name, value in fields.items():
        setattr(cold, name, value)
    cold.heartbeat = timezone.now()
    cold.save(update_fields=["status", "phase", "reached", "heartbeat", *fields])
    cold_changed(cold)


def cold_progress(*, cold: ColdMigration, bytes_done: int) -> None:
    """The copy's byte count (called often; one UPDATE, no event: the job's progress carries it)."""
    ColdMigration.objects.filter(pk=cold.pk).update(bytes_done=bytes_done, heartbeat=timezone.now())
    cold.bytes_done = bytes_done


@transaction.atomic
def cold_permissions_set(*, cold: ColdMigration, host: Host, path: str, before: str, after: str) -> None:
    """Audit the owner/mode the move gave a copied image so the destination's QEMU can open it."""
    audit_record(
        actor=Actor.system(), action=A.IMAGE_PERMISSIONS, result=AuditResultChoices.OK, target=cold,
        parameters={"host": host.name, "path": path, "before": before, "after": after},
        message=f"{path} on {host.name}: {before or 'new file'} → {after} (for QEMU's user).",
        job=cold.job,
    )


@transaction.atomic
def cold_copy_key_authorizing(*, cold: ColdMigration, grant: dict) -> None:
    """Record where the one-time key is about to be placed, so it can be removed even if the worker dies now.

    Not audited by itself: ``cold_copy_key_authorized`` (placed) or ``cold_copy_key_removed``
    (its undo) follows, or the reconciler's removal when the worker died.
    """
    cold.copy_grant = grant
    cold.save(update_fields=["copy_grant"])


@transaction.atomic
def cold_copy_key_authorized(*, cold: ColdMigration, grant: dict, files: list[str]) -> None:
    """Record (and audit) the one-time key a direct copy placed on the destination, before it is used."""
    cold.copy_grant = grant
    cold.save(update_fields=["copy_grant"])
    audit_record(
        actor=Actor.system(), action=A.COPY_KEY_AUTHORIZED, result=AuditResultChoices.OK, target=cold,
        parameters={"source": cold.source.name, "destination": cold.destination.name, "files": files,
                    "keys_file": grant.get("keys_file", ""), "tag": grant.get("tag", ""),
                    "fingerprint": grant.get("fingerprint", ""), "from": grant.get("from", ""),
                    "expires": grant.get("expires", "")},
        message=(f"One-time key {grant.get('fingerprint', '')} authorized in {grant.get('keys_file', '')} on "
                 f"{cold.destination.name}, from {cold.source.name} only, to write {len(files)} copy(ies)."),
        job=cold.job,
    )


@transaction.atomic
def cold_copy_key_removed(*, cold: ColdMigration, problems: list[str], by_reconciler: bool = False) -> None:
    """Record that the one-time key is gone (or audit what stayed, and keep the grant to retry)."""
    grant = cold.copy_grant or {}
    if not problems:
        cold.copy_grant = {}
        cold.save(update_fields=["copy_grant"])
    where = f"{grant.get('keys_file', '')} on {cold.destination.name}"
    audit_record(
        actor=Actor.system(), action=A.COPY_KEY_REMOVED,
        result=AuditResultChoices.FAILED if problems else AuditResultChoices.OK, target=cold,
        parameters={"tag": grant.get("tag", ""), "keys_file": grant.get("keys_file", ""),
                    "fingerprint": grant.get("fingerprint", ""), "problems": problems,
                    "by_reconciler": by_reconciler},
        message=(f"One-time key {grant.get('fingerprint', '')} removed from {where}." if not problems else
                 f"The one-time key {grant.get('fingerprint', '')} may remain in {where}: {'; '.join(problems)} "
                 f"(it expires at {grant.get('expires', '?')} there, destination's time)."),
        job=cold.job,
    )


@transaction.atomic
def cold_finish(
    *,
    cold: ColdMigration,
    status: ColdStatus,
    outcome: str,
    error: str = "",
    error_hint: str = "",
    summary: dict | None = None,
    rollback: list | None = None,
    actor: Actor | None = None,
    action: str = A.COLD_OUTCOME,
) -> bool:
    """End a cold migration with what the hosts showed; on success the inventory row follows the guest.

    False (nothing written) when it already ended, e.g. the reconciler settled it first.
    """
    now = timezone.now()
    fields = {
        "status": status, "ended": now, "outcome": outcome, "error": error, "error_hint": error_hint,
        "summary": summary or {}, "rollback": rollback or [], "heartbeat": now,
        "phase": {ColdStatus.SUCCEEDED: "Done", ColdStatus.FAILED: "Failed",
                  ColdStatus.NEEDS_ATTENTION: "Needs attention"}[status],
        "total_seconds": (now - cold.started).total_seconds() if cold.started else None,
    }
    if not ColdMigration.objects.filter(pk=cold.pk, status__in=COLD_ACTIVE_STATES).update(**fields):
        return False
    leases.lease_release(owner=cold)  # the guest is free for its next operation
    for name, value in fields.items():
        setattr(cold, name, value)
    if status == ColdStatus.SUCCEEDED and not cold.same_host:
        host_services.vm_relocate(vm_uuid=cold.vm_uuid, source=cold.source, destination=cold.destination)
    audit_record(
        actor=actor or Actor.system(), action=action,
        result=AuditResultChoices.OK if status == ColdStatus.SUCCEEDED else AuditResultChoices.FAILED,
        target=cold,
        parameters={"status": str(status), "error": error, "rollback": rollback or [],
                    "copy_seconds": cold.copy_seconds, "bytes": cold.bytes_total},
        message=f"{cold.vm_name}: {status.label.lower()}. {outcome}".strip(),
        job=cold.job,
    )
    cold_changed(cold)
    return True


def cold_reconcile_request(*, cold: ColdMigration, reason: str) -> Job:
    """Queue settling a cold migration whose worker died (one reconcile job at a time per record)."""
    with transaction.atomic():
        waiting = active_job(kind=MigrationJobKindChoices.RECONCILE, target=cold)
        if waiting is not None:
            return waiting
        return job_enqueue(
            kind=MigrationJobKindChoices.RECONCILE, func=COLD_RECONCILE_JOB, args=(cold.pk, reason),
            target=cold, timeout_s=policy.RECONCILE_TIMEOUT_S, actor=Actor.system(),
        )
