"""A job of this app the worker lost is settled at once (core.signals.job_lost).

A snapshot's record ends as failed or the revert/deletion is audited as failed, the guest's
lease is released, and a check with libvirt is queued so the card shows what libvirt really
has. A save's or restore's record, and a managed save or a state file's deletion (whose job is
their only record), is handed to the reconciler, whose settle job asks the host what really
happened (guest_state.reconciler)."""

from django.dispatch import receiver

from core.actors import Actor
from core.models import Job
from core.signals import job_lost

from . import snapshot_services as services
from .choices import GuestStateJobKindChoices as K
from .models import GuestSnapshot
from .reconciler import other_job_lost, states_job_lost

_SNAPSHOT_KINDS = (K.SNAPSHOT_CREATE, K.SNAPSHOT_REVERT, K.SNAPSHOT_DELETE)


def snapshot_job_lost(*, job_id: int, reason: str) -> bool:
    """Settle the snapshot job ``job_id`` whose work stopped outside run_job. Returns whether it was one."""
    job = Job.objects.filter(pk=job_id, kind__in=_SNAPSHOT_KINDS).first()
    snapshot = (GuestSnapshot.objects.select_related("host").filter(pk=job.target_id).first()
                if job is not None and job.target_id.isdigit() else None)
    if snapshot is None:
        return False
    error = f"The worker lost the job ({reason}); what libvirt has is checked again."
    if job.kind == K.SNAPSHOT_CREATE:
        services.snapshot_finish(snapshot=snapshot, ok=False, error=error)
    elif job.kind == K.SNAPSHOT_REVERT:
        services.snapshot_reverted(snapshot=snapshot, job=job, ok=False, error=error)
    else:
        services.snapshot_deleted(snapshot=snapshot, job=job, ok=False, error=error)
    if snapshot.vm_id is not None:
        services.snapshot_check_request(vm=snapshot.vm, actor=Actor.system())
    return True


@receiver(job_lost, dispatch_uid="guest_state.job_lost")
def _on_job_lost(sender, *, job_id: int, kind: str, reason: str, **kwargs) -> None:
    if kind in _SNAPSHOT_KINDS:
        snapshot_job_lost(job_id=job_id, reason=reason)
    elif kind in (K.SAVE, K.RESTORE):
        states_job_lost(job_id=job_id, reason=reason)
    elif kind in (K.MANAGED_SAVE, K.MANAGED_SAVE_REMOVE, K.STATE_DELETE):
        other_job_lost(job_id=job_id, reason=reason)
