"""Save and restore requests, and the runner's record keeping. Each writes its audit row in its
transaction and claims the guest's lease in the one that creates its record."""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import active_job, job_enqueue
from core.models import Job
from hosts import leases
from hosts.choices import GuestLeaseKindChoices, VMStateChoices
from hosts.models import Host, VirtualMachine
from migrations_app.services.refusals import refuse
from storage.models import Share

from .choices import (
    RESTORE_ACTIVE,
    SAVED_STATE_ACTIVE,
    GuestStateAuditActionChoices as A,
    GuestStateJobKindChoices as K,
    RestoreStatusChoices as RS,
    SavedStateStatusChoices as SS,
)
from .locations import LocationProblem, state_file_name, validate_directory
from .models import SavedState, StateRestore

SAVE_JOB = "guest_state.jobs.save_job"
MANAGED_SAVE_JOB = "guest_state.jobs.managed_save_job"
STATE_DELETE_JOB = "guest_state.jobs.state_delete_job"
RESTORE_JOB = "guest_state.jobs.restore_job"
SAVE_SETTLE_JOB = "guest_state.jobs.save_settle_job"
RESTORE_SETTLE_JOB = "guest_state.jobs.restore_settle_job"
JOB_SETTLE_JOB = "guest_state.jobs.job_settle_job"
# Writing a guest's memory (and hashing it) takes seconds per GiB; a generous bound.
JOB_TIMEOUT_S = 1800
MAX_NOTE_CHARS = 500


def save_request(
    *, vm: VirtualMachine, directory: str = "", share: Share | None = None, note: str = "",
    bypass_cache: bool = False, actor: Actor, enqueue: bool = True,
) -> SavedState:
    """Ask to save a running guest's state into ``directory`` on its host or onto ``share``."""
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    host = vm.host
    parameters = {"vm_uuid": str(vm.uuid), "host": host.name, "directory": directory[:200],
                  "share": str(share) if share else None, "bypass_cache": bypass_cache}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.SAVE_REQUEST, target=vm, parameters=parameters, message=message, hint=hint)

    if vm.state not in (VMStateChoices.RUNNING, VMStateChoices.PAUSED, VMStateChoices.BLOCKED):
        refused(f"{vm.name} is {vm.get_state_display().lower()}; only a running or paused guest has a state to save.",
                "Start it first, or refresh the host if the state shown is out of date.")
    if not host.is_connectable:
        refused(f"The host {host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    if len(note) > MAX_NOTE_CHARS:
        refused(f"The note is longer than {MAX_NOTE_CHARS} characters.", "Shorten it.")
    if (share is None) == (not directory.strip()):
        refused("Choose exactly one place for the state file: a directory on the host or a share.",
                "Give --to PATH or --share NAME, not both.")
    if share is not None:
        where = share.path_seen_by(host)
        if where is None:
            refused(f"{host.name} does not mount the share {share}.",
                    "Add it as a client of the share (the NFS wizard), or choose a directory on the host.")
    else:
        try:
            where = validate_directory(directory)
        except LocationProblem as problem:
            refused(str(problem), "Give an absolute data directory on the host.")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    path = f"{where.rstrip('/')}/{state_file_name(vm_name=vm.name, vm_uuid=str(vm.uuid), stamp=stamp)}"
    try:
        with transaction.atomic():
            state = SavedState.objects.create(
                vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, share=share, path=path,
                bypass_cache=bypass_cache, note=note, machine_type=vm.machine, requested_by=actor.user,
                qemu_version=getattr(getattr(host, "facts", None), "hypervisor_version", ""),
            )
            state.job = job_enqueue(kind=K.SAVE, func=SAVE_JOB, args=(state.pk,), target=state,
                                    timeout_s=JOB_TIMEOUT_S, actor=actor, enqueue=enqueue)
            state.save(update_fields=["job"])
            leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.SAVE,
                               owner=state, actor=actor)
            audit_record(actor=actor, action=A.SAVE_REQUEST, result=AuditResultChoices.OK, target=state,
                         parameters={**parameters, "path": path, "note": note},
                         message=f"Save of {vm.name} on {host.name} to {path} requested.", job=state.job)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.SAVE_REQUEST, target=vm, parameters=parameters)
    return state


