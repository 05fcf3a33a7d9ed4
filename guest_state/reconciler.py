"""Saves, restores, managed saves and state deletions whose job died: find them, ask the host, settle the record.

Finding is cheap (database and Redis only): ``states_job_lost()`` runs at once when RQ reports
that a save's or restore's job died (core.signals.job_lost, see receivers.py), and
``states_reconcile()`` runs in the ``watch_hosts`` loop every VMPORTAL_GUEST_STATE_RECONCILE_SECONDS
for records whose job ended or vanished otherwise. Each record found gets a settle job, which
asks the host (the guest's state there, a libvirt job on it, the state file's header) and records
what ``reconcile.save_outcome`` / ``restore_outcome`` make of it — releasing the guest's lease
and writing the audit row in the transaction that ends the record. A host that does not answer
is not guessed at: the record stays active (the guest held) and says so; the sweep asks again.

A managed save or a state file's deletion has no record but its job (which held the guest's
lease): when it is lost, ``other_job_lost`` queues a settle job that asks the host (the guest's
state and managed-save image; whether the file is there), updates what the inventory shows, and
writes the outcome's audit row — saying "not known" when the host does not answer (its next
refresh shows the truth; a restore checks a state file before using it).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from core.choices import JobLogLevelChoices
from core.jobs import JobContext, rq_job_state
from core.models import AuditEvent, Job
from hosts import access
from hosts import services as host_services
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as presence_adapter
from hosts.adapters.errors import AdapterError
from hosts.models import VirtualMachine

from . import runner, services
from .choices import (
    RESTORE_ACTIVE,
    SAVED_STATE_ACTIVE,
    GuestStateAuditActionChoices as A,
    GuestStateJobKindChoices as K,
    RestoreStatusChoices as RS,
    SavedStateStatusChoices as SS,
)
from .models import SavedState, StateRestore
from .reconcile import (
    DONE,
    FAILED,
    MAGIC_LEN,
    RESTORED,
    SAVED,
    WAIT,
    GuestOnHost,
    Settlement,
    StateFile,
    managed_save_outcome,
    orphan_reason,
    restore_outcome,
    save_outcome,
    state_delete_outcome,
)

logger = logging.getLogger(__name__)

# How long a settle job waits for a save or restore libvirt still runs (libvirtd goes on after
# its client died) before leaving the record to the next sweep, and how often it looks.
JOB_END_WAIT_S = 6.0
ASK_AGAIN_S = 0.25


def _lost_reason(record: SavedState | StateRestore, *, now: datetime, ask_rq: bool) -> str | None:
    job = record.job
    return orphan_reason(job_id=job.pk if job else None, job_status=job.status if job else None,
                         job_error=job.error if job else "",
                         rq_state=rq_job_state(job, now=now) if ask_rq and job else None)


def states_job_lost(*, job_id: int, reason: str) -> int:
    """The worker lost job ``job_id`` (core.signals.job_lost): queue settling of the save or restore
    it ran, at once rather than at the next sweep. Returns how many were queued."""
    queued = 0
    for record in [*SavedState.objects.filter(job_id=job_id, status__in=SAVED_STATE_ACTIVE),
                   *StateRestore.objects.filter(job_id=job_id, status__in=RESTORE_ACTIVE)]:
        queued += services.settle_request(record=record, reason=f"the worker lost its job #{job_id} ({reason})")
    return queued


def states_reconcile(*, now: datetime | None = None) -> int:
    """Periodic: queue settling of every active save or restore whose job ended or is gone."""
    now = now or timezone.now()
    queued = 0
    for record in [*SavedState.objects.filter(status__in=SAVED_STATE_ACTIVE).select_related("job"),
                   *StateRestore.objects.filter(status__in=RESTORE_ACTIVE).select_related("job")]:
        reason = _lost_reason(record, now=now, ask_rq=True)
        if reason:
            queued += services.settle_request(record=record, reason=reason)
    return queued


# --- asking the host --------------------------------------------------------------------------


def guest_on(session, guest_uuid: str) -> GuestOnHost:
    found = presence_adapter.domain_presence(session.libvirt, guest_uuid)
    return GuestOnHost(reachable=True, exists=found.exists, state=found.state, reason=found.reason,
                       job_active=found.job_active)


def state_file(ssh, path: str) -> StateFile:
    """The file at ``path`` on the host: there at all, its libvirt header's magic, its size."""
    seen = runner.file_stat(ssh, path)
    if seen is None:
        return StateFile(present=False)
    head = ssh.run(["head", "-c", str(MAGIC_LEN), "--", path], check=False)
    return StateFile(present=True, magic=head.stdout[:MAGIC_LEN] if head.ok else "", size=seen[0])


