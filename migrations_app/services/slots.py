"""Migration slots: how many migrations a host sends and receives at once.

A migration claims one outgoing slot on its source and one incoming on its destination
before its job is enqueued; the slot table's unique constraints, not a query before the
insert, decide who gets a free index. Slots are released when the migration ends.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction

from core.actors import Actor
from core.jobs import job_enqueue
from core.models import Job
from hosts.models import Host

from .. import policy
from ..choices import MigrationJobKindChoices, MigrationStatusChoices as S, SlotDirectionChoices
from ..models import Migration, MigrationSlot
from ..options import from_dict
from .events import migration_changed

MIGRATION_JOB = "migrations_app.jobs.migration_job"


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


def _job_timeout_s(migration: Migration) -> int:
    return policy.migration_job_timeout_s(
        from_dict(migration.options), max_seconds=settings.VMPORTAL_MIGRATION_MAX_SECONDS
    )


def slots_release(migration: Migration) -> int:
    """Free both of the migration's slots; returns how many were held."""
    deleted, _ = MigrationSlot.objects.filter(migration=migration).delete()
    return deleted


def _claim_slots_and_job(migration: Migration, *, enqueue: bool) -> Job:
    """Inside the caller's transaction: both slots (or _NoSlot), then the migration's run job."""
    _claim_slot(migration, migration.source, SlotDirectionChoices.OUTGOING)
    _claim_slot(migration, migration.destination, SlotDirectionChoices.INCOMING)
    return job_enqueue(
        kind=MigrationJobKindChoices.RUN, func=MIGRATION_JOB, args=(migration.pk,), target=migration,
        timeout_s=_job_timeout_s(migration), actor=Actor(user=migration.requested_by),
        queue="migrations", enqueue=enqueue,
    )


def _dispatch_one(migration: Migration) -> Job | None:
    """Claim both slots and enqueue the job in one transaction, or leave it waiting."""
    try:
        with transaction.atomic():
            job = _claim_slots_and_job(migration, enqueue=True)
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
                migration_changed(migration)
        return None
    migration.refresh_from_db()
    migration_changed(migration)
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
    try:
        with transaction.atomic():
            job = _claim_slots_and_job(migration, enqueue=False)
            Migration.objects.filter(pk=migration.pk).update(job=job, phase="Starting")
    except _NoSlot as exc:
        Migration.objects.filter(pk=migration.pk, status=S.QUEUED).update(
            phase=f"Waiting for a free {exc.direction} slot on {exc.host.name}"
        )
        return None
    migration.refresh_from_db()
    return job
