"""Migrations whose worker died: find them, ask both hosts, settle the record.

Finding is cheap (database and Redis only): ``migrations_reconcile()`` runs in the
``watch_hosts`` loop every VMPORTAL_MIGRATION_RECONCILE_SECONDS and whenever an RQ worker
starts, and also hands free slots to waiting migrations; ``migrations_job_lost()`` runs at once
when RQ reports that a migration's job died (core.signals.job_lost, see receivers.py). Each migration found gets a
reconcile job, which asks the hosts (``reconcile_migration``) and records what
reconcile.settle makes of it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from core.actors import Actor
from core.choices import JOB_TERMINAL_STATES, JobLogLevelChoices
from core.jobs import RQ_DEAD_STATES, JobContext, rq_job_state
from core.models import Job
from hosts import leases

from . import policy, states, whereabouts
from .choices import (
    COLD_ACTIVE_STATES,
    COLD_RUNNING_STATES,
    MIGRATION_ACTIVE_STATES,
    FollowUpStatusChoices as F,
    MIGRATION_RUNNING_STATES,
    MigrationAuditActionChoices as A,
    MigrationJobKindChoices,
    MigrationStatusChoices as S,
)
from .models import ColdMigration, Migration
from .services import cold as cold_services, live, records, slots

logger = logging.getLogger(__name__)

# How long to wait for a libvirt job still reported before leaving the record active.
JOB_END_WAIT_S = 5.0


def worker_lost_reason(
    migration: Migration | ColdMigration, job: Job | None, *, now: datetime, stale_after: timedelta,
    rq_state: str | None, running_states=MIGRATION_RUNNING_STATES,
) -> str | None:
    """Why nobody is running this active migration (live or cold) any more, or None if someone (or the queue) is."""
    if migration.status == S.QUEUED:
        if job is None:
            return None  # waiting for a slot: the dispatcher's business
        if job.status in JOB_TERMINAL_STATES:
            return f"its job #{job.pk} ended ({job.status}) before the migration started"
        if rq_state in RQ_DEAD_STATES:
            return f"its job #{job.pk} is {rq_state} in the queue"
        return None
    if migration.status not in running_states:
        return None
    if job is not None and job.status in JOB_TERMINAL_STATES:
        detail = f": {job.error}" if job.error else ""
        return f"its job #{job.pk} ended as {job.status}{detail}"
    if rq_state in RQ_DEAD_STATES:
        return f"its job #{job.pk} is {rq_state} in the queue"
    beat = migration.heartbeat or migration.started or migration.created
    if now - beat > stale_after:
        return f"no sign of life from its worker for {int((now - beat).total_seconds())} s"
    return None


def migrations_reconcile(*, now: datetime | None = None) -> dict:
    """Free the guests whose operation ended without releasing them, hand out free slots, and
    queue a reconcile job for every active migration nobody runs (settling it releases its lease)."""
    now = now or timezone.now()
    reclaimed = leases.leases_reclaim()
    dispatched = slots.migrations_dispatch()
    queued = _reconcile_orphans(
        Migration.objects.filter(status__in=MIGRATION_ACTIVE_STATES),
        ColdMigration.objects.filter(status__in=COLD_ACTIVE_STATES), now=now, ask_rq=True,
    )
    return {"dispatched": dispatched, "reconciling": queued, "leases_reclaimed": reclaimed,
            "follow_ups_lost": _follow_ups_lost(now)}


def migrations_job_lost(*, job_id: int, reason: str) -> int:
    """The worker lost job ``job_id`` (core.signals.job_lost): queue reconciling of the live or
    cold migration it ran, at once rather than at the next sweep. Returns how many were queued.

    When the lost job was the one to record a settled migration's figures (its follow-up job,
    or the migration's own job where no follow-up job was made), the record says at once that
    they will not come (the sweep would say so too, later)."""
    for migration in _follow_ups_of(job_id):
        records.migration_follow_up_lost(migration=migration, why=reason)
    return _reconcile_orphans(
        Migration.objects.filter(job_id=job_id, status__in=MIGRATION_ACTIVE_STATES),
        ColdMigration.objects.filter(job_id=job_id, status__in=COLD_ACTIVE_STATES),
        now=timezone.now(), ask_rq=False, lost=reason,
    )


def _reconcile_orphans(migrations, colds, *, now: datetime, ask_rq: bool, lost: str = "") -> int:
    stale_after = timedelta(seconds=settings.VMPORTAL_MIGRATION_STALE_SECONDS)
    queued = 0
    for migration in migrations.select_related("job"):
        rq_state = rq_job_state(migration.job, now=now) if ask_rq else None
        reason = worker_lost_reason(migration, migration.job, now=now, stale_after=stale_after, rq_state=rq_state)
        if reason:
            reason = f"{reason} ({lost})" if lost and lost not in reason else reason
            logger.warning("migration %s (%s): %s; reconciling", migration.pk, migration.status, reason)
            live.migration_reconcile_request(migration=migration, actor=Actor.system(), reason=reason)
            queued += 1
    for cold in colds.select_related("job"):
        rq_state = rq_job_state(cold.job, now=now) if ask_rq else None
        reason = worker_lost_reason(cold, cold.job, now=now, stale_after=stale_after, rq_state=rq_state,
                                    running_states=COLD_RUNNING_STATES)
        if reason:
            reason = f"{reason} ({lost})" if lost and lost not in reason else reason
            logger.warning("cold migration %s (%s): %s; reconciling", cold.pk, cold.status, reason)
            cold_services.cold_reconcile_request(cold=cold, reason=reason)
            queued += 1
    return queued


def _follow_ups_of(job_id: int) -> list[Migration]:
    """The settled migrations still waiting for figures that job ``job_id`` was to record."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return []
    if job.kind == MigrationJobKindChoices.FOLLOW_UP:
        if not job.target_id.isdigit():
            return []
        return list(Migration.objects.filter(pk=int(job.target_id), follow_up=F.RUNNING))
    return [m for m in Migration.objects.filter(job_id=job_id, follow_up=F.RUNNING)
            if records.follow_up_job(m) is None]


