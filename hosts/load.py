"""Load history, pure: samples from two refreshes' counters, buckets, downsampling and retention.

A refresh gives cumulative counters; a use (CPU %) is the delta between two refreshes. Points
are kept in buckets: 5-minute points for 7 days, then rolled into hourly points kept 90 days
(``RETENTION``). A bucket that receives several samples keeps their average (``merge``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hosts.adapters.stats import HostStats, cpu_use_percent, vcpu_use_percent

FINE_S = 300
COARSE_S = 3600
# (step of the points, how long they are kept); a point older than its keep moves to the next step.
RETENTION: tuple[tuple[int, timedelta], ...] = ((FINE_S, timedelta(days=7)), (COARSE_S, timedelta(days=90)))


@dataclass(frozen=True)
class Point:
    """One bucket of a series: ``values`` maps a field to its average over ``samples``; None = unknown."""

    at: datetime
    samples: int
    values: Mapping[str, float | None]


def bucket_start(at: datetime, step_s: int) -> datetime:
    """The start of the ``step_s`` bucket holding ``at`` (UTC, aligned on the epoch)."""
    ts = int(at.timestamp())
    return datetime.fromtimestamp(ts - ts % step_s, tz=timezone.utc)


def merge(a: Point, b: Point) -> Point:
    """Two points of one bucket as one: each value the sample-weighted average (unknowns ignored)."""
    values = {}
    for key in sorted(set(a.values) | set(b.values)):
        parts = [(p.values.get(key), p.samples) for p in (a, b) if p.values.get(key) is not None]
        n = sum(w for _, w in parts)
        values[key] = round(sum(v * w for v, w in parts) / n, 3) if n else None
    return Point(at=min(a.at, b.at), samples=a.samples + b.samples, values=values)


def downsample(points: Iterable[Point], step_s: int) -> list[Point]:
    """Points rolled into ``step_s`` buckets (sample-weighted averages), oldest first."""
    buckets: dict[datetime, Point] = {}
    for p in sorted(points, key=lambda p: p.at):
        start = bucket_start(p.at, step_s)
        p = Point(at=start, samples=p.samples, values=p.values)
        buckets[start] = merge(buckets[start], p) if start in buckets else p
    return [buckets[k] for k in sorted(buckets)]


@dataclass(frozen=True)
class RetentionStep:
    """What the sweep does to the points of one step: roll those before ``roll_before`` into ``into_step_s`` (None: delete)."""

    step_s: int
    roll_before: datetime
    into_step_s: int | None


def retention_steps(now: datetime, policy=RETENTION) -> list[RetentionStep]:
    """For each step of the policy: the cut-off, and the next step its older points go to (the last: deleted).

    The cut-off is aligned on the next step's buckets so a coarse bucket is rolled whole, once.
    """
    steps = []
    for i, (step_s, keep) in enumerate(policy):
        into = policy[i + 1][0] if i + 1 < len(policy) else None
        cut = now - keep
        steps.append(RetentionStep(step_s, bucket_start(cut, into) if into else cut, into))
    return steps


@dataclass(frozen=True)
class Counters:
    at: datetime
    cpu_busy_ns: int
    cpu_total_ns: int
    vcpu_ns: Mapping[str, int]
    vcpu_delay_ns: Mapping[str, int] = field(default_factory=dict)  # where libvirt reports it


@dataclass(frozen=True)
class Sample:
    """What one refresh measured: the host's point and one per running guest."""

    host: dict
    guests: dict[str, dict]  # uuid -> values
    counters: Counters


def sample(stats: HostStats, before: Counters | None, *, now: datetime) -> Sample:
    """The load a refresh measured, with CPU uses from the deltas to ``before`` (None: first refresh)."""
    node = stats.node
    elapsed = (now - before.at).total_seconds() if before else 0.0
    cpu = cpu_use_percent(before.cpu_busy_ns, before.cpu_total_ns, node.cpu_busy_ns, node.cpu_total_ns) if before else None
    guests = {}
    for d in stats.domains:
        if d.state not in ("running", "paused"):
            continue
        prev = before.vcpu_ns.get(d.uuid) if before else None
        guests[d.uuid] = {
            "memory_kib": d.balloon_current_kib,
            "vcpu_pct": vcpu_use_percent(prev, d.vcpu_time_ns, elapsed, d.vcpus) if prev is not None else None,
        }
    return Sample(
        host={"memory_used_kib": node.memory_used_kib, "memory_free_kib": node.memory_free_kib, "cpu_pct": cpu},
        guests=guests,
        counters=Counters(now, node.cpu_busy_ns, node.cpu_total_ns,
                          {d.uuid: d.vcpu_time_ns for d in stats.domains if d.state in ("running", "paused")},
                          {d.uuid: d.vcpu_delay_ns for d in stats.domains
                           if d.state in ("running", "paused") and d.vcpu_delay_ns is not None}),
    )


# --- What a chart shows --------------------------------------------------------------------

RANGES = {"hour": (timedelta(hours=1), FINE_S), "day": (timedelta(days=1), FINE_S), "week": (timedelta(days=7), FINE_S),
          "quarter": (timedelta(days=90), COARSE_S)}


def chart_series(rows: Iterable[tuple[datetime, int, int, float | None]]) -> dict:
    """Columns for a chart from (at, used KiB, free KiB, CPU %) rows: epoch seconds, memory used %, CPU %."""
    t, mem, cpu = [], [], []
    for at, used, free, cpu_pct in rows:
        t.append(int(at.timestamp()))
        total = used + free
        mem.append(round(100.0 * used / total, 1) if total else None)
        cpu.append(cpu_pct)
    return {"t": t, "memory_pct": mem, "cpu_pct": cpu}