def _lost_for_s(record: SavedState | StateRestore, now: datetime) -> float:
    since = (record.job.ended if record.job and record.job.ended else None) or record.created
    return max(0.0, (now - since).total_seconds())


def _facts(guest: GuestOnHost, file: StateFile | None = None) -> dict:
    facts = {"reachable": guest.reachable, "guest": guest.describe() if guest.reachable else None,
             "job_active": guest.job_active}
    if file is not None:
        facts["file"] = {"present": file.present, "complete": file.complete, "size": file.size}
    return facts


def _still_orphaned(record, reason: str, ctx: JobContext) -> str | None:
    """Re-check: the worker may have finished, or the job reached Redis, since this was queued."""
    if record.status not in (SAVED_STATE_ACTIVE if isinstance(record, SavedState) else RESTORE_ACTIVE):
        ctx.log(f"{record} is {record.status}; nothing to settle")
        return None
    still = _lost_reason(record, now=timezone.now(), ask_rq=True)
    if still is None:
        ctx.log(f"{record} is {record.status} and its job still runs; nothing to settle")
        return None
    return reason or still


def settle_save(*, state_id: int, reason: str = "", ctx: JobContext) -> dict:
    """Ask the save's host what became of it and record that (or why it cannot be known yet)."""
    state = SavedState.objects.select_related("host", "job").get(pk=state_id)
    reason = _still_orphaned(state, reason, ctx)
    if reason is None:
        return {"status": state.status, "settled": False}
    ctx.log(f"Settling {state}: {reason}")
    attention_after_s = settings.VMPORTAL_GUEST_STATE_ATTENTION_SECONDS
    guest, file, removed, figures, unanswered = GuestOnHost(reachable=False), None, None, {}, ""
    try:
        with access.open_session(state.host) as session:
            asked = time.monotonic()
            while True:
                guest, file = guest_on(session, str(state.vm_uuid)), state_file(session.ssh, state.path)
                settlement = save_outcome(host=state.host.name, guest=guest, file=file,
                                          lost_for_s=_lost_for_s(state, timezone.now()),
                                          attention_after_s=attention_after_s)
                if settlement.outcome != WAIT or time.monotonic() - asked > JOB_END_WAIT_S:
                    break
                time.sleep(ASK_AGAIN_S)  # libvirt still works on the guest: look again shortly
            if settlement.outcome == SAVED:
                # As the runner records it: the disks as they are after the save, the file's checksum.
                figures = {"size": file.size, "sha256": runner.file_sha256(session.ssh, state.path),
                           "disks": runner.disks_at_save(session.ssh, state.vm_id)}
            elif settlement.remove_partial:
                removed = session.ssh.run(["rm", "-f", "--", state.path], check=False).ok
    except AdapterError as exc:
        ctx.log(f"{state.host.name}: {exc.message}", level=JobLogLevelChoices.WARNING)
        guest, file, unanswered = GuestOnHost(reachable=False), None, f" ({exc.message})"
        settlement = save_outcome(host=state.host.name, guest=guest, file=None,
                                  lost_for_s=_lost_for_s(state, timezone.now()), attention_after_s=attention_after_s)
    why = settlement.why
    if removed is False:
        why = why.replace("The incomplete file is removed.", "Removing the incomplete file failed; it is left.")
    ctx.log(why, level=JobLogLevelChoices.INFO if settlement.outcome != WAIT else JobLogLevelChoices.WARNING)
    facts = {**_facts(guest, file), "reason": reason, **({"removed_partial": removed} if removed is not None else {})}
    if settlement.outcome == WAIT:
        services.settle_pending(record=state, note=f"{reason[:1].upper()}{reason[1:]}. {why}{unanswered}")
        return {"status": state.status, "settled": False, "why": why}
    ok = settlement.outcome == SAVED
    services.save_finish(state=state, ok=ok, error="" if ok else f"{reason[:1].upper()}{reason[1:]}. {why}",
                         settled={**facts, "outcome": settlement.outcome}, **figures)
    logger.warning("saved state %s settled %s: %s", state.pk, settlement.outcome, why)
    return {"status": SAVED if ok else FAILED, "settled": True, "why": why}