@transaction.atomic
def save_finish(*, state: SavedState, ok: bool, error: str = "", size: int = 0, sha256: str = "",
                disks: list | None = None, machine_type: str = "", settled: dict | None = None) -> bool:
    """End a save with what the host showed, releasing the guest. False when it had ended already.

    ``settled``: the facts a reconciler read on the host, for the audit row, when the save's job
    died and this records what the host shows (guest_state.reconciler)."""
    fields = {"status": SS.SAVED if ok else SS.FAILED, "error": error, "size": size, "sha256": sha256,
              "disks": disks or [], "saved": timezone.now() if ok else None}
    if machine_type:
        fields["machine_type"] = machine_type
    if not SavedState.objects.filter(pk=state.pk, status=SS.SAVING).update(**fields):
        return False
    for name, value in fields.items():
        setattr(state, name, value)
    leases.lease_release(owner=state)
    audit_record(actor=Actor.system(), action=A.SAVE_OUTCOME,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=state,
                 parameters={"path": state.path, "size": size, "sha256": sha256, "error": error,
                             **({"settled": settled} if settled else {})},
                 message=(f"{state.vm_name} saved to {state.path} ({size} bytes)." if ok
                          else f"Save of {state.vm_name} failed: {error}"), job=state.job)
    return True


def restore_request(*, state: SavedState, host: Host | None = None, paused: bool = False,
                    changed_disks_confirmed: bool = False, actor: Actor, enqueue: bool = True) -> StateRestore:
    """Ask to restore ``state`` on ``host`` (default: where it was saved), running or paused.

    The job checks the hosts (compat.restore_verdict) before libvirt is called.
    """
    host = host or state.host
    parameters = {"state": state.pk, "host": host.name, "paused": paused,
                  "changed_disks_confirmed": changed_disks_confirmed}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.RESTORE_REQUEST, target=state, parameters=parameters, message=message,
                hint=hint)

    if state.status != SS.SAVED:
        refused(f"Saved state #{state.pk} is {state.get_status_display().lower()}: nothing to restore.")
    if not host.is_connectable:
        refused(f"The host {host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    if host.pk != state.host_id and (state.share is None or state.share.path_seen_by(host) is None):
        refused(f"{host.name} does not see the state file {state.path}.",
                "Restore on the host it was saved on, or save onto a share both hosts mount.")
    try:
        with transaction.atomic():
            restore = StateRestore.objects.create(state=state, host=host, paused=paused,
                                                  changed_disks_confirmed=changed_disks_confirmed,
                                                  requested_by=actor.user)
            restore.job = job_enqueue(kind=K.RESTORE, func=RESTORE_JOB, args=(restore.pk,), target=restore,
                                      timeout_s=JOB_TIMEOUT_S, actor=actor, enqueue=enqueue)
            restore.save(update_fields=["job"])
            leases.lease_claim(guest_uuid=state.vm_uuid, guest_name=state.vm_name,
                               kind=GuestLeaseKindChoices.RESTORE, owner=restore, actor=actor)
            audit_record(actor=actor, action=A.RESTORE_REQUEST, result=AuditResultChoices.OK, target=restore,
                         parameters=parameters,
                         message=f"Restore of {state.vm_name} from {state.path} on {host.name} requested.",
                         job=restore.job)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.RESTORE_REQUEST, target=state, parameters=parameters)
    return restore


