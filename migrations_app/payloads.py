"""What pages receive about a migration: its state and its progress samples (pure).

The same payloads go to the browser live (``core.broadcast`` sends them), are sent again to
a page that connects, and are rebuilt from stored samples for the chart after the fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .models import Migration
from .policy import JobInfo
from .progress import memory_done_pct


def state_payload(migration: Migration) -> dict[str, Any]:
    """What pages need to follow a migration's status (sent on change and on connect)."""
    return {
        "id": migration.pk,
        "status": migration.status,
        "status_label": migration.get_status_display(),
        "phase": migration.phase,
        "terminal": migration.is_terminal,
        "warning": migration.convergence_warning,
        "abort_requested": migration.abort_requested is not None,
        # The figures after a settled migration (heartbeat, inventory) arrive with a change of this.
        "follow_up": migration.follow_up,
    }


# What the adaptive policy did right before a sample, kept with the sample's stored numbers
# (``ADAPTIVE_STEP_KEY``) so the chart can mark it after the fact too.
ADAPTIVE_STEP_KEY = "adaptive_step"
ADAPTIVE_STEP_LABELS = {1: "downtime raised", 2: "post-copy"}


def sample_payload(elapsed_ms: int, stats: Mapping[str, object], *, warning: str | None = None,
                   forecast: str | None = None) -> dict:
    """One sample as the page and the CLI use it. Sizes in bytes, rates in bytes/s, times in s.

    ``forecast``: when it will finish, in words (policy.forecast_text), for live samples."""
    info = JobInfo.from_stats(stats)
    eta = info.eta_s
    step = stats.get(ADAPTIVE_STEP_KEY)
    return {
        "t": round(elapsed_ms / 1000, 2),
        "pct": memory_done_pct(info),
        "data_pct": round(info.progress_pct, 1) if info.progress_pct is not None else None,
        "mem_total": info.memory_total,
        "mem_remaining": info.memory_remaining,
        "mem_processed": info.memory_processed,
        "iteration": info.memory_iteration,
        "data_remaining": info.data_remaining,
        "disk_total": info.disk_total,
        "disk_remaining": info.disk_remaining,
        "bps": info.transfer_bps,
        "dirty_bps": info.dirty_bps,
        "eta_s": round(eta, 1) if eta is not None else None,
        "throttle": stats.get("auto_converge_throttle"),
        "warning": warning,
        "forecast": forecast,
        "step": ADAPTIVE_STEP_LABELS.get(step) if isinstance(step, int) else None,
    }


def chart_samples(rows, *, max_points: int = 1500) -> list[dict]:
    """Payloads of stored samples ``[(elapsed_ms, stats), …]`` for the chart, thinned evenly to at most max_points."""
    rows = list(rows)
    if len(rows) > max_points:
        step = len(rows) / max_points
        rows = [rows[int(i * step)] for i in range(max_points - 1)] + [rows[-1]]
    return [sample_payload(elapsed_ms, stats) for elapsed_ms, stats in rows]
