"""RQ job functions of the calendar: ids in, the step's runner called."""

from core.jobs import run_job

from . import runs


def occurrence_step_job(job_id: int, occurrence_id: int, step: str) -> None:
    work = {"check": runs.run_check, "start": runs.run_start}[step]
    run_job(job_id, lambda ctx: work(occurrence_id=occurrence_id, ctx=ctx))
