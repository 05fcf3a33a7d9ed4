"""Migration writes: plans, requests, slots, every status change, abort and force-complete.

Each service runs in one transaction and writes its audit event there; a refused request is
audited in a transaction of its own (the refusal must outlive it) and raises ServiceRefused.
Jobs are enqueued and browsers told only once the transaction commits. No host I/O here:
the runner and the reconciler do that and record what they found through these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record, audit_record_now
from core.choices import JOB_ACTIVE_STATES, AuditResultChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts.choices import VMStateChoices
from hosts.models import Host, VirtualMachine
from hosts.services import ServiceRefused
from storage.models import Share

from . import policy, states
from .choices import (
    COLD_ACTIVE_STATES,
    MIGRATION_ACTIVE_STATES,
    MIGRATION_RUNNING_STATES,
    ColdMigrationStatusChoices as ColdStatus,
    MigrationJobKindChoices,
    MigrationStatusChoices as S,
    PreflightRunStatusChoices,
    SlotDirectionChoices,
    VerdictStatusChoices,
)
from .models import ColdMigration, Migration, MigrationPlan, MigrationSample, MigrationSlot, PreflightRun
from .options import MigrationOptions, from_dict, to_dict, validate

logger = logging.getLogger(__name__)

__all__ = ["ServiceRefused"]

# Explicit job timeouts, each longer than the work it bounds.
PREFLIGHT_TIMEOUT_S = 180  # gathering over SSH and libvirt from two hosts
RECONCILE_TIMEOUT_S = 300  # asking two hosts, waiting up to a minute for libvirt's job to end, refreshing
# Around the migration itself: checking before, settling, heartbeat and refreshes after.
MIGRATION_JOB_MARGIN_S = 600
# After the completion timeout's force-complete, how long before the portal gives up and aborts.
FORCE_COMPLETE_GRACE_S = 120


def migration_time_limit_s(options: MigrationOptions) -> int:
    """How long libvirt's part may run before the runner aborts it for good."""
    limit = options.completion_timeout_s or settings.VMPORTAL_MIGRATION_MAX_SECONDS
    if options.completion_timeout_s and options.timeout_action == "force-complete":
        limit += FORCE_COMPLETE_GRACE_S
    return limit


def migration_job_timeout_s(options: MigrationOptions) -> int:
    """The RQ job's timeout: the migration's own limit plus room for checking and settling."""
    return migration_time_limit_s(options) + MIGRATION_JOB_MARGIN_S


def _refuse(*, actor: Actor, action: str, target, parameters: dict, message: str, hint: str = "") -> NoReturn:
    audit_record_now(
        actor=actor, action=action, result=AuditResultChoices.REFUSED, target=target,
        parameters=parameters, message=message,
    )
    raise ServiceRefused(message, hint=hint)


def _verdict_dicts(verdicts: Iterable[Any]) -> list[dict]:
    rows = []
    for v in verdicts:
        row = {"check": v.check, "status": v.status, "reason": v.reason, "fix": v.fix}
        if getattr(v, "repairs", ()):
            row["repairs"] = [list(r) for r in v.repairs]
        rows.append(row)
    return rows


def verdicts_overall(verdicts: Sequence[dict]) -> str:
    """Worst status of stored verdicts; nothing checked is not a pass."""
    statuses = {v.get("status") for v in verdicts}
    if not verdicts or VerdictStatusChoices.FAIL in statuses:
        return VerdictStatusChoices.FAIL
    if VerdictStatusChoices.WARN in statuses:
        return VerdictStatusChoices.WARN
    return VerdictStatusChoices.PASS


def state_payload(migration: Migration) -> dict[str, Any]:
    """What pages need to follow a migration's status (sent on change and on connect)."""
    return {
        "id": migration.pk,
        "status": migration.status,
        "status_label": migration.get_status_display(),
        "phase": migration.phase,
        "terminal": migration.is_terminal,
        "warning": migration.convergence_warning,
        "abort_requested": migration.abort_requested is not None,
    }


def _changed(migration: Migration) -> None:
    broadcast.migration_status(migration.pk, state_payload(migration))
    # The guest's page (on its source host) and the migrations list follow the inventory group.
    broadcast.inventory_changed(host_id=migration.source_id)


