"""`Verify now`: the chain walk as a background job with progress."""

from __future__ import annotations

from django.db import transaction

from .actors import Actor
from .audit import audit_record
from .audit_verify import verify_chain
from .choices import AuditResultChoices
from .errors import PortalError
from .jobs import JobContext, job_enqueue, run_job
from .models import Job

AUDIT_VERIFY_KIND = "audit.verify"
# A million events verify in well under a minute; far more, or a slow disk, still fit.
AUDIT_VERIFY_TIMEOUT_S = 1800


@transaction.atomic
def audit_verify_request(*, actor: Actor) -> Job:
    """Queue a verification of the audit chain (audited)."""
    job = job_enqueue(kind=AUDIT_VERIFY_KIND, func="core.audit_jobs.audit_verify_job",
                      timeout_s=AUDIT_VERIFY_TIMEOUT_S, actor=actor)
    audit_record(actor=actor, action="audit.verify_requested", result=AuditResultChoices.OK, job=job,
                 message="Verification of the audit chain queued.")
    return job


def _verify(ctx: JobContext) -> dict:
    ctx.log("Walking the audit chain…")
    report = verify_chain(progress=ctx.progress)
    if not report.ok:
        brk = report.first_break
        raise PortalError(f"Audit chain broken ({brk.kind}) at event #{brk.event_id}: {brk.message}",
                          hint="Compare with an export or the checkpoint file; find who had write access "
                               "to the database.")
    ctx.log(f"Intact: {report.events} events, {report.checkpoints} checkpoints.")
    return {"events": report.events, "checkpoints": report.checkpoints, "last_id": report.last_id}


def audit_verify_job(job_id: int) -> None:
    run_job(job_id, _verify)
