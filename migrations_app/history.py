"""The migration history behind the migrations list's charts, pure: rows in, chart series out.

Per migration (when it was asked for): total time, libvirt's downtime and the downtime the guest
saw (its heartbeat gap, where measured); migrations per day; a histogram of downtimes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

# Upper edges of the downtime histogram's buckets, in ms; the last bucket is "at or over" the last edge.
DOWNTIME_EDGES_MS = (50, 100, 200, 500, 1000, 2000, 5000)
DAY_S = 86400


@dataclass(frozen=True)
class Row:
    id: int
    created: datetime
    status: str
    vm_name: str
    source: str
    destination: str
    total_ms: int | None
    downtime_ms: int | None
    guest_gap_s: float | None


def _ms_label(ms: int) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms} ms"


def histogram(downtimes_ms: Iterable[int], edges: Sequence[int] = DOWNTIME_EDGES_MS) -> dict:
    """How many downtimes fall in each bucket: under the first edge, between edges, at or over the last."""
    labels = [f"< {_ms_label(edges[0])}"] + [f"{_ms_label(a)}–{_ms_label(b)}" for a, b in zip(edges, edges[1:])]
    labels.append(f"≥ {_ms_label(edges[-1])}")
    counts = [0] * (len(edges) + 1)
    for ms in downtimes_ms:
        counts[next((i for i, edge in enumerate(edges) if ms < edge), len(edges))] += 1
    return {"labels": labels, "count": counts}


def per_day(times: Iterable[datetime]) -> dict:
    """Migrations per UTC day (days with none left out), as epoch seconds of each day's start."""
    days = Counter(int(t.astimezone(timezone.utc).timestamp()) // DAY_S * DAY_S for t in times)
    ordered = sorted(days)
    return {"t": ordered, "count": [days[d] for d in ordered]}


def series(rows: Sequence[Row]) -> dict:
    """One point per migration, oldest first: total seconds, downtime ms, the guest's gap in ms (None: not measured)."""
    rows = sorted(rows, key=lambda r: (r.created, r.id))
    return {
        "t": [int(r.created.timestamp()) for r in rows],
        "id": [r.id for r in rows],
        "label": [f"#{r.id} {r.vm_name}: {r.source} → {r.destination} ({r.status})" for r in rows],
        "total_s": [round(r.total_ms / 1000, 2) if r.total_ms is not None else None for r in rows],
        "downtime_ms": [r.downtime_ms for r in rows],
        "guest_ms": [round(r.guest_gap_s * 1000) if r.guest_gap_s is not None else None for r in rows],
        "per_day": per_day(r.created for r in rows),
        "histogram": histogram(r.downtime_ms for r in rows if r.downtime_ms is not None),
    }
