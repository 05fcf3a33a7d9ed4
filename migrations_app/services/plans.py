"""The wizard's plan: one background preflight per candidate destination, and its bookkeeping.

``migration_plan_create`` queues the preflights; the preflight job (candidates.py) records
its progress and verdicts through ``preflight_started``/``_done``/``_failed``; a repair
queues one again with ``preflight_recheck``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts.models import Host, VirtualMachine

from .. import policy
from ..choices import (
    MigrationAuditActionChoices as A,
    MigrationJobKindChoices,
    PreflightRunStatusChoices,
    VerdictStatusChoices,
)
from ..models import MigrationPlan, PreflightRun
from ..options import MigrationOptions, to_dict, validate
from ..verdicts import verdict_dicts, verdicts_overall
from .refusals import refuse

PREFLIGHT_JOB = "migrations_app.jobs.preflight_job"


def migration_plan_create(
    *, vm: VirtualMachine, options: MigrationOptions, actor: Actor, destinations: Sequence[Host] | None = None
) -> MigrationPlan:
    """Check where the guest could go: one background preflight per candidate host.

    Candidates are every other host (or ``destinations``). A host the portal may not contact
    gets its row at once with the reason, and no job.
    """
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    parameters = {"vm_uuid": str(vm.uuid), "source": vm.host.name, "options": to_dict(options)}
    problems = validate(options)
    if problems:
        refuse(actor=actor, action=A.PREFLIGHT, target=vm, parameters=parameters, message=" ".join(problems))
    if not vm.host.is_connectable:
        refuse(actor=actor, action=A.PREFLIGHT, target=vm, parameters=parameters,
               message=f"The source host {vm.host.name} cannot be contacted: {vm.host.get_status_display()}.",
               hint="Fix the host's connection first (see its page).")
    candidates = [
        host for host in (destinations if destinations is not None else Host.objects.all()) if host.pk != vm.host_id
    ]
    with transaction.atomic():
        plan = MigrationPlan.objects.create(
            vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=vm.host, options=to_dict(options), created_by=actor.user
        )
        for host in candidates:
            run = PreflightRun.objects.create(plan=plan, destination=host)
            if not host.is_connectable:
                run.status = PreflightRunStatusChoices.ERROR
                run.overall = VerdictStatusChoices.FAIL
                run.error = f"{host.name} cannot be contacted: {host.get_status_display()}."
                run.error_hint = "Confirm its SSH host key (or fix its connection) on the host's page."
                run.checked = timezone.now()
                run.save()
                continue
            run.job = job_enqueue(
                kind=MigrationJobKindChoices.PREFLIGHT, func=PREFLIGHT_JOB, args=(run.pk,), target=plan,
                timeout_s=policy.PREFLIGHT_TIMEOUT_S, actor=actor,
            )
            run.save(update_fields=["job"])
        audit_record(
            actor=actor,
            action=A.PREFLIGHT,
            result=AuditResultChoices.OK,
            target=vm,
            parameters={**parameters, "plan": plan.pk, "destinations": [h.name for h in candidates]},
            message=f"Checking {len(candidates)} destination(s) for {vm.name}.",
        )
    return plan


@transaction.atomic
def preflight_started(*, run: PreflightRun) -> bool:
    """Mark a queued preflight as running; False if it is not queued any more."""
    return bool(
        PreflightRun.objects.filter(pk=run.pk, status=PreflightRunStatusChoices.QUEUED).update(
            status=PreflightRunStatusChoices.RUNNING
        )
    )


@transaction.atomic
def preflight_done(*, run: PreflightRun, verdicts: Sequence[Any], memory_free_kib: int | None) -> PreflightRun:
    """Store a finished preflight's verdicts, their overall status and the destination's free memory."""
    run.verdicts = verdict_dicts(verdicts)
    run.overall = verdicts_overall(run.verdicts)
    run.status = PreflightRunStatusChoices.DONE
    run.memory_free_kib = memory_free_kib
    run.checked = timezone.now()
    run.error = run.error_hint = ""
    run.save()
    return run


@transaction.atomic
def preflight_failed(*, run: PreflightRun, error: str, hint: str = "") -> PreflightRun:
    """The preflight could not check this destination: a failure, with why and what to do."""
    run.status = PreflightRunStatusChoices.ERROR
    run.overall = VerdictStatusChoices.FAIL
    run.error = error
    run.error_hint = hint
    run.checked = timezone.now()
    run.save()
    return run


def preflight_recheck(*, run: PreflightRun) -> Job:
    """Queue this destination's preflight again (after a repair)."""
    with transaction.atomic():
        PreflightRun.objects.filter(pk=run.pk).update(status=PreflightRunStatusChoices.QUEUED, checked=None)
        job = job_enqueue(
            kind=MigrationJobKindChoices.PREFLIGHT, func=PREFLIGHT_JOB, args=(run.pk,), target=run.plan,
            timeout_s=policy.PREFLIGHT_TIMEOUT_S, actor=Actor.system(),
        )
        PreflightRun.objects.filter(pk=run.pk).update(job=job)
    return job
