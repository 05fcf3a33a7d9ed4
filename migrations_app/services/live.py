"""What a person (or the system) asks of a live migration: request it, abort it, force it to
complete, or have both hosts asked where the guest is (reconcile).

Refusals are audited (refusals.refuse); an accepted request is audited with the change.
"""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices, RoleChoices
from core.jobs import active_job, job_enqueue
from core.models import Job
from hosts import leases
from hosts.choices import GuestLeaseKindChoices
from hosts.models import Host, VirtualMachine
from hosts.permissions import actor_refused_on

from .. import policy, states
from ..choices import (
    MigrationAuditActionChoices as A,
    MigrationJobKindChoices,
    MigrationStatusChoices as S,
    VerdictStatusChoices,
)
from ..models import Migration, MigrationPlan
from ..options import MigrationOptions, from_dict, to_dict, validate
from .events import migration_changed
from .records import migration_finish
from .refusals import refuse
from .slots import migrations_dispatch

RECONCILE_JOB = "migrations_app.jobs.reconcile_job"


def migration_request(
    *,
    vm: VirtualMachine,
    destination: Host,
    options: MigrationOptions,
    actor: Actor,
    plan: MigrationPlan | None = None,
    reverses: Migration | None = None,
    run_by_worker: bool = True,
) -> Migration:
    """Ask for a migration of ``vm`` to ``destination``: audited, then queued for a slot.

    Refused (and audited) when the options do not fit together, a host cannot be contacted
    or is in maintenance, the chosen preflight failed, the guest's last migration needs
    attention, or another operation holds the guest's lease (GuestBusy) — claimed in the
    transaction that creates the record, so of two simultaneous requests of any kinds
    exactly one gets through. ``run_by_worker=False``: the caller runs it (vm_migrate --wait).
    """
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    source = vm.host
    parameters = {
        "vm_uuid": str(vm.uuid), "source": source.name, "destination": destination.name,
        "options": to_dict(options), "plan": plan.pk if plan else None,
    }

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.REQUEST, target=vm, parameters=parameters, message=message, hint=hint)

    outside = actor_refused_on(actor, RoleChoices.OPERATOR, (source, destination))
    if outside:
        refused(f"{actor.label} does not hold the Operator role on {', '.join(outside)}.",
                "Ask an admin for a grant on the host's group, or choose a host of your groups.")
    problems = validate(options)
    if problems:
        refused(" ".join(problems), "Change the options and try again.")
    if destination.pk == source.pk:
        refused(f"{vm.name} already runs on {source.name}.", "Choose another destination.")
    for role, host in (("source", source), ("destination", destination)):
        if not host.is_connectable:
            refused(f"The {role} host {host.name} cannot be contacted: {host.get_status_display()}.",
                    "Fix the host's connection first (see its page).")
    if destination.in_maintenance:
        refused(f"{destination.name} is in maintenance.", "Take it out of maintenance, or choose another destination.")
    if plan is not None:
        run = plan.runs.filter(destination=destination).first()
        if run is not None and run.overall == VerdictStatusChoices.FAIL:
            failing = ", ".join(v["check"] for v in run.verdicts if v.get("status") == VerdictStatusChoices.FAIL)
            refused(f"The preflight for {destination.name} failed ({failing or run.error}).",
                    "Fix what the preflight grid says, then check again.")
    latest = Migration.objects.filter(vm_uuid=vm.uuid).order_by("-created", "-pk").first()
    if latest is not None and latest.status == S.NEEDS_ATTENTION:
        refused(f"The last migration of {vm.name} (#{latest.pk}) needs attention: {latest.outcome}",
                f"{latest.repair} Then reconcile #{latest.pk} from its page.".strip())
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=source, destination=destination,
                options=to_dict(options), plan=plan, reverses=reverses, requested_by=actor.user,
                run_by_worker=run_by_worker,
                phase="Waiting for a free migration slot" if run_by_worker else "Waiting to start",
            )
            # Held until migration_finish; the database decides between simultaneous requests.
            leases.lease_claim(
                guest_uuid=vm.uuid, guest_name=vm.name, owner=migration, actor=actor,
                kind=GuestLeaseKindChoices.LIVE_MIGRATION if options.live else GuestLeaseKindChoices.OFFLINE_MIGRATION,
            )
            audit_record(
                actor=actor, action=A.REQUEST, result=AuditResultChoices.OK, target=migration,
                parameters=parameters,
                message=f"Migrate {vm.name} from {source.name} to {destination.name} "
                        f"({'live' if options.live else 'offline'}) requested.",
            )
            migration_changed(migration)
            if run_by_worker:
                transaction.on_commit(migrations_dispatch)
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=A.REQUEST, target=vm, parameters=parameters)
    return migration