def follow_up_job_ended(*, job_id: int) -> int:
    """A follow-up job ended (core.signals.job_ended) with the figures still not recorded — its
    work failed before it could say so, or it never reached the queue: say why on the record."""
    job = Job.objects.filter(pk=job_id).first()
    lost = 0
    for migration in _follow_ups_of(job_id):
        detail = f": {job.error}" if job is not None and job.error else ""
        lost += records.migration_follow_up_lost(migration=migration,
                                                 why=f"its job #{job_id} ended ({job.status if job else 'gone'}){detail}")
    return lost


def _follow_ups_lost(now: datetime) -> int:
    """Settled migrations whose figures were still to come when the job to record them ended or
    vanished: say so. That job is the follow-up job, or the migration's own where none was made."""
    lost = 0
    for migration in Migration.objects.filter(follow_up=F.RUNNING).select_related("job"):
        job = records.follow_up_job(migration) or migration.job
        if job is not None and job.status not in JOB_TERMINAL_STATES and rq_job_state(job, now=now) not in RQ_DEAD_STATES:
            continue
        why = f"its job #{job.pk} ended ({job.status})" if job is not None and job.status in JOB_TERMINAL_STATES \
            else "its worker is gone"
        lost += records.migration_follow_up_lost(migration=migration, why=why)
    return lost


def reconcile_migration(*, migration_id: int, reason: str = "", ctx: JobContext) -> dict:
    """Ask both hosts where the guest is and settle the record (active-but-orphaned or needs-attention)."""
    migration = Migration.objects.select_related("source", "destination", "job").get(pk=migration_id)
    if migration.status in MIGRATION_ACTIVE_STATES:
        # Re-check: the worker may have finished (or the job reached Redis) since this was queued.
        now = timezone.now()
        still = worker_lost_reason(
            migration, migration.job, now=now,
            stale_after=timedelta(seconds=settings.VMPORTAL_MIGRATION_STALE_SECONDS),
            rq_state=rq_job_state(migration.job, now=now),
        )
        if still is None:
            ctx.log(f"Migration #{migration.pk} is {migration.status} and its worker is alive; nothing to do")
            return {"status": migration.status, "reconciled": False}
        reason = still
    elif migration.status != S.NEEDS_ATTENTION:
        ctx.log(f"Migration #{migration.pk} is {migration.status}; nothing to reconcile")
        return {"status": migration.status, "reconciled": False}

    ctx.log(f"Reconciling migration #{migration.pk} ({migration.status}){': ' + reason if reason else ''}")
    outcome, source, destination = whereabouts.locate_guest(migration, job_status=migration.status, wait_for_job_s=JOB_END_WAIT_S)
    ctx.log(outcome.reason)
    if (source.job_active or destination.job_active) and migration.status in MIGRATION_ACTIVE_STATES:
        records.migration_still_running(
            migration=migration, phase="libvirt still reports a migration job; the portal checks again shortly"
        )
        ctx.log("libvirt still migrates the guest; leaving the record active", level=JobLogLevelChoices.WARNING)
        return {"status": migration.status, "reconciled": False, "job_active": True}

    status = states.status_for_outcome(outcome.status, aborted=migration.abort_requested is not None)
    summary = migration.summary
    if not summary:
        infos = [policy.JobInfo.from_stats(s) for s in migration.samples.values_list("stats", flat=True)]
        final = whereabouts.completed_stats(migration, on_destination=status == S.SUCCEEDED)
        summary = (policy.summarize(infos, final or None, switched_over=status == S.SUCCEEDED)
                   if (infos or final) else {})
        summary["samples"] = len(infos)
    error = migration.error or (f"Reconciled: {reason}" if reason else "")
    whereabouts.record_end(
        migration, ctx, status, outcome=outcome.reason, repair=outcome.repair or "", error=error,
        hint=migration.error_hint, summary=summary, action=A.RECONCILED, actor=Actor.system(),
        job=ctx.job,
    )
    whereabouts.follow_guest(migration, status, ctx)
    return {"status": str(status), "reconciled": True, "outcome": outcome.reason}
