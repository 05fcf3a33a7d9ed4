"""Checking one candidate destination of a plan (the work of a preflight job)."""

from __future__ import annotations

from core.jobs import JobContext
from hosts.adapters.errors import AdapterError

from . import endpoints
from .models import PreflightRun
from .options import from_dict
from .preflight import overall, run_preflight
from .services import plans


def check_candidate(*, run_id: int, ctx: JobContext) -> dict:
    """Gather facts from the source and one destination, run the preflight, store the verdicts."""
    run = PreflightRun.objects.select_related("plan", "plan__source", "destination").get(pk=run_id)
    if not plans.preflight_started(run=run):
        return {"skipped": True}
    plan = run.plan
    ctx.log(f"Checking {plan.source.name} → {run.destination.name} for {plan.vm_name}")
    try:
        pair, guest = endpoints.gather_pair(
            source=plan.source, destination=run.destination, guest_uuid=str(plan.vm_uuid),
            options=from_dict(plan.options),
        )
        verdicts = run_preflight(pair, guest, from_dict(plan.options))
    except AdapterError as exc:
        plans.preflight_failed(run=run, error=exc.message, hint=exc.hint)
        raise
    except Exception as exc:  # the row must not stay "checking" whatever went wrong
        plans.preflight_failed(run=run, error=f"{type(exc).__name__}: {exc}")
        raise
    plans.preflight_done(run=run, verdicts=verdicts, memory_free_kib=pair.destination.memory_free_kib)
    result = overall(verdicts)
    ctx.log(f"{run.destination.name}: {result}")
    return {"destination": run.destination.name, "overall": result}