def migration_abort(*, migration: Migration, actor: Actor) -> Migration:
    """Abort: a queued migration ends at once; a running one is cancelled by its runner.

    The runner sees the request within a sample interval and aborts libvirt's job on the
    source; the guest keeps running there. Too late once libvirt has finished.
    """
    parameters = {"status": migration.status}
    for _attempt in range(2):  # a queued one may start between reading and ending it: look again
        with transaction.atomic():
            m = Migration.objects.select_related("source").get(pk=migration.pk)
            if m.status == S.QUEUED:
                if migration_finish(
                    migration=m, status=S.ABORTED, action=A.ABORT, actor=actor, result=AuditResultChoices.OK,
                    outcome=f"Aborted before it started; {m.vm_name} stays on {m.source.name}.",
                ):
                    return m
                continue
            if m.status in states.ABORTED_BY_RUNNER:
                # Asking twice is asking once: only the first request is recorded.
                if Migration.objects.filter(pk=m.pk, abort_requested__isnull=True).update(
                    abort_requested=timezone.now()
                ):
                    audit_record(
                        actor=actor, action=A.ABORT, result=AuditResultChoices.OK, target=m,
                        parameters=parameters,
                        message=f"Abort of the migration of {m.vm_name} requested; it stays on {m.source.name}.",
                        job=m.job,
                    )
                    m.refresh_from_db()
                    migration_changed(m)
                return m
            break
    migration.refresh_from_db()
    refuse(
        actor=actor, action=A.ABORT, target=migration, parameters=parameters,
        message=f"Migration #{migration.pk} is {migration.get_status_display().lower()}; it can no longer be aborted.",
        hint=(
            "libvirt has finished; the portal is checking where the guest runs."
            if migration.status == S.COMPLETING else ""
        ),
    )


def migration_force_complete(*, migration: Migration, actor: Actor) -> Migration:
    """Finish a live migration now: switch to post-copy if allowed, else allow a longer pause."""
    options = from_dict(migration.options)
    action = policy.force_complete_action(options)
    parameters = {"status": migration.status, "action": action}
    with transaction.atomic():
        m = Migration.objects.get(pk=migration.pk)
        if states.can_force(m):
            Migration.objects.filter(pk=m.pk).update(force_complete_requests=F("force_complete_requests") + 1)
            how = (
                "switching to post-copy (the guest runs on the destination at once)"
                if action == policy.ForceCompleteAction.POSTCOPY
                else "raising the allowed downtime step by step"
            )
            audit_record(
                actor=actor, action=A.FORCE_COMPLETE, result=AuditResultChoices.OK, target=m,
                parameters=parameters, message=f"Force complete of {m.vm_name} requested: {how}.", job=m.job,
            )
            m.refresh_from_db()
            migration_changed(m)
            return m
    refuse(
        actor=actor, action=A.FORCE_COMPLETE, target=migration, parameters=parameters,
        message=f"Migration #{migration.pk} is {migration.get_status_display().lower()}"
                + ("" if options.live else " and offline")
                + "; only a running live migration can be forced to complete.",
    )


def migration_reconcile_request(*, migration: Migration, actor: Actor, reason: str = "") -> Job:
    """Queue asking both hosts where the guest is and settling the record (one at a time per migration).

    The system asks for any active migration whose worker died; a person only for one that
    needs attention (a running migration is its runner's business).
    """
    if actor.user is not None and not states.can_reconcile(migration):
        refuse(
            actor=actor, action=A.RECONCILE, target=migration, parameters={"status": migration.status},
            message=f"Migration #{migration.pk} is {migration.get_status_display().lower()}; "
                    "only one that needs attention is reconciled by hand.",
        )
    with transaction.atomic():
        waiting = active_job(kind=MigrationJobKindChoices.RECONCILE, target=migration)
        if waiting is not None:
            return waiting
        job = job_enqueue(
            kind=MigrationJobKindChoices.RECONCILE, func=RECONCILE_JOB, args=(migration.pk, reason),
            target=migration, timeout_s=policy.RECONCILE_TIMEOUT_S, actor=actor,
        )
        if actor.user is not None:
            audit_record(
                actor=actor, action=A.RECONCILE, result=AuditResultChoices.OK, target=migration,
                parameters={"status": migration.status},
                message=f"Asked both hosts where {migration.vm_name} runs.", job=job,
            )
    return job
