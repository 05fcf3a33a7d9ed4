"""Jobs of host maintenance: ids in, the runner does the work (core.jobs.run_job records it)."""

from __future__ import annotations

from core.jobs import run_job

from . import run_facts
from .queue import evacuation_advance


def run_facts_job(job_id: int, evacuation_id: int) -> None:
    """Check the hosts once for every waiting move of a run (maintenance.run_facts)."""
    run_job(job_id, lambda ctx: run_facts.run_facts_gather(evacuation_id=evacuation_id, ctx=ctx,
                                                           advance=evacuation_advance))
