"""Where each guest of a host in maintenance goes, and in what order they come home (pure).

The dry run and the evacuation call the same ``place`` over the same facts, so the plan shown
is the plan executed. No I/O here: the caller gathers facts once per host (``HostCapacity``)
and once per CPU model × host (``cpu_ok``), not once per guest × host.

Rules where the issue is silent, decided here:
- Memory: a guest fits a host when the host's free memory (minus what this plan already sent
  there) is at least its memory plus ``headroom`` (by default the live preflight's margin, so a
  placement never fails the preflight's capacity check); placing it takes its memory.
- Order: guests are placed largest memory first (then name, then UUID), the hardest to fit
  while there is most room. Admin overrides are placed before everything else, so automatic
  placements never take the room the admin chose.
- CPU: ``cpu_ok[(cpu_model, host)]`` False blocks that host; a missing entry means not checked:
  the host stays a candidate with a warning (the preflight re-checks before the move).
- Anti-affinity: guests sharing a group never share a host, counting the guests already on a
  host and those this plan sends there; this holds for shut-off guests too (they start later).
- Shut-off guests move their definition only when they have no local disk (copy-storage does
  not apply to them); they take no memory but count against the host's incoming slots. A
  shut-off guest that stays (local disk, or pinned) is not a blocker: it has a note.
- ``pin_to`` restricts the guest to one host; an admin's override replaces it (the admin chose).
  ``pinned`` (must not leave its host) blocks a running guest even against an override.
- Paused guests move live like running ones and stay paused on arrival (a warning says so).
- Budget: a host's own limits for the portal's placement (``hosts.models.HostBudget``: memory
  for guests, vCPUs = CPUs × overcommit ratio) bound a running guest as well as its free memory:
  the guests running there plus those this plan sends must stay within both. No headroom on the
  budget (it counts configured memory, not what the host has free). A blocker from a budget says
  which, and how to raise it (``budget_remedy``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .preflight import MEMORY_HEADROOM

STRATEGIES = ("spread", "pack")

OUTCOME_MOVE = "move"  # placed: migrates (or its definition moves) to ``destination``
OUTCOME_STAYS = "stays"  # not a blocker: a shut-off guest with local disks or a pin stays, with a note
OUTCOME_BLOCKED = "blocked"  # cannot move: ``blocker`` says why and what the admin can do
OUTCOME_EXCLUDED = "excluded"  # the admin left it out of the plan


@dataclass(frozen=True)
class GuestNeeds:
    """What a guest on the host in maintenance needs from a destination."""

    uuid: str
    name: str
    memory_kib: int
    vcpus: int
    arch: str
    domain_type: str  # "kvm" | "qemu"
    state: str  # "running" | "paused" | "shutoff"
    cpu_model: str | None = None
    local_disks: tuple[str, ...] = ()  # disks only the source host sees
    shared_disks: bool = False  # has disks on shared storage the destination must see
    pinned: bool = False  # must not leave its host (libvirt metadata, host devices)
    pin_reason: str = ""  # why, in words, when it is not the guest's own pin (e.g. a passed-through device)
    pin_to: str | None = None  # may only go to this host
    anti_affinity: frozenset[str] = frozenset()  # groups whose members never share a host


@dataclass(frozen=True)
class HostCapacity:
    """What a candidate host offers, gathered once per host."""

    name: str
    free_memory_kib: int
    cpus: int
    arches: frozenset[str]
    domain_types: frozenset[str] = frozenset({"kvm", "qemu"})
    in_maintenance: bool = False
    reachable: bool = True
    sees_shared_storage: bool = True
    max_incoming: int | None = None  # guests this plan may send here; None = no limit
    anti_affinity: frozenset[str] = frozenset()  # groups of the guests already running here
    free_vcpus: int | None = None  # vCPUs its budget still allows (CPUs × overcommit ratio − running); None = no limit
    budget_memory_kib: int | None = None  # its memory budget for guests; None = no budget
    committed_memory_kib: int = 0  # memory of the guests running there now (counted against the budget)
    budget_vcpus: int | None = None  # its vCPU budget in all (for the words); free_vcpus is what is left


@dataclass(frozen=True)
class Blocker:
    """Why a guest cannot move, and what the admin can do about it."""

    check: str
    reason: str
    remedy: str
    budget_hosts: tuple[str, ...] = ()  # hosts whose budget refused it: raising one would help


BUDGET_CHECKS = ("memory-budget", "vcpus")


def budget_remedy(hosts: Iterable[str]) -> str:
    """How to raise the budget of ``hosts`` (CLI and page), in words."""
    names = list(dict.fromkeys(hosts))
    first = names[0] if names else "HOST"
    which = ", ".join(names) if names else "the host"
    return (f"Raise the guest budget of {which}: python manage.py host_capacity {first} --memory-mib N "
            "--vcpu-ratio R, or Edit capacity in the host page's Guest capacity card (Admin).")


@dataclass(frozen=True)
class Placement:
    """The plan for one guest."""

    uuid: str
    name: str
    outcome: str
    destination: str | None = None
    blocker: Blocker | None = None
    warnings: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """One placement per guest, largest memory first (then name, then UUID)."""

    source: str
    strategy: str
    placements: tuple[Placement, ...]

    def by_uuid(self, uuid: str) -> Placement:
        return next(p for p in self.placements if p.uuid == uuid)

    @property
    def blocked(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if p.outcome == OUTCOME_BLOCKED)

    @property
    def moves(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if p.outcome == OUTCOME_MOVE)


def _gib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f} GiB"


def memory_needed_kib(guest: GuestNeeds, headroom: float = MEMORY_HEADROOM) -> int:
    """Free memory a destination must have for ``guest`` to arrive running: its memory plus headroom."""
    return math.ceil(guest.memory_kib * (1 + headroom))


def _order_key(guest: GuestNeeds) -> tuple:
    return (-guest.memory_kib, guest.name, guest.uuid)


# (guest uuid, host) -> (check, reason, fix): a preflight that failed for that pair.
_NO_VETOES: Mapping[tuple[str, str], tuple[str, str, str]] = {}


@dataclass
class _HostLoad:
    """A candidate host as this plan fills it."""

    host: HostCapacity
    free_kib: int
    incoming: int = 0
    groups: set[str] = field(default_factory=set)
    free_vcpus: int | None = None
    budget_left_kib: int | None = None  # memory the host's budget still allows (None: no budget)


def _host_refusal(
    guest: GuestNeeds, load: _HostLoad, *, cpu_ok: Mapping, headroom: float, vetoes: Mapping = _NO_VETOES,
) -> tuple[str, str] | None:
    """Why ``load``'s host cannot take ``guest`` now, as (check, reason), or None if it can."""
    host = load.host
    veto = vetoes.get((guest.uuid, host.name))
    if veto is not None:
        return veto[0], veto[1]
    if guest.arch not in host.arches:
        return "arch", f"{host.name} does not run {guest.arch} guests."
    if guest.domain_type not in host.domain_types:
        return "domain-type", f"{host.name} does not offer domain type {guest.domain_type}."
    if cpu_ok.get((guest.cpu_model, host.name)) is False:
        return "cpu", f"{host.name}'s CPU cannot run the guest's CPU model {guest.cpu_model or '(default)'}."
    if guest.shared_disks and not host.sees_shared_storage:
        return "storage", f"{host.name} does not see the shared storage the guest's disks are on."
    if host.max_incoming is not None and load.incoming >= host.max_incoming:
        return "slots", f"{host.name} takes no more than {host.max_incoming} guest(s) from this plan."
    clash = sorted(guest.anti_affinity & load.groups)
    if clash:
        return "anti-affinity", f"{host.name} already has a guest of anti-affinity group {', '.join(clash)}."
    if guest.state != "shutoff":
        need = memory_needed_kib(guest, headroom)
        if load.free_kib < need:
            return "memory", (
                f"{host.name} has {_gib(load.free_kib)} free; the guest needs {_gib(need)} "
                f"(missing {_gib(need - load.free_kib)})."
            )
        if load.budget_left_kib is not None and load.budget_left_kib < guest.memory_kib:
            return "memory-budget", (
                f"{host.name}'s memory budget for guests ({_gib(host.budget_memory_kib or 0)}) has "
                f"{_gib(max(load.budget_left_kib, 0))} left; the guest has {_gib(guest.memory_kib)}."
            )
        if load.free_vcpus is not None and load.free_vcpus < guest.vcpus:
            total = f" ({host.budget_vcpus})" if host.budget_vcpus is not None else ""
            return "vcpus", (
                f"{host.name}'s vCPU budget{total} has {max(load.free_vcpus, 0)} vCPU(s) left; "
                f"the guest has {guest.vcpus}."
            )
    return None


