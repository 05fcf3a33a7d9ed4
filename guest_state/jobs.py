"""RQ job functions of saved states: ids in, runner called."""

from core.jobs import run_job

from . import reconciler, runner, snapshot_runner


def save_job(job_id: int, state_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_save(state_id=state_id, ctx=ctx))


def restore_job(job_id: int, restore_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_restore(restore_id=restore_id, ctx=ctx))


def save_settle_job(job_id: int, state_id: int, reason: str = "") -> None:
    run_job(job_id, lambda ctx: reconciler.settle_save(state_id=state_id, reason=reason, ctx=ctx))


def restore_settle_job(job_id: int, restore_id: int, reason: str = "") -> None:
    run_job(job_id, lambda ctx: reconciler.settle_restore(restore_id=restore_id, reason=reason, ctx=ctx))


def job_settle_job(job_id: int, lost_job_id: int, reason: str = "") -> None:
    run_job(job_id, lambda ctx: reconciler.settle_lost_job(lost_job_id=lost_job_id, reason=reason, ctx=ctx))


def managed_save_job(job_id: int, vm_id: int, remove: bool = False) -> None:
    run_job(job_id, lambda ctx: runner.run_managed_save(vm_id=vm_id, remove=remove, ctx=ctx))


def state_delete_job(job_id: int, state_id: int) -> None:
    run_job(job_id, lambda ctx: runner.run_state_delete(state_id=state_id, ctx=ctx))


def snapshot_create_job(job_id: int, snapshot_id: int) -> None:
    run_job(job_id, lambda ctx: snapshot_runner.run_snapshot_create(snapshot_id=snapshot_id, ctx=ctx))


def snapshot_revert_job(job_id: int, snapshot_id: int) -> None:
    run_job(job_id, lambda ctx: snapshot_runner.run_snapshot_revert(snapshot_id=snapshot_id, ctx=ctx))


def snapshot_delete_job(job_id: int, snapshot_id: int) -> None:
    run_job(job_id, lambda ctx: snapshot_runner.run_snapshot_delete(snapshot_id=snapshot_id, ctx=ctx))


def snapshot_check_job(job_id: int, vm_id: int) -> None:
    run_job(job_id, lambda ctx: snapshot_runner.run_snapshot_check(vm_id=vm_id, ctx=ctx))