def settle_restore(*, restore_id: int, reason: str = "", ctx: JobContext) -> dict:
    """Ask the restore's host whether the guest runs there and record that (or why it cannot be known yet)."""
    restore = StateRestore.objects.select_related("state", "host", "job").get(pk=restore_id)
    reason = _still_orphaned(restore, reason, ctx)
    if reason is None:
        return {"status": restore.status, "settled": False}
    ctx.log(f"Settling {restore}: {reason}")
    started = restore.status == RS.RUNNING
    asked = time.monotonic()
    settlement: Settlement
    while True:
        guest = _ask_restore_host(restore, ctx)
        settlement = restore_outcome(host=restore.host.name, started=started, guest=guest,
                                     lost_for_s=_lost_for_s(restore, timezone.now()),
                                     attention_after_s=settings.VMPORTAL_GUEST_STATE_ATTENTION_SECONDS)
        if settlement.outcome != WAIT or not guest.reachable or time.monotonic() - asked > JOB_END_WAIT_S:
            break
        time.sleep(ASK_AGAIN_S)  # libvirt still restores the guest: look again shortly
    why = settlement.why
    ctx.log(why, level=JobLogLevelChoices.INFO if settlement.outcome != WAIT else JobLogLevelChoices.WARNING)
    if settlement.outcome == WAIT:
        services.settle_pending(record=restore, note=f"{reason[:1].upper()}{reason[1:]}. {why}")
        return {"status": restore.status, "settled": False, "why": why}
    ok = settlement.outcome == RESTORED
    services.restore_finish(restore=restore, ok=ok, error="" if ok else f"{reason[:1].upper()}{reason[1:]}. {why}",
                            settled={**_facts(guest), "reason": reason, "outcome": settlement.outcome})
    logger.warning("restore %s settled %s: %s", restore.pk, settlement.outcome, why)
    return {"status": RS.SUCCEEDED if ok else RS.FAILED, "settled": True, "why": why}


def _ask_restore_host(restore: StateRestore, ctx: JobContext) -> GuestOnHost:
    try:
        with access.open_session(restore.host) as session:
            return guest_on(session, str(restore.state.vm_uuid))
    except AdapterError as exc:
        ctx.log(f"{restore.host.name}: {exc.message}", level=JobLogLevelChoices.WARNING)
        return GuestOnHost(reachable=False)


# --- Managed saves and state-file deletions whose job died -------------------------------------


def other_job_lost(*, job_id: int, reason: str) -> bool:
    """The worker lost a managed-save or state-deletion job: queue asking its host what happened."""
    job = Job.objects.filter(pk=job_id).first()
    return job is not None and services.job_settle_request(job=job, reason=f"the worker lost its job #{job_id} ({reason})")


def _outcome_recorded(job: Job, action: str) -> bool:
    """The request wrote one audit row naming the job; a second is its outcome (the job ended it
    before it was lost, or a settle job did)."""
    return AuditEvent.objects.filter(job=job, action=action).count() > 1


def settle_lost_job(*, lost_job_id: int, reason: str = "", ctx: JobContext) -> dict:
    """Ask the host what became of the managed save or deletion job ``lost_job_id`` and record it."""
    lost = Job.objects.get(pk=lost_job_id)
    if lost.kind in (K.MANAGED_SAVE, K.MANAGED_SAVE_REMOVE):
        return _settle_managed_save(lost, reason, ctx)
    if lost.kind == K.STATE_DELETE:
        return _settle_state_delete(lost, reason, ctx)
    ctx.log(f"Job #{lost.pk} ({lost.kind}) is not one this settles")
    return {"settled": False}