def _warnings(guest: GuestNeeds, host: str, *, cpu_ok: Mapping, copy_storage: bool) -> tuple[str, ...]:
    found = []
    if (guest.cpu_model, host) not in cpu_ok:
        found.append(f"CPU compatibility with {host} was not checked; the preflight checks it before the move.")
    if guest.local_disks and copy_storage:
        found.append(f"Copies {len(guest.local_disks)} local disk(s) to {host} during the migration.")
    if guest.state == "paused":
        found.append(f"The guest is paused and stays paused on {host}.")
    if guest.state == "shutoff":
        found.append(f"Shut off: only its definition moves to {host}; it is not started.")
    return tuple(found)


def _guest_blocker(guest: GuestNeeds, *, copy_storage: bool) -> Blocker | None:
    """A reason the guest cannot leave whatever the destination."""
    if guest.pinned:
        if guest.pin_reason:
            return Blocker("pinned", f"{guest.name} cannot leave this host: {guest.pin_reason}",
                           "Choose 'shut down and start again after maintenance'.")
        return Blocker(
            "pinned", f"{guest.name} is pinned to this host.",
            "Remove the pin, or choose 'shut down and start again after maintenance'.",
        )
    if guest.local_disks and guest.state != "shutoff" and not copy_storage:
        return Blocker(
            "local-disk",
            f"{guest.name} has disks only this host sees: {', '.join(guest.local_disks)}.",
            "Put its disks on shared storage (Cold migrate → Storage) or allow copy-storage.",
        )
    return None


