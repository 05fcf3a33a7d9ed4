"""The rolling queue's decisions, as pure functions over plain values (tested with tables).

- ``settle_item``: what a running item becomes once its migration or power job says how it ended;
- ``may_start``: whether a waiting item of a return run may start (moves out before moves in);
- ``waits_for_facts``: whether a waiting item waits for the run's one check of the hosts;
- ``facts_needed``: which moves of a run that check still has to gather;
- ``evacuation_end``: the status and one-line outcome of an evacuation whose items are all settled;
- ``estimate_s`` / ``makespan_s``: the plan's time estimate.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from migrations_app.choices import MigrationStatusChoices as MS

from .choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, ItemStatusChoices as IS

# A failed item is tried once more with a fresh placement before it is left on the host.
MAX_ATTEMPTS = 2

_JOB_OK, _JOB_FAILED = "succeeded", ("failed", "aborted")


@dataclass(frozen=True)
class ItemStep:
    """What to do with a running item: nothing yet (status ""), settle it, or retry it elsewhere."""

    status: str = ""
    retry: bool = False
    reason: str = ""


WAIT = ItemStep()


def settle_item(
    *, action: str, attempts: int, cancelling: bool, migration_status: str | None = None,
    migration_outcome: str = "", migration_error: str = "", job_status: str | None = None, job_error: str = "",
) -> ItemStep:
    """Decide a running item from how its migration (live/offline) or power job (shutdown/start) ended.

    A migration that failed with the guest still on its source is retried once elsewhere; one that
    needs attention is not (where the guest runs is not settled); an abort is final (someone chose it).
    """
    if action in (IA.LIVE, IA.OFFLINE):
        if migration_status is None:
            return ItemStep(IS.FAILED, reason="Its migration record is gone.")
        if migration_status == MS.SUCCEEDED:
            return ItemStep(IS.SUCCEEDED, reason=migration_outcome)
        if migration_status == MS.ABORTED:
            return ItemStep(IS.CANCELLED if cancelling else IS.FAILED, reason=migration_outcome or "Aborted.")
        if migration_status == MS.NEEDS_ATTENTION:
            return ItemStep(IS.FAILED, reason=f"Needs attention: {migration_outcome or migration_error}".strip())
        if migration_status == MS.FAILED:
            why = migration_error or migration_outcome or "The migration failed."
            if cancelling:
                return ItemStep(IS.CANCELLED, reason=why)
            if attempts < MAX_ATTEMPTS:
                return ItemStep(retry=True, reason=why)
            return ItemStep(IS.FAILED, reason=why)
        return WAIT  # still queued or running
    if job_status is None:
        return ItemStep(IS.FAILED, reason="Its job record is gone.")
    if job_status == _JOB_OK:
        return ItemStep(IS.SUCCEEDED)
    if job_status in _JOB_FAILED:
        return ItemStep(IS.FAILED, reason=job_error or f"The {action} job {job_status}.")
    return WAIT


@dataclass(frozen=True)
class QueuedMove:
    """An item as the return run's ordering rule sees it."""

    position: int
    status: str
    origin: str  # the host it leaves
    destination: str | None  # the host it goes to


def may_start(item: QueuedMove, items: Iterable[QueuedMove]) -> bool:
    """A move home waits for every earlier move out of its destination: the return plan counted on the room."""
    return not any(
        other.position < item.position and other.origin == item.destination
        and other.status in (IS.PENDING, IS.RUNNING)
        for other in items
    )


@dataclass(frozen=True)
class SettledItem:
    vm_name: str
    action: str
    status: str
    blocked: bool  # the plan could not move it (a blocker), as opposed to excluded or staying by choice
    running: bool  # the guest was running or paused when planned
    reason: str = ""


MOVES = (IA.LIVE, IA.OFFLINE)


def waits_for_facts(*, action: str, facts_job_status: str | None, facts_kept: bool = False) -> bool:
    """A move waits while the run's one check of the hosts is queued or running (power actions never do),
    unless its own facts are kept for the run already (``facts_kept``: its plan gathered them moments
    before the confirm, or the check has finished with its source while other sources are still asked).

    Once the check has ended — with facts, without (a host did not answer), or lost with its
    worker — every move starts; the runner then checks in full whatever the run could not gather.
    """
    return action in MOVES and facts_job_status in ("queued", "running") and not facts_kept