@transaction.atomic
def restore_finish(*, restore: StateRestore, ok: bool, error: str = "", problems: list | None = None,
                   settled: dict | None = None) -> bool:
    """End a restore, releasing the guest. False when it had ended already.

    ``settled``: the facts a reconciler read on the host (as for ``save_finish``)."""
    fields = {"status": RS.SUCCEEDED if ok else RS.FAILED, "error": error, "problems": problems or [],
              "ended": timezone.now()}
    if not StateRestore.objects.filter(pk=restore.pk, status__in=(RS.QUEUED, RS.RUNNING)).update(**fields):
        return False
    for name, value in fields.items():
        setattr(restore, name, value)
    leases.lease_release(owner=restore)
    audit_record(actor=Actor.system(), action=A.RESTORE_OUTCOME,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=restore,
                 parameters={"state": restore.state_id, "host": restore.host.name, "problems": problems or [],
                             **({"settled": settled} if settled else {})},
                 message=(f"{restore.state.vm_name} restored on {restore.host.name}." if ok
                          else f"Restore of {restore.state.vm_name} refused or failed: {error}"), job=restore.job)
    return True


# --- Saves and restores whose job died (guest_state.reconciler) ------------------------------


def settle_request(*, record: SavedState | StateRestore, reason: str) -> bool:
    """Queue a job that asks the host what became of ``record`` (a save or a restore whose job
    died) and records it. False when such a job is queued or running already."""
    kind = K.SAVE_SETTLE if isinstance(record, SavedState) else K.RESTORE_SETTLE
    if active_job(kind=kind, target=record) is not None:
        return False
    func = SAVE_SETTLE_JOB if kind == K.SAVE_SETTLE else RESTORE_SETTLE_JOB
    job_enqueue(kind=kind, func=func, args=(record.pk, reason[:500]), target=record,
                timeout_s=JOB_TIMEOUT_S, actor=Actor.system())
    return True


def settle_pending(*, record: SavedState | StateRestore, note: str) -> None:
    """Say on a save or restore still unsettled why (its host did not answer, libvirt still works
    on the guest); the guest stays held. No audit row: the sweep may say this every 10 s."""
    model = type(record)
    active = SAVED_STATE_ACTIVE if model is SavedState else RESTORE_ACTIVE
    model.objects.filter(pk=record.pk, status__in=active).update(error=note[:2000])
    record.error = note[:2000]


# --- Managed save: libvirt keeps the state, the next start resumes it -------------------------


def managed_save_request(*, vm: VirtualMachine, remove: bool = False, confirmed: bool = False, actor: Actor,
                         enqueue: bool = True):
    """Ask libvirt to stop a running guest keeping its state (its next start resumes exactly there),
    or, with ``remove`` (confirmed), to discard that state so the next start boots afresh.

    The job holds the guest's lease until it ends."""
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    host = vm.host
    action = A.MANAGED_SAVE_REMOVE if remove else A.MANAGED_SAVE
    parameters = {"vm_uuid": str(vm.uuid), "host": host.name, "remove": remove}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=action, target=vm, parameters=parameters, message=message, hint=hint)

    if not host.is_connectable:
        refused(f"The host {host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    if remove:
        if not vm.managed_save:
            refused(f"{vm.name} has no managed save.", "Refresh the host if this is out of date.")
        if not confirmed:
            refused(f"Confirm that {vm.name}'s managed save may be thrown away: its next start boots afresh.",
                    "Tick the confirmation.")
    elif vm.state not in (VMStateChoices.RUNNING, VMStateChoices.PAUSED, VMStateChoices.BLOCKED) or not vm.persistent:
        refused(f"{vm.name} is {vm.get_state_display().lower()}; only a running or paused persistent guest can be "
                "managed-saved.", "Start it first, or refresh the host if the state shown is out of date.")
    kind = K.MANAGED_SAVE_REMOVE if remove else K.MANAGED_SAVE
    try:
        with transaction.atomic():
            job = job_enqueue(kind=kind, func=MANAGED_SAVE_JOB, args=(vm.pk, remove), target=vm,
                              timeout_s=JOB_TIMEOUT_S, actor=actor, enqueue=enqueue)
            leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.SAVE, owner=job,
                               actor=actor, label=f"{kind.label.lower()} job #{job.pk}")
            audit_record(actor=actor, action=action, result=AuditResultChoices.OK, target=vm, parameters=parameters,
                         message=(f"Discarding the managed save of {vm.name} on {host.name} requested." if remove
                                  else f"Managed save of {vm.name} on {host.name} requested."), job=job)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=action, target=vm, parameters=parameters)
    return job


