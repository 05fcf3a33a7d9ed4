"""Can the hosts left hold the guests of every host in maintenance at the same time? (pure)

Windows that overlap put their hosts into maintenance together; ``capacity_check`` places the
running guests of all of them with the placement engine (``migrations_app.placement.place``),
one host after the other, each seeing what the earlier ones already took, over the hosts that
stay out of maintenance. A guest that finds no room is a shortage, with the numbers; a guest
that cannot move for another reason (a local disk, a pin) is not a capacity conflict — the
window's dry run shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from migrations_app import placement

_ROOM_CHECKS = ("no-room", "budget")  # no host has the memory, or every host's guest budget is spent


@dataclass(frozen=True)
class Shortage:
    host: str  # the host in maintenance the guest is on
    guest: str
    memory_kib: int
    reason: str


@dataclass(frozen=True)
class CapacityVerdict:
    down: tuple[str, ...]  # hosts in maintenance together
    placed: int  # running guests that found a host
    shortages: tuple[Shortage, ...]
    free_after_kib: Mapping[str, int]  # what the remaining hosts would have left

    @property
    def ok(self) -> bool:
        return not self.shortages

    def summary(self) -> str:
        if self.ok:
            return (f"With {', '.join(self.down)} in maintenance together, the other hosts hold all "
                    f"{self.placed} running guest(s).")
        lacking = sum(s.memory_kib for s in self.shortages)
        return (f"With {', '.join(self.down)} in maintenance together, {len(self.shortages)} running guest(s) "
                f"find no room ({lacking / 1024 / 1024:.1f} GiB short; {self.placed} placed): "
                + "; ".join(f"{s.guest} on {s.host}" for s in self.shortages[:5]) + ".")


def capacity_check(
    *, down: Iterable[str], guests: Mapping[str, Sequence[placement.GuestNeeds]],
    hosts: Sequence[placement.HostCapacity],
) -> CapacityVerdict:
    """Place the running guests of every host in ``down`` over the others, sharing their room."""
    down = tuple(sorted(set(down)))
    free = {h.name: h.free_memory_kib for h in hosts}
    # What each host's budget has taken so far (its own running guests, then those placed here from each source).
    committed = {h.name: h.committed_memory_kib for h in hosts}
    vcpus = {h.name: h.free_vcpus for h in hosts}
    placed, shortages = 0, []
    for source in down:
        running = [g for g in guests.get(source, ()) if g.state != "shutoff"]
        if not running:
            continue
        capacities = [replace(h, in_maintenance=h.in_maintenance or h.name in down, free_memory_kib=free[h.name],
                              committed_memory_kib=committed[h.name], free_vcpus=vcpus[h.name])
                      for h in hosts]
        plan = placement.place(running, capacities, source=source)
        by_uuid = {g.uuid: g for g in running}
        for p in plan.placements:
            g = by_uuid[p.uuid]
            if p.outcome == placement.OUTCOME_MOVE:
                placed += 1
                free[p.destination] -= g.memory_kib
                committed[p.destination] += g.memory_kib
                if vcpus[p.destination] is not None:
                    vcpus[p.destination] -= g.vcpus
            elif p.blocker is not None and (p.blocker.check in _ROOM_CHECKS or (
                    p.blocker.check == "no-destination" and "No other host" in p.blocker.reason)):
                shortages.append(Shortage(source, g.name, g.memory_kib, p.blocker.reason))
    return CapacityVerdict(down=down, placed=placed, shortages=tuple(shortages),
                           free_after_kib={n: v for n, v in free.items() if n not in down})


@dataclass(frozen=True)
class Busy:
    """A span when some hosts are in maintenance (an occurrence of a window)."""

    start: datetime
    end: datetime
    hosts: frozenset[str]


def hosts_down_together(new: Busy, others: Iterable[Busy]) -> list[frozenset[str]]:
    """Every set of hosts in maintenance at once while ``new`` runs, one per distinct overlap."""
    overlapping = [o for o in others if o.start < new.end and new.start < o.end]
    found: list[frozenset[str]] = [new.hosts]
    # Where two others overlap each other too, all three are down together at some instant.
    for o in overlapping:
        together = set(new.hosts | o.hosts)
        lo, hi = max(new.start, o.start), min(new.end, o.end)
        for p in overlapping:
            if p is not o and p.start < hi and lo < p.end:
                together |= p.hosts
        found.append(frozenset(together))
    return sorted(set(found), key=lambda s: (-len(s), sorted(s)))