def _target(model, job: Job):
    return model.objects.select_related("host").filter(pk=int(job.target_id)).first() if job.target_id.isdigit() else None


def _settle_managed_save(lost: Job, reason: str, ctx: JobContext) -> dict:
    remove = lost.kind == K.MANAGED_SAVE_REMOVE
    action = A.MANAGED_SAVE_REMOVE if remove else A.MANAGED_SAVE
    vm = _target(VirtualMachine, lost)
    if vm is None or _outcome_recorded(lost, action):
        ctx.log(f"Job #{lost.pk}'s outcome is recorded already (or its guest is gone); nothing to settle")
        return {"settled": False}
    ctx.log(f"Settling job #{lost.pk} of {vm.name}: {reason}")
    uuid = str(vm.uuid)
    guest, has_image, info = GuestOnHost(reachable=False), None, None
    try:
        with access.open_session(vm.host) as session:
            asked = time.monotonic()
            while True:
                guest = guest_on(session, uuid)
                has_image = lv.saved_state(session.libvirt, uuid).managed_save if guest.exists else False
                settlement = managed_save_outcome(host=vm.host.name, remove=remove, guest=guest, has_image=has_image)
                if settlement.outcome != WAIT or time.monotonic() - asked > JOB_END_WAIT_S:
                    break
                time.sleep(ASK_AGAIN_S)  # libvirt still saves the guest: look again shortly
            info = lv.get_domain(session.libvirt, uuid) if guest.exists else None
    except AdapterError as exc:
        ctx.log(f"{vm.host.name}: {exc.message}", level=JobLogLevelChoices.WARNING)
        guest, has_image = GuestOnHost(reachable=False), None
        settlement = managed_save_outcome(host=vm.host.name, remove=remove, guest=guest, has_image=None)
    ctx.log(settlement.why, level=JobLogLevelChoices.INFO if settlement.outcome == DONE else JobLogLevelChoices.WARNING)
    if info is not None:
        host_services.vm_state_save(vm=vm, info=info)
    if has_image is not None:
        VirtualMachine.objects.filter(pk=vm.pk).update(managed_save=has_image)
    ok = settlement.outcome == DONE
    services.managed_save_finish(
        vm=vm, job=lost, remove=remove, ok=ok, error="" if ok else f"{reason[:1].upper()}{reason[1:]}. {settlement.why}",
        settled={**_facts(guest), "managed_save": has_image, "reason": reason, "outcome": settlement.outcome,
                 "why": settlement.why})
    return {"settled": True, "outcome": settlement.outcome, "why": settlement.why}


def _settle_state_delete(lost: Job, reason: str, ctx: JobContext) -> dict:
    state = _target(SavedState, lost)
    if state is None or state.status == SS.DELETED or _outcome_recorded(lost, A.STATE_DELETE):
        ctx.log(f"Job #{lost.pk}'s outcome is recorded already; nothing to settle")
        return {"settled": False}
    ctx.log(f"Settling the deletion of {state.path}: {reason}")
    try:
        with access.open_session(state.host) as session:
            present = runner.file_stat(session.ssh, state.path) is not None
    except AdapterError as exc:
        ctx.log(f"{state.host.name}: {exc.message}", level=JobLogLevelChoices.WARNING)
        present = None
    settlement = state_delete_outcome(host=state.host.name, path=state.path, file_present=present)
    ctx.log(settlement.why, level=JobLogLevelChoices.INFO if settlement.outcome == DONE else JobLogLevelChoices.WARNING)
    ok = settlement.outcome == DONE
    services.state_deleted(state=state, job=lost, ok=ok,
                           error="" if ok else f"{reason[:1].upper()}{reason[1:]}. {settlement.why}",
                           settled={"file_present": present, "reason": reason, "outcome": settlement.outcome,
                                    "why": settlement.why})
    return {"settled": True, "outcome": settlement.outcome, "why": settlement.why}
