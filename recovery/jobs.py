"""RQ job functions of host recovery: ids in, runner called."""

from core.jobs import run_job

from . import runner


def recovery_check_job(job_id: int, recovery_id: int, enqueue_items: bool = True) -> None:
    run_job(job_id, lambda ctx: runner.run_check(recovery_id=recovery_id, ctx=ctx, enqueue=enqueue_items))


def recovery_item_job(job_id: int, item_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_item(item_id=item_id, ctx=ctx))


def stale_remove_job(job_id: int, item_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_stale_remove(item_id=item_id, ctx=ctx))


def run_inline(recovery):
    """Run a recovery requested with enqueue=False here: the check, then its items one by one
    (the CLI's --wait and the lab tests; no worker needed). Returns the recovery refreshed."""
    recovery_check_job(recovery.job_id, recovery.pk, False)
    for item in recovery.items.exclude(job=None).order_by("pk"):
        recovery_item_job(item.job_id, item.pk)
    recovery.refresh_from_db()
    return recovery
