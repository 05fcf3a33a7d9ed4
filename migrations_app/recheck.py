"""The runner's fast path: when the facts of a full gather are fresh, re-check only what can change.

Pure decisions, no I/O. A full gather (``gather.gather_pair`` or an evacuation plan's
``gather_fleet.gather_evacuation``) proves what takes time to prove and does not change
from one minute to the next: names resolve, ports open, the same disk files on both hosts,
the CPU fits. What can change in that minute is re-read right before migrating, in one
round of calls per host on connections the runner opens anyway (``hosts.adapters.migration``:
``guest_now`` on the source, ``host_now`` on the destination): the guest's state and any
job on it, a guest of the same name or UUID on the destination, the destination's free
memory and running vCPUs; whether either host is in maintenance comes from the inventory.
Slots are the database's (claimed before the job is enqueued). ``refreshed`` then gives
the facts the same preflight judges as after a full gather.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from hosts.adapters.migration import GuestNow, HostNow

from .facts import GuestSide, PairFacts

# Facts gathered at most this long ago are fresh.
FRESH_FOR_S = 60.0
# A timestamp this far in the future is a clock gone wrong, not fresh facts.
CLOCK_SKEW_S = 5.0


@dataclass(frozen=True)
class Freshness:
    fresh: bool
    reason: str  # in words, for the job log and the record's summary


def facts_freshness(
    *, gathered: datetime | None, now: datetime, both_answered: bool = True, max_age_s: float = FRESH_FOR_S,
    fresh_until: datetime | None = None,
) -> Freshness:
    """Are facts gathered at ``gathered`` fresh enough to skip the full gather at ``now``?

    ``both_answered`` is False when a host did not answer that gather: what it could not
    prove must be gathered again. ``fresh_until`` is set on facts gathered once for a whole
    run of moves (an evacuation or its return): they serve that run's items until then,
    even when older than ``max_age_s``.
    """
    if gathered is None:
        return Freshness(False, "no full check of this guest and pair on record")
    age = (now - gathered).total_seconds()
    if age < -CLOCK_SKEW_S:
        return Freshness(False, f"the last full check is dated {-age:.0f} s in the future")
    if not both_answered:
        return Freshness(False, "a host did not answer the last full check")
    if age <= max_age_s:
        return Freshness(True, f"the last full check is {max(age, 0):.0f} s old")
    if fresh_until is not None and now <= fresh_until:
        return Freshness(True, f"the full check of this run is {age:.0f} s old (kept for the run until "
                               f"{fresh_until:%H:%M:%S})")
    return Freshness(False, f"the last full check is {age:.0f} s old (more than {max_age_s:.0f} s)")


def refreshed(
    pair: PairFacts, guest: GuestSide, *, source_guest: GuestNow, destination: HostNow,
    source_in_maintenance: bool, destination_in_maintenance: bool,
) -> tuple[PairFacts, GuestSide]:
    """The fresh facts with what can change replaced by what the hosts say now.

    ValueError when the guest is no longer on the source (only a full gather says what then).
    """
    if not source_guest.exists:
        raise ValueError(f"{guest.name} is no longer on {pair.source.name}")
    guest_now = replace(guest, state=source_guest.state or "unknown", active_operation=source_guest.active_operation)
    pair_now = replace(
        pair,
        source=replace(pair.source, in_maintenance=source_in_maintenance),
        destination=replace(
            pair.destination, memory_free_kib=destination.memory_free_kib,
            running_vcpus=destination.running_vcpus, in_maintenance=destination_in_maintenance,
        ),
        destination_has_domain_name=guest.name in destination.domain_names,
        destination_has_domain_uuid=guest.uuid.strip().lower() in destination.domain_uuids,
    )
    return pair_now, guest_now


# Facts gathered once for a run of moves serve its items for the run's expected length, with room
# for the unexpected; past that, an item gathers in full again.
RUN_FRESH_MIN_S = 600
RUN_FRESH_MAX_S = 3600
RUN_FRESH_DEFAULT_S = 1800


def run_fresh_for_s(estimated_s: float | None) -> int:
    """How long facts gathered at the start of a run stay fresh for its items: twice its estimate + 5 min, bounded."""
    if estimated_s is None or estimated_s <= 0:
        return RUN_FRESH_DEFAULT_S
    return int(min(RUN_FRESH_MAX_S, max(RUN_FRESH_MIN_S, 2 * estimated_s + 300)))