def _choose(candidates: list[tuple[_HostLoad, int]], strategy: str) -> _HostLoad:
    """Spread: most free memory after placement; pack: least. Ties go to the first host by name."""
    if strategy == "spread":
        return min(candidates, key=lambda c: (-c[1], c[0].host.name))[0]
    return min(candidates, key=lambda c: (c[1], c[0].host.name))[0]


def _no_destination(
    guest: GuestNeeds, refusals: list[tuple[_HostLoad, tuple[str, str]]], *, headroom: float,
    vetoes: Mapping = _NO_VETOES,
) -> Blocker:
    """The blocker of a guest no host can take: the memory it lacks when memory is all that is missing."""
    if not refusals:
        return Blocker(
            "no-destination", "No other host is reachable and out of maintenance.",
            "Add a host, bring one back, or take one out of maintenance.",
        )
    if all(check == "memory" for _, (check, _) in refusals):
        # The best host is the one with most free memory (the first by name on a tie).
        best = min((load for load, _ in refusals), key=lambda load: (-load.free_kib, load.host.name))
        missing = memory_needed_kib(guest, headroom) - best.free_kib
        return Blocker(
            "no-room",
            f"No host has room for {guest.name}: the best, {best.host.name}, has {_gib(best.free_kib)} free "
            f"and lacks {_gib(missing)}.",
            f"Free {_gib(missing)} on {best.host.name} (stop or move guests there), exclude another guest, "
            "or choose 'shut down and start again after maintenance'.",
        )
    budget_hosts = tuple(load.host.name for load, (check, _) in refusals if check in BUDGET_CHECKS)
    if budget_hosts and all(check in ("memory", *BUDGET_CHECKS) for _, (check, _) in refusals):
        return Blocker(
            "budget", " ".join(reason for _, (_, reason) in refusals),
            f"{budget_remedy(budget_hosts)} Or free room there, exclude another guest, or choose "
            "'shut down and start again after maintenance'.",
            budget_hosts=budget_hosts,
        )
    # Every host refused by its preflight: the preflight's own fixes say what to do.
    found = [vetoes.get((guest.uuid, load.host.name)) for load, _ in refusals]
    if all(found):
        fixes = list(dict.fromkeys(v[2] for v in found if v[2]))
        if fixes:
            return Blocker("no-destination", " ".join(reason for _, (_, reason) in refusals), " ".join(fixes))
    return Blocker(
        "no-destination",
        " ".join(reason for _, (_, reason) in refusals),
        "Fix one of these hosts, override the destination, or choose 'shut down and start again after "
        "maintenance'.",
    )


