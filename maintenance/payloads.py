"""What pages and ``host_maintenance --json`` receive about an evacuation (built from the records)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from .choices import ItemActionChoices as IA, ItemStatusChoices as IS
from .decisions import makespan_s
from .models import Evacuation, EvacuationItem

_DONE = (IS.SUCCEEDED, IS.FAILED, IS.SKIPPED, IS.CANCELLED)


def item_payload(item: EvacuationItem) -> dict[str, Any]:
    m = item.migration
    return {
        "id": item.pk,
        "position": item.position,
        "vm": item.vm_name,
        "uuid": str(item.vm_uuid),
        "action": item.action,
        "action_label": item.get_action_display(),
        "from": item.origin.name,
        "to": item.destination.name if item.destination_id else None,
        "status": item.status,
        "status_label": item.get_status_display(),
        "attempts": item.attempts,
        "migration": item.migration_id,
        "migration_url": m.get_absolute_url() if m is not None else None,
        "migration_phase": m.phase if m is not None and item.status == IS.RUNNING else "",
        "job": item.job_id,
        "reason": item.reason,
        "remedy": item.remedy,
        "estimated_s": item.estimated_s,
        "total_ms": m.total_time_ms if m is not None else None,
        "downtime_ms": m.downtime_ms if m is not None else None,
    }


def hosts_check_payload(ev: Evacuation) -> dict[str, Any] | None:
    """The run's one check of the hosts (run_facts.py): its job, how it stands, in words."""
    job = ev.facts_job
    if job is None:
        return None
    result = job.result if isinstance(job.result, dict) else {}
    if not job.is_terminal:
        said = "Checking the hosts once for every move…"
    elif job.status == "succeeded":
        failed = result.get("failed_sources") or []
        said = (f"Checked once for {result.get('moves', 0)} move(s)"
                + (f"; not from {', '.join(failed)} (those moves check in full)" if failed else ""))
    else:
        said = "The check failed: each move checks both hosts in full."
    return {"job": job.pk, "status": job.status, "text": said}


def evacuation_payload(ev: Evacuation) -> dict[str, Any]:
    items = list(ev.items.select_related("origin", "destination", "migration"))
    work = [i for i in items if i.action != IA.STAY]
    done = [i for i in work if i.status in _DONE]
    remaining = [i.estimated_s or 0 for i in work if i.status in (IS.PENDING, IS.RUNNING)]
    end = ev.ended or timezone.now()
    return {
        "id": ev.pk,
        "host": ev.host.name,
        "kind": ev.kind,
        "kind_label": ev.get_kind_display(),
        "status": ev.status,
        "status_label": ev.get_status_display(),
        "terminal": ev.is_terminal,
        "concurrency": ev.concurrency,
        "outcome": ev.outcome,
        "done": len(done),
        "total": len(work),
        "pct": round(100 * len(done) / len(work)) if work else 100,
        "eta_s": makespan_s(remaining, ev.concurrency) if remaining and not ev.is_terminal else None,
        "wall_s": round((end - ev.created).total_seconds(), 1),
        "hosts_check": hosts_check_payload(ev),
        "items": [item_payload(i) for i in items],
    }
