"""Image permission repairs a preflight offers (the recipe's chmod, done right).

The job (permissions.py) changes the files and records each through
``image_permissions_repaired``; then the preflight checks again (plans.preflight_recheck).
"""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts import leases
from hosts.choices import GuestLeaseKindChoices

from .. import policy
from ..choices import MigrationAuditActionChoices as A, MigrationJobKindChoices
from ..image_repairs import run_repairs
from ..models import PreflightRun
from .refusals import refuse

IMAGE_PERMISSIONS_JOB = "migrations_app.jobs.image_permissions_job"


def image_permissions_repair_request(*, run: PreflightRun, actor: Actor) -> Job:
    """Repair the owner/mode of the images this preflight found QEMU could not open, on its destination.

    Only the files the run recorded are touched. Refused (audited) when there is nothing to
    repair, the preflight is still running, the host cannot be contacted, or another
    operation holds the guest's lease (GuestBusy); the job holds it while it runs.
    """
    run = PreflightRun.objects.select_related("destination", "plan").get(pk=run.pk)
    repairs = run_repairs(run)
    parameters = {"host": run.destination.name, "plan": run.plan_id, "files": [list(r) for r in repairs]}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.IMAGE_PERMISSIONS_REQUEST, target=run.plan, parameters=parameters,
               message=message, hint=hint)

    if run.is_pending:
        refused("The preflight for this destination is still running.", "Wait for its grid, then repair.")
    if not repairs:
        refused(f"The preflight found no image on {run.destination.name} that QEMU cannot open.",
                "Run the preflight again if you changed something by hand.")
    if not run.destination.is_connectable:
        refused(f"{run.destination.name} cannot be contacted: {run.destination.get_status_display()}.",
                "Fix the host's connection first (see its page).")
    try:
        with transaction.atomic():
            job = job_enqueue(
                kind=MigrationJobKindChoices.REPAIR_PERMISSIONS, func=IMAGE_PERMISSIONS_JOB, args=(run.pk,),
                target=run.plan, timeout_s=policy.REPAIR_TIMEOUT_S, actor=actor,
            )
            # The guest's images change owner: nothing else may move or start it meanwhile.
            # Held by the job until it ends (jobs.image_permissions_job releases it).
            leases.lease_claim(
                guest_uuid=run.plan.vm_uuid, guest_name=run.plan.vm_name, kind=GuestLeaseKindChoices.IMAGE_REPAIR,
                owner=job, actor=actor, label=f"image permission repair job #{job.pk}",
            )
            audit_record(
                actor=actor, action=A.IMAGE_PERMISSIONS_REQUEST, result=AuditResultChoices.OK, target=run.plan,
                parameters=parameters,
                message=f"Repair the owner and mode of {len(repairs)} image(s) on {run.destination.name} for QEMU.",
                job=job,
            )
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.IMAGE_PERMISSIONS_REQUEST, target=run.plan,
                             parameters=parameters)
    return job


@transaction.atomic
def image_permissions_repaired(*, run: PreflightRun, path: str, before: str, after: str, opens: bool,
                               job: Job | None) -> None:
    """Audit one repaired image: its owner/mode before and after, and whether QEMU can open it now."""
    audit_record(
        actor=Actor.system(), action=A.IMAGE_PERMISSIONS,
        result=AuditResultChoices.OK if opens else AuditResultChoices.FAILED, target=run.plan,
        parameters={"host": run.destination.name, "path": path, "before": before, "after": after, "qemu_opens": opens},
        message=f"{path} on {run.destination.name}: {before} → {after}"
                + ("" if opens else " (QEMU still cannot open it)"),
        job=job,
    )