def facts_needed(moves: Iterable[tuple[str, str, str]], kept: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The (guest UUID, source, destination) moves without facts kept for the run, in the order given."""
    have = {(u.lower(), s, d) for u, s, d in kept}
    return [(u, s, d) for u, s, d in moves if (u.lower(), s, d) not in have]


def evacuation_end(*, kind: str, host: str, items: Sequence[SettledItem], cancelled: bool) -> tuple[str, str]:
    """(status, one-line outcome) of an evacuation or return whose items are all settled.

    Succeeded: every guest the plan moved ended where it said and (entering) no running guest the
    plan could not move is left. Failed: something was to move and nothing did. Cancelled: the
    admin stopped it. Else incomplete, naming the guests left and why — never "empty" while one runs.
    """
    # A guest moved or deleted since the plan (skipped) is no longer this run's business.
    to_move = [i for i in items if i.action != IA.STAY and i.status != IS.SKIPPED]
    done = [i for i in to_move if i.status == IS.SUCCEEDED]
    missed = [i for i in to_move if i.status != IS.SUCCEEDED]
    if kind == "enter":
        # What still runs on the host: moves that did not happen, and running guests no plan could move.
        left = [i for i in missed if i.running and i.action != IA.START] + [
            i for i in items if i.action == IA.STAY and i.blocked and i.running
        ]
        counts = f"{len(done)} of {len(to_move)} guest(s) moved"
        tail = f"; still on {host}: " + "; ".join(f"{i.vm_name} ({(i.reason or i.status).rstrip('.')})" for i in left) if left else ""
    else:
        left = missed
        counts = f"{len(done)} of {len(to_move)} guest(s) brought home"
        tail = "; not brought home: " + "; ".join(f"{i.vm_name} ({(i.reason or i.status).rstrip('.')})" for i in left) if left else ""
    if cancelled:
        return ES.CANCELLED, f"Cancelled: {counts}{tail}."
    if to_move and not done:
        return ES.FAILED, f"Failed: {counts}{tail}."
    if left:
        return ES.INCOMPLETE, f"Incomplete: {counts}{tail}."
    return ES.SUCCEEDED, counts[0].upper() + counts[1:] + (f"; {host} is empty." if kind == "enter" else ".")


def estimate_s(*, memory_kib: int, action: str, bandwidth_bps: float, overhead_s: float, disk_bytes: int = 0) -> int:
    """Seconds one item takes: the fixed cost of a migration plus its memory over the link, and
    ``disk_bytes`` of local disks a storage-copying live migration sends over the same link first."""
    if action == IA.LIVE:
        return math.ceil(overhead_s + (memory_kib * 1024 + max(disk_bytes, 0)) / max(bandwidth_bps, 1.0))
    if action in (IA.OFFLINE, IA.START):
        return math.ceil(overhead_s)
    if action == IA.SHUTDOWN:
        return math.ceil(overhead_s + 20)  # a guest OS takes a while to power off
    return 0


def makespan_s(durations: Sequence[int], concurrency: int) -> int:
    """Wall time of running ``durations`` in order on ``concurrency`` lanes (the next starts when one frees)."""
    lanes = [0] * max(concurrency, 1)
    for d in durations:
        heapq.heapreplace(lanes, lanes[0] + d)
    return max(lanes) if durations else 0


def measured_link(samples: Iterable[tuple[int, int, int]]) -> tuple[float, float, int] | None:
    """(bandwidth B/s, overhead s, n) from past live migrations' (bytes, transfer ms, wall ms); None if none."""
    rows = [(b, t, w) for b, t, w in samples if b > 0 and t > 0 and w >= t]
    if not rows:
        return None
    rates = sorted(b / (t / 1000) for b, t, _ in rows)
    overheads = sorted((w - t) / 1000 for _, t, w in rows)
    mid = len(rows) // 2
    return rates[mid], overheads[mid], len(rows)