# ---------------------------------------------------------------------------
# The wizard: a plan with one preflight per candidate destination


def migration_plan_create(
    *, vm: VirtualMachine, options: MigrationOptions, actor: Actor, destinations: Sequence[Host] | None = None
) -> MigrationPlan:
    """Check where the guest could go: one background preflight per candidate host.

    Candidates are every other host (or ``destinations``). A host the portal may not contact
    gets its row at once with the reason, and no job.
    """
    from .jobs import preflight_job

    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    parameters = {"vm_uuid": str(vm.uuid), "source": vm.host.name, "options": to_dict(options)}
    problems = validate(options)
    if problems:
        _refuse(actor=actor, action="migration.preflight", target=vm, parameters=parameters,
                message=" ".join(problems))
    if not vm.host.is_connectable:
        _refuse(actor=actor, action="migration.preflight", target=vm, parameters=parameters,
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
                kind=MigrationJobKindChoices.PREFLIGHT, func=preflight_job, args=(run.pk,), target=plan,
                timeout_s=PREFLIGHT_TIMEOUT_S, actor=actor,
            )
            run.save(update_fields=["job"])
        audit_record(
            actor=actor,
            action="migration.preflight",
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
    run.verdicts = _verdict_dicts(verdicts)
    run.overall = verdicts_overall(run.verdicts)
    run.status = PreflightRunStatusChoices.DONE
    run.memory_free_kib = memory_free_kib
    run.checked = timezone.now()
    run.error = run.error_hint = ""
    run.save()
    return run


@transaction.atomic
def preflight_failed(*, run: PreflightRun, error: str, hint: str = "") -> PreflightRun:
    run.status = PreflightRunStatusChoices.ERROR
    run.overall = VerdictStatusChoices.FAIL
    run.error = error
    run.error_hint = hint
    run.checked = timezone.now()
    run.save()
    return run


# ---------------------------------------------------------------------------
# Requesting a migration


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
    or is in maintenance, the chosen preflight failed, or the guest already has an active
    migration — the last one enforced by the database, so of two simultaneous requests
    exactly one gets through. ``run_by_worker=False``: the caller runs it (vm_migrate --wait).
    """
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    source = vm.host
    parameters = {
        "vm_uuid": str(vm.uuid), "source": source.name, "destination": destination.name,
        "options": to_dict(options), "plan": plan.pk if plan else None,
    }

    def refuse(message: str, hint: str = "") -> NoReturn:
        _refuse(actor=actor, action="migration.request", target=vm, parameters=parameters, message=message, hint=hint)

    problems = validate(options)
    if problems:
        refuse(" ".join(problems), "Change the options and try again.")
    if destination.pk == source.pk:
        refuse(f"{vm.name} already runs on {source.name}.", "Choose another destination.")
    for role, host in (("source", source), ("destination", destination)):
        if not host.is_connectable:
            refuse(f"The {role} host {host.name} cannot be contacted: {host.get_status_display()}.",
                   "Fix the host's connection first (see its page).")
    if destination.in_maintenance:
        refuse(f"{destination.name} is in maintenance.", "Take it out of maintenance, or choose another destination.")
    if plan is not None:
        run = plan.runs.filter(destination=destination).first()
        if run is not None and run.overall == VerdictStatusChoices.FAIL:
            failing = ", ".join(v["check"] for v in run.verdicts if v.get("status") == VerdictStatusChoices.FAIL)
            refuse(f"The preflight for {destination.name} failed ({failing or run.error}).",
                   "Fix what the preflight grid says, then check again.")
    active = Migration.objects.filter(vm_uuid=vm.uuid, status__in=MIGRATION_ACTIVE_STATES).first()
    if active is not None:
        refuse(f"{vm.name} already has migration #{active.pk} ({active.get_status_display().lower()}).",
               "Wait for it to finish, or abort it.")
    cold = ColdMigration.objects.filter(vm_uuid=vm.uuid, status__in=COLD_ACTIVE_STATES).first()
    if cold is not None:
        refuse(f"{vm.name} is being cold-migrated (#{cold.pk}, {cold.get_status_display().lower()}).",
               "Wait for it to finish.")
    latest = Migration.objects.filter(vm_uuid=vm.uuid).order_by("-created", "-pk").first()
    if latest is not None and latest.status == S.NEEDS_ATTENTION:
        refuse(f"The last migration of {vm.name} (#{latest.pk}) needs attention: {latest.outcome}",
               f"{latest.repair} Then reconcile #{latest.pk} from its page.".strip())
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=source, destination=destination,
                options=to_dict(options), plan=plan, reverses=reverses, requested_by=actor.user,
                run_by_worker=run_by_worker,
                phase="Waiting for a free migration slot" if run_by_worker else "Waiting to start",
            )
            audit_record(
                actor=actor, action="migration.request", result=AuditResultChoices.OK, target=migration,
                parameters=parameters,
                message=f"Migrate {vm.name} from {source.name} to {destination.name} "
                        f"({'live' if options.live else 'offline'}) requested.",
            )
            _changed(migration)
            if run_by_worker:
                transaction.on_commit(migrations_dispatch)
    except IntegrityError:
        # The constraint on one active migration per guest: another request won the race.
        other = Migration.objects.filter(vm_uuid=vm.uuid, status__in=MIGRATION_ACTIVE_STATES).first()
        refuse(f"Another migration of {vm.name}" + (f" (#{other.pk})" if other else "")
               + " was requested at the same moment.", "Follow that one, or wait for it to finish.")
    return migration


# ---------------------------------------------------------------------------
# Slots and dispatch


class _NoSlot(Exception):
    def __init__(self, host: Host, direction: str, limit: int):
        self.host, self.direction, self.limit = host, direction, limit


def _slot_limit(direction: str) -> int:
    return settings.VMPORTAL_MAX_OUTGOING if direction == SlotDirectionChoices.OUTGOING else settings.VMPORTAL_MAX_INCOMING


def _claim_slot(migration: Migration, host: Host, direction: str) -> None:
    """Insert a free slot index for the migration; the unique constraints arbitrate races."""
    if MigrationSlot.objects.filter(migration=migration, direction=direction).exists():
        return
    limit = _slot_limit(direction)
    for index in range(limit):
        try:
            with transaction.atomic():
                MigrationSlot.objects.create(host=host, direction=direction, index=index, migration=migration)
            return
        except IntegrityError:
            continue
    raise _NoSlot(host, direction, limit)


def slots_release(migration: Migration) -> int:
    deleted, _ = MigrationSlot.objects.filter(migration=migration).delete()
    return deleted


def _dispatch_one(migration: Migration) -> Job | None:
    """Claim both slots and enqueue the job in one transaction, or leave it waiting."""
    from .jobs import migration_job

    try:
        with transaction.atomic():
            _claim_slot(migration, migration.source, SlotDirectionChoices.OUTGOING)
            _claim_slot(migration, migration.destination, SlotDirectionChoices.INCOMING)
            options = from_dict(migration.options)
            job = job_enqueue(
                kind=MigrationJobKindChoices.RUN, func=migration_job, args=(migration.pk,), target=migration,
                timeout_s=migration_job_timeout_s(options), actor=Actor(user=migration.requested_by),
                queue="migrations",
            )
            # Only if nobody dispatched it meanwhile; otherwise roll this attempt back.
            updated = Migration.objects.filter(pk=migration.pk, status=S.QUEUED, job__isnull=True).update(
                job=job, phase="Waiting for a worker"
            )
            if not updated:
                raise _NoSlot(migration.source, "", 0)
    except _NoSlot as exc:
        if exc.direction:
            phase = (
                f"Waiting for a free {exc.direction} slot on {exc.host.name} "
                f"({exc.limit} migration{'s' if exc.limit != 1 else ''} {exc.direction} at most)"
            )
            if Migration.objects.filter(pk=migration.pk, status=S.QUEUED, job__isnull=True).exclude(
                phase=phase
            ).update(phase=phase):
                migration.refresh_from_db()
                _changed(migration)
        return None
    migration.refresh_from_db()
    _changed(migration)
    return job


def migrations_dispatch() -> int:
    """Give free slots to queued migrations, oldest first, and enqueue their jobs. Returns how many.

    Safe to call from any number of processes at once (after every request and every end,
    and periodically): the slot table's unique constraints decide who gets a slot.
    """
    started = 0
    waiting = Migration.objects.filter(status=S.QUEUED, job__isnull=True, run_by_worker=True).select_related(
        "source", "destination"
    ).order_by("created", "pk")
    for migration in waiting:
        if _dispatch_one(migration) is not None:
            started += 1
    return started


def migration_claim_for_caller(*, migration: Migration) -> Job | None:
    """For a caller that runs the migration itself (vm_migrate --wait): claim both slots and
    create its Job row (not enqueued) in one transaction. None = no free slot yet, try again."""
    from .jobs import migration_job

    try:
        with transaction.atomic():
            _claim_slot(migration, migration.source, SlotDirectionChoices.OUTGOING)
            _claim_slot(migration, migration.destination, SlotDirectionChoices.INCOMING)
            job = job_enqueue(
                kind=MigrationJobKindChoices.RUN, func=migration_job, args=(migration.pk,), target=migration,
                timeout_s=migration_job_timeout_s(from_dict(migration.options)),
                actor=Actor(user=migration.requested_by), queue="migrations", enqueue=False,
            )
            Migration.objects.filter(pk=migration.pk).update(job=job, phase="Starting")
    except _NoSlot as exc:
        Migration.objects.filter(pk=migration.pk, status=S.QUEUED).update(
            phase=f"Waiting for a free {exc.direction} slot on {exc.host.name}"
        )
        return None
    migration.refresh_from_db()
    return job


# ---------------------------------------------------------------------------
# Status changes made by the runner and the reconciler


def _transition(migration: Migration, new: S, **fields) -> bool:
    """Move to ``new`` only from a status that allows it (a conditional UPDATE: races lose cleanly)."""
    updated = Migration.objects.filter(pk=migration.pk, status__in=states.sources_for(new)).update(
        status=new, **fields
    )
    migration.refresh_from_db()
    if updated:
        _changed(migration)
    return bool(updated)


@transaction.atomic
def migration_begin(*, migration: Migration, job: Job | None) -> bool:
    """queued → checking. False when it is no longer queued (aborted while waiting)."""
    now = timezone.now()
    return _transition(
        migration, S.CHECKING, started=now, heartbeat=now, job=job or migration.job,
        phase=f"Checking {migration.source.name} and {migration.destination.name}",
    )


@transaction.atomic
def migration_record_verdicts(*, migration: Migration, verdicts: Sequence[Any]) -> None:
    migration.verdicts = _verdict_dicts(verdicts)
    migration.heartbeat = timezone.now()
    migration.save(update_fields=["verdicts", "heartbeat"])


@transaction.atomic
def migration_migrating(*, migration: Migration, flags: int, params: dict, dest_uri: str) -> bool:
    """checking → migrating: libvirt is about to be asked. Audited as the start."""
    now = timezone.now()
    mode = "live" if migration.is_live else "offline"
    if not _transition(migration, S.MIGRATING, migration_started=now, heartbeat=now,
                       phase=f"Migrating ({mode}) to {migration.destination.name}"):
        return False
    audit_record(
        actor=Actor.system(), action="migration.start", result=AuditResultChoices.OK, target=migration,
        parameters={"flags": flags, "params": params, "destination_uri": dest_uri.split("?", 1)[0]},
        message=f"libvirt asked to migrate {migration.vm_name} to {migration.destination.name}.",
        job=migration.job,
    )
    return True


@transaction.atomic
def migration_completing(*, migration: Migration, phase: str) -> bool:
    return _transition(migration, S.COMPLETING, heartbeat=timezone.now(), phase=phase)


def migration_heartbeat(*, migration: Migration, phase: str | None = None, warning: str | None = None) -> None:
    fields: dict[str, Any] = {"heartbeat": timezone.now()}
    if phase is not None:
        fields["phase"] = phase
    if warning is not None:
        fields["convergence_warning"] = warning
    Migration.objects.filter(pk=migration.pk).update(**fields)
    if phase is not None or warning is not None:
        migration.refresh_from_db()
        _changed(migration)


def migration_sample_add(*, migration: Migration, elapsed_ms: int, stats: dict, payload: dict) -> None:
    """Store one progress sample, keep the heartbeat fresh, and send it to the page."""
    MigrationSample.objects.create(migration=migration, elapsed_ms=elapsed_ms, stats=stats)
    Migration.objects.filter(pk=migration.pk).update(heartbeat=timezone.now())
    broadcast.migration_progress(migration.pk, payload)


def migration_controls(*, migration: Migration) -> tuple[bool, int]:
    """(abort requested, number of force-complete requests), read fresh by the runner."""
    row = Migration.objects.filter(pk=migration.pk).values("abort_requested", "force_complete_requests").get()
    return row["abort_requested"] is not None, row["force_complete_requests"]


@transaction.atomic
def migration_finish(
    *,
    migration: Migration,
    status: S,
    outcome: str = "",
    repair: str = "",
    error: str = "",
    error_hint: str = "",
    summary: dict | None = None,
    heartbeat=None,
    action: str = "migration.outcome",
    actor: Actor | None = None,
    job: Job | None = None,
    result: AuditResultChoices | None = None,
) -> bool:
    """End the migration with what the hosts showed: record, release its slots, audit, tell pages.

    False (and nothing written) when it already ended differently, e.g. a reconciler won.
    """
    summary = summary or {}
    fields: dict[str, Any] = {
        "ended": timezone.now(),
        "outcome": outcome,
        "repair": repair or "",
        "error": error,
        "error_hint": error_hint,
        "summary": summary,
        "phase": {
            S.SUCCEEDED: "Done", S.FAILED: "Failed", S.ABORTED: "Aborted",
            S.NEEDS_ATTENTION: "Needs attention",
        }[status],
    }
    for field, key, scale in (
        ("total_time_ms", "total_time_s", 1000),
        ("downtime_ms", "downtime_ms", 1),
        ("setup_time_ms", "setup_time_ms", 1),
        ("data_transferred_bytes", "data_transferred_bytes", 1),
    ):
        if summary.get(key) is not None:
            fields[field] = int(summary[key] * scale)
    if heartbeat is not None:
        fields.update(
            heartbeat_gap_s=heartbeat.max_gap_s, heartbeat_continuous=heartbeat.continuous,
            heartbeat_beats=heartbeat.beats,
        )
    if not _transition(migration, status, **fields):
        return False
    slots_release(migration)
    if result is None:
        result = AuditResultChoices.OK if status == S.SUCCEEDED else AuditResultChoices.FAILED
    audit_record(
        actor=actor or Actor.system(),
        action=action,
        result=result,
        target=migration,
        parameters={
            "status": str(status),
            "downtime_ms": fields.get("downtime_ms"),
            "total_time_ms": fields.get("total_time_ms"),
            "heartbeat_gap_s": fields.get("heartbeat_gap_s"),
            "error": error,
            "repair": repair,
        },
        message=f"{migration.vm_name}: {status.label.lower()}. {outcome}".strip(),
        job=job or migration.job,
    )
    broadcast.inventory_changed(host_id=migration.source_id)
    broadcast.inventory_changed(host_id=migration.destination_id)
    # A slot just freed: give it to whoever waits.
    transaction.on_commit(migrations_dispatch)
    return True


# ---------------------------------------------------------------------------
# Operator actions on a migration


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
                    migration=m, status=S.ABORTED, action="migration.abort", actor=actor, result=AuditResultChoices.OK,
                    outcome=f"Aborted before it started; {m.vm_name} stays on {m.source.name}.",
                ):
                    return m
                continue
            if m.status in (S.CHECKING, S.MIGRATING):
                if Migration.objects.filter(pk=m.pk, abort_requested__isnull=True).update(
                    abort_requested=timezone.now()
                ):
                    audit_record(
                        actor=actor, action="migration.abort", result=AuditResultChoices.OK, target=m,
                        parameters=parameters,
                        message=f"Abort of the migration of {m.vm_name} requested; it stays on {m.source.name}.",
                        job=m.job,
                    )
                    m.refresh_from_db()
                    _changed(m)
                return m
            break
    migration.refresh_from_db()
    _refuse(
        actor=actor, action="migration.abort", target=migration, parameters=parameters,
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
        if m.status == S.MIGRATING and options.live and m.abort_requested is None:
            Migration.objects.filter(pk=m.pk).update(force_complete_requests=F("force_complete_requests") + 1)
            how = (
                "switching to post-copy (the guest runs on the destination at once)"
                if action == "postcopy"
                else "raising the allowed downtime step by step"
            )
            audit_record(
                actor=actor, action="migration.force_complete", result=AuditResultChoices.OK, target=m,
                parameters=parameters, message=f"Force complete of {m.vm_name} requested: {how}.", job=m.job,
            )
            m.refresh_from_db()
            _changed(m)
            return m
    _refuse(
        actor=actor, action="migration.force_complete", target=migration, parameters=parameters,
        message=f"Migration #{migration.pk} is {migration.get_status_display().lower()}"
                + ("" if options.live else " and offline")
                + "; only a running live migration can be forced to complete.",
    )


def migration_reconcile_request(*, migration: Migration, actor: Actor, reason: str = "") -> Job:
    """Queue asking both hosts where the guest is and settling the record (one at a time per migration).

    The system asks for any active migration whose worker died; a person only for one that
    needs attention (a running migration is its runner's business).
    """
    from .jobs import reconcile_job

    if actor.user is not None and migration.status != S.NEEDS_ATTENTION:
        _refuse(
            actor=actor, action="migration.reconcile", target=migration, parameters={"status": migration.status},
            message=f"Migration #{migration.pk} is {migration.get_status_display().lower()}; "
                    "only one that needs attention is reconciled by hand.",
        )
    with transaction.atomic():
        waiting = Job.objects.filter(
            kind=MigrationJobKindChoices.RECONCILE, target_type="migration", target_id=str(migration.pk),
            status__in=JOB_ACTIVE_STATES,
        ).first()
        if waiting is not None:
            return waiting
        job = job_enqueue(
            kind=MigrationJobKindChoices.RECONCILE, func=reconcile_job, args=(migration.pk, reason),
            target=migration, timeout_s=RECONCILE_TIMEOUT_S, actor=actor,
        )
        if actor.user is not None:
            audit_record(
                actor=actor, action="migration.reconcile", result=AuditResultChoices.OK, target=migration,
                parameters={"status": migration.status},
                message=f"Asked both hosts where {migration.vm_name} runs.", job=job,
            )
    return job


def migration_still_running(*, migration: Migration, phase: str) -> None:
    """The reconciler found libvirt still migrating: leave the status, say so."""
    Migration.objects.filter(pk=migration.pk, status__in=MIGRATION_RUNNING_STATES).update(phase=phase)
    migration.refresh_from_db()
    _changed(migration)


# ---------------------------------------------------------------------------
# Cold migration: a shut-off guest's disks copied and its definition moved

COLD_JOB_MARGIN_S = 900  # checking, defining, starting, verifying checksums, rolling back
COLD_COPY_MIN_BYTES_PER_S = 20 * 1024 * 1024  # the slowest copy rate the job timeout allows for
# The inventory records no disk sizes: the timeout assumes this much, so it is generous.
COLD_ASSUMED_DISK_BYTES = 64 * 2**30


def cold_job_timeout_s(disk_bytes: int) -> int:
    """The job's timeout: the copy at a slow rate, plus checksums on both sides, plus the rest."""
    return COLD_JOB_MARGIN_S + int(3 * disk_bytes / COLD_COPY_MIN_BYTES_PER_S)


def _cold_changed(cold: ColdMigration) -> None:
    broadcast.inventory_changed(host_id=cold.source_id)
    if not cold.same_host:
        broadcast.inventory_changed(host_id=cold.destination_id)


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
    nothing would move, or the guest already has a migration under way (live or cold; the
    database enforces one cold migration at a time). The job re-checks everything on the hosts.
    """
    from .jobs import cold_migration_job

    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    source = vm.host
    same_host = destination.pk == source.pk
    parameters = {
        "vm_uuid": str(vm.uuid), "source": source.name, "destination": destination.name,
        "share": str(share) if share else None, "start": start, "keep_source": keep_source,
    }

    def refuse(message: str, hint: str = "") -> NoReturn:
        _refuse(actor=actor, action="migration.cold.request", target=vm, parameters=parameters,
                message=message, hint=hint)

    if vm.state != VMStateChoices.SHUTOFF:
        refuse(f"{vm.name} is {vm.get_state_display().lower()}; a cold migration moves a shut-off guest.",
               "Shut it down from its page first, or use live migration.")
    for role, host in (("source", source), ("destination", destination)):
        if not host.is_connectable:
            refuse(f"The {role} host {host.name} cannot be contacted: {host.get_status_display()}.",
                   "Fix the host's connection first (see its page).")
    if destination.in_maintenance and not same_host:
        refuse(f"{destination.name} is in maintenance.", "Take it out of maintenance, or choose another destination.")
    if same_host and share is None:
        refuse(f"{vm.name} is already on {source.name} and no shared storage was chosen: nothing would move.",
               "Choose a share to move its disks onto, or another destination host.")
    if share is not None:
        if share.path_seen_by(destination) is None:
            refuse(f"{destination.name} does not mount the share {share}.",
                   "Add it as a client of the share (the NFS wizard), or choose another destination.")
    live = Migration.objects.filter(vm_uuid=vm.uuid, status__in=MIGRATION_ACTIVE_STATES).first()
    if live is not None:
        refuse(f"{vm.name} already has migration #{live.pk} ({live.get_status_display().lower()}).",
               "Wait for it to finish, or abort it.")
    busy = ColdMigration.objects.filter(vm_uuid=vm.uuid, status__in=COLD_ACTIVE_STATES).first()
    if busy is not None:
        refuse(f"{vm.name} already has cold migration #{busy.pk} ({busy.get_status_display().lower()}).",
               "Follow that one; it ends on its own.")
    try:
        with transaction.atomic():
            cold = ColdMigration.objects.create(
                vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=source, destination=destination, share=share,
                start=start, keep_source=keep_source, requested_by=actor.user, run_by_worker=run_by_worker,
                phase="Waiting for a worker" if run_by_worker else "Waiting to start",
            )
            cold.job = job_enqueue(
                kind=MigrationJobKindChoices.COLD_RUN, func=cold_migration_job, args=(cold.pk,), target=cold,
                timeout_s=cold_job_timeout_s(disk_bytes_hint or COLD_ASSUMED_DISK_BYTES), actor=actor,
                enqueue=run_by_worker,
            )
            cold.save(update_fields=["job"])
            where = f"onto {share}" if same_host else f"from {source.name} to {destination.name}"
            audit_record(
                actor=actor, action="migration.cold.request", result=AuditResultChoices.OK, target=cold,
                parameters=parameters, message=f"Cold-migrate {vm.name} {where} requested.",
            )
            _cold_changed(cold)
    except IntegrityError:
        refuse(f"Another cold migration of {vm.name} was requested at the same moment.", "Follow that one.")
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
        _cold_changed(cold)
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
    _cold_changed(cold)


def cold_progress(*, cold: ColdMigration, bytes_done: int) -> None:
    """The copy's byte count (called often; one UPDATE, no event: the job's progress carries it)."""
    ColdMigration.objects.filter(pk=cold.pk).update(bytes_done=bytes_done, heartbeat=timezone.now())
    cold.bytes_done = bytes_done


@transaction.atomic
def cold_permissions_set(*, cold: ColdMigration, host: Host, path: str, before: str, after: str) -> None:
    """Audit the owner/mode the move gave a copied image so the destination's QEMU can open it."""
    audit_record(
        actor=Actor.system(), action="image.permissions", result=AuditResultChoices.OK, target=cold,
        parameters={"host": host.name, "path": path, "before": before, "after": after},
        message=f"{path} on {host.name}: {before or 'new file'} → {after} (for QEMU's user).",
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
    action: str = "migration.cold.outcome",
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
    for name, value in fields.items():
        setattr(cold, name, value)
    if status == ColdStatus.SUCCEEDED and not cold.same_host:
        from hosts import services as host_services

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
    _cold_changed(cold)
    return True


# ---------------------------------------------------------------------------
# Permission repair offered by a preflight (the recipe's chmod, done right)

REPAIR_TIMEOUT_S = 180


def image_permissions_repair_request(*, run: PreflightRun, actor: Actor) -> Job:
    """Repair the owner/mode of the images this preflight found QEMU could not open, on its destination.

    Only the files the run recorded are touched. Refused (audited) when there is nothing to
    repair, the preflight is still running, or the host cannot be contacted.
    """
    from .jobs import image_permissions_job
    from .permissions import run_repairs

    run = PreflightRun.objects.select_related("destination", "plan").get(pk=run.pk)
    repairs = run_repairs(run)
    parameters = {"host": run.destination.name, "plan": run.plan_id, "files": [list(r) for r in repairs]}

    def refuse(message: str, hint: str = "") -> NoReturn:
        _refuse(actor=actor, action="image.permissions.request", target=run.plan, parameters=parameters,
                message=message, hint=hint)

    if run.is_pending:
        refuse("The preflight for this destination is still running.", "Wait for its grid, then repair.")
    if not repairs:
        refuse(f"The preflight found no image on {run.destination.name} that QEMU cannot open.",
               "Run the preflight again if you changed something by hand.")
    if not run.destination.is_connectable:
        refuse(f"{run.destination.name} cannot be contacted: {run.destination.get_status_display()}.",
               "Fix the host's connection first (see its page).")
    with transaction.atomic():
        job = job_enqueue(
            kind=MigrationJobKindChoices.REPAIR_PERMISSIONS, func=image_permissions_job, args=(run.pk,),
            target=run.plan, timeout_s=REPAIR_TIMEOUT_S, actor=actor,
        )
        audit_record(
            actor=actor, action="image.permissions.request", result=AuditResultChoices.OK, target=run.plan,
            parameters=parameters,
            message=f"Repair the owner and mode of {len(repairs)} image(s) on {run.destination.name} for QEMU.",
            job=job,
        )
    return job


@transaction.atomic
def image_permissions_repaired(*, run: PreflightRun, path: str, before: str, after: str, opens: bool,
                               job: Job | None) -> None:
    """Audit one repaired image: its owner/mode before and after, and whether QEMU can open it now."""
    audit_record(
        actor=Actor.system(), action="image.permissions",
        result=AuditResultChoices.OK if opens else AuditResultChoices.FAILED, target=run.plan,
        parameters={"host": run.destination.name, "path": path, "before": before, "after": after, "qemu_opens": opens},
        message=f"{path} on {run.destination.name}: {before} → {after}"
                + ("" if opens else " (QEMU still cannot open it)"),
        job=job,
    )


def preflight_recheck(*, run: PreflightRun) -> Job:
    """Queue this destination's preflight again (after a repair)."""
    from .jobs import preflight_job

    with transaction.atomic():
        PreflightRun.objects.filter(pk=run.pk).update(status=PreflightRunStatusChoices.QUEUED, checked=None)
        job = job_enqueue(
            kind=MigrationJobKindChoices.PREFLIGHT, func=preflight_job, args=(run.pk,), target=run.plan,
            timeout_s=PREFLIGHT_TIMEOUT_S, actor=Actor.system(),
        )
        PreflightRun.objects.filter(pk=run.pk).update(job=job)
    return job


def cold_reconcile_request(*, cold: ColdMigration, reason: str) -> Job:
    """Queue settling a cold migration whose worker died (one reconcile job at a time per record)."""
    from .jobs import cold_reconcile_job

    with transaction.atomic():
        waiting = Job.objects.filter(
            kind=MigrationJobKindChoices.RECONCILE, target_type="coldmigration", target_id=str(cold.pk),
            status__in=JOB_ACTIVE_STATES,
        ).first()
        if waiting is not None:
            return waiting
        return job_enqueue(
            kind=MigrationJobKindChoices.RECONCILE, func=cold_reconcile_job, args=(cold.pk, reason),
            target=cold, timeout_s=RECONCILE_TIMEOUT_S, actor=Actor.system(),
        )
