"""The record of a running live migration, kept by its runner and by the reconciler.

Every status change is a conditional UPDATE from the statuses states.py allows, so of a
runner and a reconciler racing to end the same migration exactly one wins and the other
sees False. Pages are told of every change; the end releases the slots and audits the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts import leases

from .. import policy, states
from ..choices import (
    MIGRATION_RUNNING_STATES,
    FollowUpStatusChoices as F,
    MigrationAuditActionChoices as A,
    MigrationJobKindChoices,
    MigrationStatusChoices as S,
)
from ..models import Migration, MigrationSample
from ..verdicts import verdict_dicts
from .events import migration_changed, migration_ended
from .slots import migrations_dispatch, slots_release

FOLLOW_UP_JOB = "migrations_app.jobs.migration_follow_up_job"


def _transition(migration: Migration, new: S, **fields) -> bool:
    """Move to ``new`` only from a status that allows it (a conditional UPDATE: races lose cleanly)."""
    updated = Migration.objects.filter(pk=migration.pk, status__in=states.sources_for(new)).update(
        status=new, **fields
    )
    migration.refresh_from_db()
    if updated:
        migration_changed(migration)
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
    """Store the runner's own preflight verdicts on the migration."""
    migration.verdicts = verdict_dicts(verdicts)
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
        actor=Actor.system(), action=A.START, result=AuditResultChoices.OK, target=migration,
        parameters={"flags": flags, "params": params, "destination_uri": dest_uri.split("?", 1)[0]},
        message=f"libvirt asked to migrate {migration.vm_name} to {migration.destination.name}.",
        job=migration.job,
    )
    return True


def migration_libvirt_called(*, migration: Migration, at) -> None:
    """When libvirt's migrate call was made (the end of "confirm → libvirt", measured per migration)."""
    Migration.objects.filter(pk=migration.pk).update(libvirt_called=at, heartbeat=timezone.now())
    migration.libvirt_called = at


@transaction.atomic
def migration_completing(*, migration: Migration, phase: str) -> bool:
    """migrating → completing: libvirt returned; the hosts are asked where the guest is."""
    return _transition(migration, S.COMPLETING, heartbeat=timezone.now(), phase=phase)


def migration_heartbeat(*, migration: Migration, phase: str | None = None, warning: str | None = None) -> None:
    """The runner is alive; a new phase or convergence warning is shown on the page."""
    fields: dict[str, Any] = {"heartbeat": timezone.now()}
    if phase is not None:
        fields["phase"] = phase
    if warning is not None:
        fields["convergence_warning"] = warning
    Migration.objects.filter(pk=migration.pk).update(**fields)
    if phase is not None or warning is not None:
        migration.refresh_from_db()
        migration_changed(migration)


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
    action: str = A.OUTCOME,
    actor: Actor | None = None,
    job: Job | None = None,
    result: AuditResultChoices | None = None,
    follow_up: bool = False,
    follow_up_queued: bool = True,
) -> bool:
    """End the migration with what the hosts showed: record, release its slots, audit, tell pages.

    ``follow_up``: the guest's own pause and the inventory refresh come after, in a job of their
    own (``FOLLOW_UP_JOB``, created in this transaction, so the record never says "measuring"
    without a job to do it) that records them through ``migration_follow_up_done``; the record
    says so meanwhile. It is put on the migrations queue after the commit, behind whatever the
    end set going (the evacuation's next item, a migration waiting for the freed slot).
    ``follow_up_queued=False`` creates its row only: the caller runs it (vm_migrate
    --wait-figures). False (and nothing written) when the migration already ended
    differently, e.g. a reconciler won.
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
        fields.update(_heartbeat_fields(heartbeat))
    if follow_up:
        fields["follow_up"] = F.RUNNING
    if not _transition(migration, status, **fields):
        return False
    slots_release(migration)
    leases.lease_release(owner=migration)  # the guest is free for its next operation
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
    migration_ended(migration)
    # A slot just freed: give it to whoever waits.
    transaction.on_commit(migrations_dispatch)
    if follow_up:
        job_enqueue(
            kind=MigrationJobKindChoices.FOLLOW_UP, func=FOLLOW_UP_JOB, args=(migration.pk,), target=migration,
            timeout_s=policy.FOLLOW_UP_TIMEOUT_S, actor=Actor.system(), queue="migrations",
            enqueue=follow_up_queued,
        )
    return True


def follow_up_job(migration: Migration) -> Job | None:
    """The job that records the figures after ``migration`` (the newest), or None (none was made:
    a migration settled before follow-ups had jobs of their own, or by a reconciler)."""
    return Job.objects.filter(kind=MigrationJobKindChoices.FOLLOW_UP, target_type=Migration._meta.model_name,
                              target_id=str(migration.pk)).order_by("-pk").first()


def _heartbeat_fields(heartbeat) -> dict[str, Any]:
    return {"heartbeat_gap_s": heartbeat.max_gap_s, "heartbeat_continuous": heartbeat.continuous,
            "heartbeat_beats": heartbeat.beats}


@transaction.atomic
def migration_follow_up_done(*, migration: Migration, heartbeat=None, problems: Sequence[str] = ()) -> bool:
    """What followed the recorded end: the guest's measured pause, or what of the follow-up failed.

    Never changes the status: a failed inventory refresh is said on the record next to its
    outcome. False when no follow-up was running (a reconciler closed it first).
    """
    fields: dict[str, Any] = {"follow_up": F.FAILED if problems else F.DONE, "follow_up_note": " ".join(problems)}
    if heartbeat is not None:
        fields.update(_heartbeat_fields(heartbeat))
    if not Migration.objects.filter(pk=migration.pk, follow_up=F.RUNNING).update(**fields):
        return False
    migration.refresh_from_db()
    migration_changed(migration)
    return True


def migration_follow_up_lost(*, migration: Migration, why: str) -> bool:
    """The follow-up's worker is gone: say so, so the page stops waiting for its figures."""
    return migration_follow_up_done(migration=migration, problems=[f"The figures after the migration were not "
                                                                   f"recorded: {why}."])


def migration_still_running(*, migration: Migration, phase: str) -> None:
    """The reconciler found libvirt still migrating: leave the status, say so."""
    Migration.objects.filter(pk=migration.pk, status__in=MIGRATION_RUNNING_STATES).update(phase=phase)
    migration.refresh_from_db()
    migration_changed(migration)
