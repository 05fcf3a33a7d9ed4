"""A power action whose job the worker lost is settled at once: the guest is freed and its
state re-read from its host (core.signals.job_lost)."""

from django.dispatch import receiver

from core.actors import Actor
from core.models import Job
from core.signals import job_lost

from . import leases, services
from .choices import VMActionChoices
from .models import VirtualMachine


def vm_action_job_lost(*, job_id: int, reason: str) -> bool:
    """Settle the power action job ``job_id`` whose worker died: audit that it failed, release the
    guest's lease (its owner, the job, has ended) and queue a refresh of the guest's host so the
    inventory shows the state libvirt reports. Returns whether the job was a power action."""
    job = Job.objects.filter(pk=job_id, kind__startswith="vm.", target_type="virtualmachine").first()
    vm = VirtualMachine.objects.select_related("host").filter(pk=job.target_id).first() if job else None
    if vm is None:
        return False
    action = job.kind.removeprefix("vm.")
    actor = Actor.system()
    if action in VMActionChoices.values:
        services.vm_action_outcome(vm=vm, action=VMActionChoices(action), ok=False, actor=actor, job=job,
                                   message=f"{vm.name}: the worker lost the {action} job ({reason}); "
                                           "its state is read again from the host.")
    leases.lease_release(owner=job)
    services.host_refresh_request(host=vm.host, actor=actor)
    return True


@receiver(job_lost, dispatch_uid="hosts.job_lost")
def _on_job_lost(sender, *, job_id: int, kind: str, reason: str, **kwargs) -> None:
    if kind.startswith("vm."):
        vm_action_job_lost(job_id=job_id, reason=reason)