@transaction.atomic
def managed_save_finish(*, vm: VirtualMachine, job, remove: bool, ok: bool, error: str = "",
                        settled: dict | None = None) -> None:
    """End a managed save (or its discarding): the job's lease released, the outcome audited.
    ``settled``: the facts a settle job read on the host after the job was lost (its ``why`` said)."""
    leases.lease_release(owner=job)
    what = "discarding the managed save of" if remove else "managed save of"
    if settled is not None:
        message = f"{what.capitalize()} {vm.name}, settled after its job was lost: {settled['why']}"
    else:
        message = f"{what.capitalize()} {vm.name}: " + ("done." if ok else f"failed: {error}")
    audit_record(actor=Actor.system(), action=A.MANAGED_SAVE_REMOVE if remove else A.MANAGED_SAVE,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=vm, job=job,
                 parameters={"vm_uuid": str(vm.uuid), "error": error, **({"settled": settled} if settled else {})},
                 message=message)


# --- Deleting a state file ------------------------------------------------------------------------


def state_delete_request(*, state: SavedState, confirmed: bool, actor: Actor, enqueue: bool = True):
    """Ask to delete a saved state's file on its host (through the host session) and mark it deleted."""
    parameters = {"state": state.pk, "path": state.path, "host": state.host.name}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.STATE_DELETE, target=state, parameters=parameters, message=message, hint=hint)

    if state.status not in (SS.SAVED, SS.FAILED):
        refused(f"Saved state #{state.pk} is {state.get_status_display().lower()}: nothing to delete.")
    if not confirmed:
        refused(f"Confirm the deletion of {state.path}: the state cannot be restored afterwards.",
                "Tick the confirmation.")
    if not state.host.is_connectable:
        refused(f"The host {state.host.name} cannot be contacted: {state.host.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    if state.restores.filter(status__in=(RS.QUEUED, RS.RUNNING)).exists():
        refused(f"Saved state #{state.pk} is being restored.", "Wait until the restore ends.")
    with transaction.atomic():
        job = job_enqueue(kind=K.STATE_DELETE, func=STATE_DELETE_JOB, args=(state.pk,), target=state,
                          timeout_s=120, actor=actor, enqueue=enqueue)
        audit_record(actor=actor, action=A.STATE_DELETE, result=AuditResultChoices.OK, target=state,
                     parameters=parameters, job=job,
                     message=f"Deletion of {state.path} on {state.host.name} requested.")
    return job


@transaction.atomic
def state_deleted(*, state: SavedState, job, ok: bool, error: str = "", settled: dict | None = None) -> None:
    """End a state file's deletion (``settled``: as for ``managed_save_finish``)."""
    if ok:
        SavedState.objects.filter(pk=state.pk).update(status=SS.DELETED)
    if settled is not None:
        message = f"Deletion of {state.path} on {state.host.name}, settled after its job was lost: {settled['why']}"
    else:
        message = f"{state.path} deleted on {state.host.name}." if ok else f"Deleting {state.path} failed: {error}"
    audit_record(actor=Actor.system(), action=A.STATE_DELETE,
                 result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED, target=state, job=job,
                 parameters={"path": state.path, "error": error, **({"settled": settled} if settled else {})},
                 message=message)


# --- Managed saves and deletions whose job died (guest_state.reconciler) ------------------------


def job_settle_request(*, job: Job, reason: str) -> bool:
    """Queue a job that asks the host what became of the managed save or state deletion ``job``
    ran before it was lost, and records it. False when one is queued or running already."""
    if active_job(kind=K.JOB_SETTLE, target=job) is not None:
        return False
    job_enqueue(kind=K.JOB_SETTLE, func=JOB_SETTLE_JOB, args=(job.pk, reason[:500]), target=job,
                timeout_s=120, actor=Actor.system())
    return True
