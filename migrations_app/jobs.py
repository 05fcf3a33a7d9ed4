"""RQ job functions of migrations: ids in, runner called, nothing else (but a job that holds a
guest's lease itself releases it once it ended)."""

from core.jobs import run_job
from hosts import leases

from . import candidates, cold_runner, permissions, reconciler, runner


def preflight_job(job_id: int, run_id: int) -> None:
    run_job(job_id, lambda ctx: candidates.check_candidate(run_id=run_id, ctx=ctx))


def migration_job(job_id: int, migration_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_migration(migration_id=migration_id, ctx=ctx))


def migration_follow_up_job(job_id: int, migration_id: int) -> None:
    """The figures after a settled migration (its own job: the migration's ended at its outcome)."""
    run_job(job_id, lambda ctx: runner.run_follow_up(migration_id=migration_id, ctx=ctx))


def reconcile_job(job_id: int, migration_id: int, reason: str = "") -> None:
    run_job(job_id, lambda ctx: reconciler.reconcile_migration(migration_id=migration_id, reason=reason, ctx=ctx))


def cold_migration_job(job_id: int, cold_id: int) -> None:
    run_job(job_id, lambda ctx: cold_runner.run_cold_migration(cold_id=cold_id, ctx=ctx))


def image_permissions_job(job_id: int, run_id: int) -> None:
    job = run_job(job_id, lambda ctx: permissions.repair_image_permissions(run_id=run_id, ctx=ctx))
    if job.is_terminal:  # however it ended, the guest is free again (not if it ran elsewhere)
        leases.lease_release(owner=job)


def cold_reconcile_job(job_id: int, cold_id: int, reason: str = "") -> None:
    run_job(job_id, lambda ctx: cold_runner.reconcile_cold_migration(cold_id=cold_id, reason=reason, ctx=ctx))
