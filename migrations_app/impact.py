"""What a live migration did to the destination's other guests (pure, no Django).

Each running guest's cumulative vCPU counters are read on the destination when the migrate
call is made and when it returns; the inventory's last refresh of that host gave them before.
Per guest and window: the share of its vCPUs' time it ran (CPU use) and the share its vCPUs
waited for a host CPU (steal, libvirt's ``vcpu.N.delay``). A guest whose steal rose or whose
CPU use fell sharply while the newcomer arrived was slowed by it (``verdict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The "before" window is the time since the destination's last refresh: older than this, or
# shorter than the minimum, it tells nothing of the moments before the migration.
MAX_BEFORE_S = 15 * 60
MIN_WINDOW_S = 0.2
# Steal rising by this many points, or CPU use halving from at least MIN_BUSY_PCT: slowed.
STEAL_RISE_PCT = 10.0
MIN_BUSY_PCT = 5.0
# What one migration's record keeps of a host with many guests: the slowed ones first, then the
# ones that waited most for a CPU (the count of all is kept beside them).
MAX_KEPT = 50


@dataclass(frozen=True)
class Counters:
    """One guest's cumulative counters at one moment."""

    name: str
    vcpus: int
    vcpu_ns: int
    delay_ns: int | None  # None: not reported by this libvirt


@dataclass(frozen=True)
class Reading:
    """Every running guest of one host at ``at_s`` (seconds on one clock for all readings)."""

    at_s: float
    guests: Mapping[str, Counters]  # uuid -> counters


@dataclass(frozen=True)
class Neighbour:
    uuid: str
    name: str
    cpu_before_pct: float | None
    cpu_during_pct: float | None
    steal_before_pct: float | None
    steal_during_pct: float | None

    @property
    def slowed(self) -> bool:
        if (self.steal_during_pct is not None and self.steal_before_pct is not None
                and self.steal_during_pct - self.steal_before_pct >= STEAL_RISE_PCT):
            return True
        return (self.cpu_before_pct is not None and self.cpu_during_pct is not None
                and self.cpu_before_pct >= MIN_BUSY_PCT and self.cpu_during_pct < self.cpu_before_pct / 2)


def _share(before: int | None, after: int | None, seconds: float, vcpus: int) -> float | None:
    """Nanoseconds counted over a window as a share of the guest's vCPU time, 0–100; None if unknowable."""
    if before is None or after is None or after < before or seconds < MIN_WINDOW_S or vcpus <= 0:
        return None
    return round(min(100.0 * (after - before) / (seconds * 1e9 * vcpus), 100.0), 1)


def _window(a: Reading | None, b: Reading, uuid: str) -> tuple[float | None, float | None]:
    if a is None or uuid not in a.guests:
        return None, None
    x, y = a.guests[uuid], b.guests[uuid]
    if y.vcpu_ns < x.vcpu_ns:
        return None, None  # restarted in between: both counters began again
    seconds = b.at_s - a.at_s
    return (_share(x.vcpu_ns, y.vcpu_ns, seconds, y.vcpus), _share(x.delay_ns, y.delay_ns, seconds, y.vcpus))


def before_window_s(before: Reading | None, start: Reading) -> float | None:
    """How long the "before" window is, or None when ``before`` cannot stand for it (none, or not
    MIN_WINDOW_S to MAX_BEFORE_S before ``start``)."""
    if before is None or not MIN_WINDOW_S <= start.at_s - before.at_s <= MAX_BEFORE_S:
        return None
    return start.at_s - before.at_s


def neighbours(*, before: Reading | None, start: Reading, end: Reading, moving: str) -> list[Neighbour]:
    """The destination's other guests running at both ``start`` and ``end``, by name.

    ``before`` (the last refresh's counters) is used when ``before_window_s`` allows it; the
    guest that moved (``moving``) is never its own neighbour.
    """
    if before_window_s(before, start) is None:
        before = None
    rows = []
    for uuid in sorted(set(start.guests) & set(end.guests) - {moving}, key=lambda u: (end.guests[u].name, u)):
        cpu_before, steal_before = _window(before, start, uuid)
        cpu_during, steal_during = _window(start, end, uuid)
        rows.append(Neighbour(uuid=uuid, name=end.guests[uuid].name, cpu_before_pct=cpu_before,
                              cpu_during_pct=cpu_during, steal_before_pct=steal_before,
                              steal_during_pct=steal_during))
    return rows


def verdict(rows: list[Neighbour], *, host: str) -> str:
    """One line for the page and the log."""
    if not rows:
        return f"No other guest ran on {host} while the guest arrived."
    slowed = [r.name for r in rows if r.slowed]
    if slowed:
        shown = ", ".join(slowed[:5]) + (f" and {len(slowed) - 5} more" if len(slowed) > 5 else "")
        return (f"{len(slowed)} of {len(rows)} other guest(s) on {host} were slowed while the guest arrived "
                f"(steal up {STEAL_RISE_PCT:g}+ points or CPU use halved): {shown}.")
    return f"None of the {len(rows)} other guest(s) on {host} was slowed while the guest arrived."


def summary(rows: list[Neighbour], *, host: str, before_s: float | None, during_s: float) -> dict:
    """What the migration's record keeps (JSON): at most MAX_KEPT guests, the most affected first."""
    kept = sorted(rows, key=lambda r: (not r.slowed, -(r.steal_during_pct or 0.0), r.name))[:MAX_KEPT]
    return {
        "measured": True,
        "host": host,
        "before_s": round(before_s, 1) if before_s is not None else None,
        "during_s": round(during_s, 2),
        "verdict": verdict(rows, host=host),
        "slowed": sum(r.slowed for r in rows),
        "total": len(rows),
        "guests": [{"uuid": r.uuid, "name": r.name, "cpu_before_pct": r.cpu_before_pct,
                    "cpu_during_pct": r.cpu_during_pct, "steal_before_pct": r.steal_before_pct,
                    "steal_during_pct": r.steal_during_pct, "slowed": r.slowed} for r in kept],
    }
