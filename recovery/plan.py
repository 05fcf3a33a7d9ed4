"""Which guests of a dead host can be brought back, and where (pure).

The recovery page, ``host_recover --dry-run`` and ``services.recovery_request`` call the same
``recovery_plan`` over the same inventory facts, so the plan shown is the plan executed.

Rules, in the order they are judged:
- Only guests that were running (or paused) at the host's last refresh: a shut-off guest has
  nothing to lose and keeps its definition there.
- A guest already replaced elsewhere (an earlier recovery) is not recovered twice.
- The inventory must hold its definition (kept by every refresh, up to a bounded size).
- Every disk with a source must be on shared or network storage as the inventory classified it:
  a local disk (even read-only) died with the host, and an unknown one cannot be trusted.
- Passed-through host devices tie a guest to its host.
- Then the placement engine (``migrations_app.placement.place``) picks the destination with the
  same rules as an evacuation (memory, each host's guest budget, arch, domain type, anti-affinity,
  pins); the admin's
  ``destination`` is an override for every guest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from migrations_app import placement

STORAGE_OK = ("shared", "network")


@dataclass(frozen=True)
class DiskFact:
    target: str
    storage: str  # hosts.choices.DiskStorageChoices value
    readonly: bool = False
    has_source: bool = True


@dataclass(frozen=True)
class GuestFacts:
    """A guest of the dead host as its last refresh saw it."""

    needs: placement.GuestNeeds
    was_running: bool
    has_definition: bool
    disks: tuple[DiskFact, ...] = ()
    host_devices: int = 0
    superseded_note: str = ""


@dataclass(frozen=True)
class Move:
    uuid: str
    name: str
    destination: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Left:
    uuid: str
    name: str
    reason: str


@dataclass(frozen=True)
class RecoveryPlan:
    source: str
    moves: tuple[Move, ...]
    left: tuple[Left, ...]

    @property
    def fingerprint(self) -> str:
        """Identifies what the plan does; a confirm of a plan that changed since it was shown is refused."""
        text = "|".join(f"{m.uuid}:{m.destination}" for m in self.moves)
        return hashlib.sha256(f"{self.source}|{text}".encode()).hexdigest()[:16]


def why_not(guest: GuestFacts, source: str) -> str | None:
    """Why a guest of the dead host ``source`` cannot be recovered whatever the destination, or None."""
    name = guest.needs.name
    if guest.superseded_note:
        return f"Already replaced: {guest.superseded_note}"
    if not guest.was_running:
        return f"{name} was not running at {source}'s last refresh: nothing to recover (it stays defined there)."
    if not guest.has_definition:
        return (f"The inventory holds no definition of {name} (never refreshed since the portal keeps them, "
                "or larger than it keeps): define it by hand on another host.")
    bad = [d for d in guest.disks if d.has_source and d.storage not in STORAGE_OK]
    if bad:
        words = ", ".join(f"{d.target} ({'read-only, ' if d.readonly else ''}{d.storage})" for d in bad)
        return (f"{name} has disks that are not on shared storage: {words}. They died with {source}; "
                "restore them from a backup first.")
    if guest.host_devices:
        return f"{name} uses {guest.host_devices} passed-through device(s) of {source}."
    return None


def recovery_plan(
    guests: Iterable[GuestFacts], hosts: Iterable[placement.HostCapacity], *, source: str,
    destination: str | None = None,
) -> RecoveryPlan:
    """Each guest of ``source``: a destination, or why it cannot be recovered."""
    left, candidates = [], []
    for guest in sorted(guests, key=lambda g: (g.needs.name, g.needs.uuid)):
        reason = why_not(guest, source)
        if reason:
            left.append(Left(guest.needs.uuid, guest.needs.name, reason))
        else:
            # Booted afresh from its disks: it needs the memory of a running guest, no copy of a local disk.
            candidates.append(replace(guest.needs, state="running", local_disks=(), shared_disks=True))
    overrides = {g.uuid: destination for g in candidates} if destination else None
    placed = placement.place(candidates, hosts, source=source, overrides=overrides)
    moves = []
    for p in placed.placements:
        if p.outcome == placement.OUTCOME_MOVE:
            moves.append(Move(p.uuid, p.name, p.destination, tuple(w for w in p.warnings if "CPU" not in w)))
        else:
            # The reason only: the blockers' remedies speak of maintenance choices that do not apply here,
            # except how to raise a budget that refused it.
            reason = p.blocker.reason if p.blocker else p.note
            if p.blocker and p.blocker.budget_hosts:
                reason = f"{reason} {placement.budget_remedy(p.blocker.budget_hosts)}"
            left.append(Left(p.uuid, p.name, reason))
    return RecoveryPlan(source=source, moves=tuple(sorted(moves, key=lambda m: (m.name, m.uuid))),
                        left=tuple(sorted(left, key=lambda x: (x.name, x.uuid))))
