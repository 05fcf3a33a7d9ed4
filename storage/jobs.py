"""RQ job functions of shared storage: ids in, runner called, nothing else."""

from core.jobs import run_job

from . import nfs


def share_plan_job(job_id: int, setup_id: int) -> None:
    run_job(job_id, lambda ctx: nfs.plan_setup(setup_id=setup_id, ctx=ctx))


def share_apply_job(job_id: int, setup_id: int) -> None:
    run_job(job_id, lambda ctx: nfs.apply_setup(setup_id=setup_id, ctx=ctx))


def share_verify_job(job_id: int, share_id: int) -> None:
    run_job(job_id, lambda ctx: nfs.verify_share(share_id=share_id, ctx=ctx))