def place(
    guests: Iterable[GuestNeeds],
    hosts: Iterable[HostCapacity],
    *,
    source: str,
    strategy: str = "spread",
    headroom: float = MEMORY_HEADROOM,
    cpu_ok: Mapping[tuple[str | None, str], bool] | None = None,
    overrides: Mapping[str, str] | None = None,
    excluded: Iterable[str] = (),
    copy_storage: bool = False,
    vetoes: Mapping[tuple[str, str], tuple[str, str, str]] | None = None,
) -> Plan:
    """Place every guest of ``source`` on another host, or say why it cannot move.

    ``hosts`` are all the hosts of the inventory: the source, hosts in maintenance and
    unreachable hosts are never destinations. ``overrides`` maps a guest UUID to the host the
    admin chose (honoured when that host passes every check, else a blocker says why);
    ``excluded`` guest UUIDs are listed as excluded. ``vetoes`` maps (guest UUID, host) to the
    (check, reason, fix) of a preflight that failed for that pair: that host is not a candidate
    for that guest. Same facts, in any order → same plan.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown placement strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    cpu_ok = cpu_ok or {}
    vetoes = vetoes or _NO_VETOES
    overrides = overrides or {}
    excluded = frozenset(excluded)
    by_name = {h.name: h for h in hosts}
    loads = {
        h.name: _HostLoad(h, h.free_memory_kib, groups=set(h.anti_affinity), free_vcpus=h.free_vcpus,
                          budget_left_kib=(None if h.budget_memory_kib is None
                                           else h.budget_memory_kib - h.committed_memory_kib))
        for h in sorted(by_name.values(), key=lambda h: h.name)
        if h.name != source and not h.in_maintenance and h.reachable
    }
    ordered = sorted(guests, key=_order_key)
    # Overrides first: the admin's choices are not crowded out by automatic placements.
    work = sorted(ordered, key=lambda g: g.uuid not in overrides)
    decided: dict[str, Placement] = {}
    for guest in work:
        decided[guest.uuid] = _place_one(
            guest, loads, by_name, source=source, strategy=strategy, headroom=headroom, cpu_ok=cpu_ok,
            override=overrides.get(guest.uuid), excluded=guest.uuid in excluded, copy_storage=copy_storage,
            vetoes=vetoes,
        )
    return Plan(source=source, strategy=strategy, placements=tuple(decided[g.uuid] for g in ordered))


def _place_one(
    guest: GuestNeeds, loads: dict[str, _HostLoad], by_name: Mapping[str, HostCapacity], *, source: str,
    strategy: str, headroom: float, cpu_ok: Mapping, override: str | None, excluded: bool, copy_storage: bool,
    vetoes: Mapping = _NO_VETOES,
) -> Placement:
    if excluded:
        return Placement(guest.uuid, guest.name, OUTCOME_EXCLUDED, note="Excluded by the admin; stays on the host.")
    if guest.state == "shutoff" and guest.pinned:
        return Placement(guest.uuid, guest.name, OUTCOME_STAYS,
                         note="Shut off and pinned to this host; it stays defined here.")
    blocker = _guest_blocker(guest, copy_storage=copy_storage)
    if blocker:
        return Placement(guest.uuid, guest.name, OUTCOME_BLOCKED, blocker=blocker)
    if guest.state == "shutoff" and guest.local_disks:
        return Placement(
            guest.uuid, guest.name, OUTCOME_STAYS,
            note=f"Shut off with disks only this host sees ({', '.join(guest.local_disks)}); it stays defined here.",
        )
    wanted = override or guest.pin_to
    if wanted is not None:
        blocker = _wanted_host_blocker(guest, wanted, loads, by_name, source=source, is_override=bool(override),
                                       cpu_ok=cpu_ok, headroom=headroom, vetoes=vetoes)
        if blocker:
            return Placement(guest.uuid, guest.name, OUTCOME_BLOCKED, blocker=blocker)
        target = loads[wanted]
    else:
        fitting, refusals = [], []
        for load in loads.values():
            refusal = _host_refusal(guest, load, cpu_ok=cpu_ok, headroom=headroom, vetoes=vetoes)
            if refusal:
                refusals.append((load, refusal))
            else:
                fitting.append((load, load.free_kib - _taken(guest)))
        if not fitting:
            return Placement(guest.uuid, guest.name, OUTCOME_BLOCKED,
                             blocker=_no_destination(guest, refusals, headroom=headroom, vetoes=vetoes))
        target = _choose(fitting, strategy)
    target.free_kib -= _taken(guest)
    if target.budget_left_kib is not None:
        target.budget_left_kib -= _taken(guest)
    if target.free_vcpus is not None and guest.state != "shutoff":
        target.free_vcpus -= guest.vcpus
    target.incoming += 1
    target.groups |= guest.anti_affinity
    return Placement(
        guest.uuid, guest.name, OUTCOME_MOVE, destination=target.host.name,
        warnings=_warnings(guest, target.host.name, cpu_ok=cpu_ok, copy_storage=copy_storage),
    )


def _wanted_host_blocker(
    guest: GuestNeeds, wanted: str, loads: Mapping[str, _HostLoad], by_name: Mapping[str, HostCapacity], *,
    source: str, is_override: bool, cpu_ok: Mapping, headroom: float, vetoes: Mapping = _NO_VETOES,
) -> Blocker | None:
    """Why the host the admin chose (or the guest is pinned to) cannot take it, or None if it can."""
    check = "override" if is_override else "pin-to"
    chosen = "the chosen host" if is_override else "the host it is pinned to"
    remedy = "Choose another destination." if is_override else "Change the guest's pin, or override the destination."
    if wanted not in loads:
        why = (
            "is the host going into maintenance" if wanted == source
            else "is not in the inventory" if wanted not in by_name
            else "is in maintenance" if by_name[wanted].in_maintenance
            else "is unreachable"
        )
        return Blocker(check, f"{wanted}, {chosen}, {why}.", remedy)
    refusal = _host_refusal(guest, loads[wanted], cpu_ok=cpu_ok, headroom=headroom, vetoes=vetoes)
    if refusal:
        veto = vetoes.get((guest.uuid, wanted))
        if refusal[0] in BUDGET_CHECKS:
            return Blocker(check, f"{chosen.capitalize()} cannot take {guest.name}: {refusal[1]}",
                           f"{budget_remedy([wanted])} Or: {remedy[0].lower()}{remedy[1:]}", budget_hosts=(wanted,))
        return Blocker(check, f"{chosen.capitalize()} cannot take {guest.name}: {refusal[1]}",
                       veto[2] if veto and veto[2] else remedy)
    return None


def _taken(guest: GuestNeeds) -> int:
    """Memory the guest takes on its destination: none while shut off."""
    return 0 if guest.state == "shutoff" else guest.memory_kib


# --- The way home ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnMove:
    """A guest going back from where the evacuation put it to its origin."""

    uuid: str
    name: str
    memory_kib: int
    from_host: str
    to_host: str
    vcpus: int = 0  # counted against the destination's vCPU budget (0: shut off)


@dataclass(frozen=True)
class StuckMove:
    """A move home that no order makes possible, with why and what to do."""

    move: ReturnMove
    reason: str
    remedy: str


@dataclass(frozen=True)
class ReturnPlan:
    """Moves in an order where no host is over capacity at any step; the rest cannot be made."""

    steps: tuple[ReturnMove, ...]
    stuck: tuple[StuckMove, ...]


# Beyond this many explored states the search keeps the longest order found (a return of a
# few dozen guests finds its order on the first path in practice).
_SEARCH_LIMIT = 20_000


def return_order(
    moves: Iterable[ReturnMove], free_memory_kib: Mapping[str, int], *, headroom: float = MEMORY_HEADROOM,
    budget_left_kib: Mapping[str, int] | None = None, vcpus_left: Mapping[str, int] | None = None,
) -> ReturnPlan:
    """Order ``moves`` so every destination has the guest's memory plus headroom free when it arrives.

    ``budget_left_kib`` / ``vcpus_left``: what each host's budget still allows (memory for guests,
    vCPUs; a host missing from the map has no budget); a move must keep its destination within
    both, as well as within its free memory.
    A move frees its memory on the host it leaves, so moving out before moving in can make room.
    Moves tried first at each step: those leaving a host another pending move goes to, then the
    largest, then by name. When no order makes every move, the longest order found is returned
    and the rest are stuck with the memory they lack. Deterministic.
    """
    pending = tuple(sorted(moves, key=lambda m: (-m.memory_kib, m.name, m.uuid)))
    # One ledger: (free memory, budget memory left, vCPUs left) per host; None = no budget.
    budget_left_kib, vcpus_left = budget_left_kib or {}, vcpus_left or {}
    hosts = set(free_memory_kib) | set(budget_left_kib) | set(vcpus_left) | {m.to_host for m in pending} | {
        m.from_host for m in pending}
    free0 = {h: (free_memory_kib.get(h, 0), budget_left_kib.get(h), vcpus_left.get(h)) for h in hosts}
    best: list[ReturnMove] = []
    seen: set[frozenset[str]] = set()

    def search(done: list[ReturnMove], free: dict[str, int]) -> bool:
        nonlocal best
        if len(done) > len(best):
            best = list(done)
        if len(done) == len(pending):
            return True
        key = frozenset(m.uuid for m in done)
        if key in seen or len(seen) >= _SEARCH_LIMIT:
            return False
        seen.add(key)
        left = [m for m in pending if m.uuid not in key]
        wanted = {m.to_host for m in left}
        for m in sorted(left, key=lambda m: m.from_host not in wanted):  # stable: keeps size order
            if _return_refusal(m, free[m.to_host], headroom) is not None:
                continue
            if search(done + [m], _after(free, m)):
                return True
        return False

    search([], free0)
    free = dict(free0)
    for m in best:
        free = _after(free, m)
    done = {m.uuid for m in best}
    stuck = []
    for m in pending:
        if m.uuid in done:
            continue
        refusal = _return_refusal(m, free[m.to_host], headroom) or "memory"
        need = math.ceil(m.memory_kib * (1 + headroom))
        have, budget, vcpus = free[m.to_host]
        after = f"{m.to_host} would have"
        if refusal == "memory-budget":
            reason = (f"{after} {_gib(max(budget, 0))} left of its memory budget for guests after every move that "
                      f"can be made; {m.name} has {_gib(m.memory_kib)}.")
        elif refusal == "vcpus":
            reason = (f"{after} {max(vcpus, 0)} vCPU(s) left of its vCPU budget after every move that can be made; "
                      f"{m.name} has {m.vcpus}.")
        else:
            reason = (f"{after} {_gib(have)} free after every move that can be made; {m.name} needs "
                      f"{_gib(need)} (missing {_gib(max(need - have, 0))}).")
        remedy = f"Free memory on {m.to_host}, or leave {m.name} on {m.from_host} (exit without returning it)."
        if refusal in BUDGET_CHECKS:
            remedy = f"{budget_remedy([m.to_host])} Or leave {m.name} on {m.from_host} (exit without returning it)."
        stuck.append(StuckMove(m, reason, remedy))
    return ReturnPlan(steps=tuple(best), stuck=tuple(stuck))


def _return_refusal(m: ReturnMove, room: tuple[int, int | None, int | None], headroom: float) -> str | None:
    """Why ``m``'s destination cannot take it with ``room`` (free, budget left, vCPUs left), or None."""
    free, budget, vcpus = room
    if free < math.ceil(m.memory_kib * (1 + headroom)):
        return "memory"
    if budget is not None and budget < m.memory_kib:
        return "memory-budget"
    if vcpus is not None and vcpus < m.vcpus:
        return "vcpus"
    return None


def _after(ledger: Mapping[str, tuple[int, int | None, int | None]], m: ReturnMove) -> dict:
    """The ledger once ``m`` is made: its destination takes its memory and vCPUs, its origin gets them back."""
    def shift(room, sign):
        free, budget, vcpus = room
        return (free + sign * m.memory_kib, None if budget is None else budget + sign * m.memory_kib,
                None if vcpus is None else vcpus + sign * m.vcpus)

    after = dict(ledger)
    after[m.to_host] = shift(after[m.to_host], -1)
    after[m.from_host] = shift(after[m.from_host], +1)
    return after
