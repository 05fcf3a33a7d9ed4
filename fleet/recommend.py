"""Balance and consolidate recommendations, pure: numbers in, moves and their reasons out.

The caller gives each host's load (memory in KiB or CPU in cores, on one *basis*) and each
guest's share of it; the placement engine (``migrations_app.placement.place``) judges every move,
so a recommendation never breaks a rule a maintenance evacuation keeps (architecture, CPU,
shared storage, anti-affinity, pins, memory headroom). No I/O here.

Rules where the issue is silent, decided here:
- *Use* of a host is its load over its capacity, in per cent; the *spread* is the busiest host's
  use minus the least busy one's (hosts in maintenance or unreachable are not counted).
- Balance is greedy: each step takes the one move (a guest of the busiest host to any other
  host) that lowers the spread most, and stops when the spread is at or under the threshold,
  or when the best move gains less than the margin. Few moves in practice, not a proof of fewest.
- A guest moved by the balancer within the cool-down, a pinned guest, a guest with ``pin_to``,
  a guest tagged ``no-balance`` and a shut-off guest are never moved.
- Consolidate: a host whose every running guest fits elsewhere ("pack": the fullest host that
  fits) is a candidate; candidates are listed by fewest moves, then name. Each is computed
  alone: after applying one, the next recommendation is computed again.
- Paused during maintenance windows: the caller says so and nothing is recommended.
- Each move says why its destination, in numbers: the destination's use before and after, its
  memory left, the spread it leaves, and what the other hosts would have left or why they cannot.
- A dismissed recommendation stays hidden while it has the same id (the same moves) and no host's
  use has moved more than ``DISMISS_TOLERANCE_PTS`` since (``dismissal_holds``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from migrations_app import placement
from migrations_app.placement import GuestNeeds, HostCapacity

KIND_BALANCE = "balance"
KIND_CONSOLIDATE = "consolidate"
NO_BALANCE_TAG = "no-balance"
DISMISS_TOLERANCE_PTS = 5.0
GIB_KIB = 1024 * 1024


def memory_text(kib: float) -> str:
    return f"{kib / GIB_KIB:.1f} GiB"


@dataclass(frozen=True)
class Rules:
    threshold_pts: float = 20.0  # spread (points of use) above which the fleet is unbalanced
    hold_s: int = 1800  # the spread must have been over the threshold this long ("used" basis)
    margin_pts: float = 5.0  # a move must lower the spread at least this much
    cooldown: timedelta = timedelta(hours=24)
    max_moves: int = 20
    headroom: float = placement.MEMORY_HEADROOM


@dataclass(frozen=True)
class HostLoadNow:
    capacity: HostCapacity  # what the placement engine judges (free memory after what runs there)
    load: float  # on the chosen basis: memory KiB, or CPU cores busy
    limit: float  # capacity on the same basis: memory budget KiB, or CPU cores


@dataclass(frozen=True)
class GuestLoadNow:
    needs: GuestNeeds
    host: str
    load: float  # its share of the host's load on the basis
    tags: frozenset[str] = frozenset()
    balanced_at: datetime | None = None  # last moved by the balancer


@dataclass(frozen=True)
class Move:
    uuid: str
    vm: str
    source: str
    destination: str
    memory_kib: int
    why: str


@dataclass(frozen=True)
class Recommendation:
    id: str
    kind: str
    moves: tuple[Move, ...]
    summary: str
    reasons: tuple[str, ...]
    before: Mapping[str, float]  # host -> use % before
    after: Mapping[str, float]  # host -> use % after every move
    expected_s: int | None = None
    power_off: str | None = None  # consolidate: the host that can then be powered off

    def as_dict(self) -> dict:
        return {
            "id": self.id, "kind": self.kind, "summary": self.summary, "reasons": list(self.reasons),
            "moves": [{"vm": m.vm, "uuid": m.uuid, "from": m.source, "to": m.destination, "why": m.why}
                      for m in self.moves],
            "before": dict(self.before), "after": dict(self.after), "expected_s": self.expected_s,
            "power_off": self.power_off,
        }


@dataclass(frozen=True)
class Outcome:
    recommendations: tuple[Recommendation, ...]
    note: str  # why nothing (or what) is recommended, in one line


def _pct(load: float, limit: float) -> float:
    return round(100.0 * load / limit, 1) if limit > 0 else 0.0


def _uses(loads: Mapping[str, float], limits: Mapping[str, float]) -> dict[str, float]:
    return {h: _pct(loads[h], limits[h]) for h in sorted(loads)}


def _spread(uses: Mapping[str, float]) -> float:
    return round(max(uses.values()) - min(uses.values()), 1) if uses else 0.0


def _rid(kind: str, moves: Iterable[Move]) -> str:
    text = json.dumps([kind, sorted((m.uuid, m.source, m.destination) for m in moves)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def held_over_s(spreads: Sequence[tuple[datetime, float]], threshold: float, now: datetime) -> float:
    """How long the spread has been over ``threshold`` without a break, up to ``now`` (0 when it is not now)."""
    since = None
    for at, value in sorted(spreads):
        if value > threshold:
            since = since or at
        else:
            since = None
    return (now - since).total_seconds() if since else 0.0


def _movable(g: GuestLoadNow, now: datetime, rules: Rules) -> str | None:
    """Why the balancer leaves ``g`` where it is, or None."""
    n = g.needs
    if n.state == "shutoff":
        return "shut off"
    if n.pinned or n.pin_to:
        return "pinned"
    if NO_BALANCE_TAG in g.tags:
        return f"tagged {NO_BALANCE_TAG}"
    if g.balanced_at and now - g.balanced_at < rules.cooldown:
        return "moved by the balancer within the cool-down"
    return None


def _refusal(g: GuestLoadNow, dest: str, caps: Mapping[str, HostCapacity], rules: Rules) -> str | None:
    """Why ``dest`` cannot take ``g`` under the placement rules, or None when it can."""
    plan = placement.place([g.needs], caps.values(), source=g.host, overrides={g.needs.uuid: dest},
                           headroom=rules.headroom)
    found = plan.placements[0]
    if found.outcome == placement.OUTCOME_MOVE:
        return None
    if not found.blocker:
        return found.note or "the placement rules refuse it"
    return found.blocker.reason.removeprefix(f"The chosen host cannot take {g.needs.name}: ")


def dismissal_holds(dismissed_before: Mapping[str, float], now_before: Mapping[str, float], *,
                    tolerance: float = DISMISS_TOLERANCE_PTS) -> bool:
    """Whether a dismissal still hides its recommendation: the same hosts, none whose use moved over ``tolerance``."""
    if set(dismissed_before) != set(now_before):
        return False
    return all(abs(float(now_before[h]) - float(dismissed_before[h])) <= tolerance for h in now_before)


def _destination_why(g: GuestLoadNow, source: str, dest: str, *, uses: Mapping[str, float],
                     trial_uses: Mapping[str, float], spread: float, after: float, free_after_kib: int,
                     others: Sequence[tuple[str, float | None, str | None]], fmt: Callable[[float], str]) -> str:
    """One move's reason in numbers: source and destination before → after, memory left, spread, the others."""
    text = (f"{g.needs.name} ({fmt(g.load)}) is on {source}, the busiest host ({uses[source]:g} % → "
            f"{trial_uses[source]:g} %). {dest} goes from {uses[dest]:g} % to {trial_uses[dest]:g} % with "
            f"{memory_text(free_after_kib)} of its budget left, and the spread from {spread:g} to {after:g} points")
    alternatives = []
    for host, left, refused in others[:3]:
        alternatives.append(f"{host} cannot take it ({refused.rstrip('.')})" if refused
                            else f"{host} would leave {left:g}")
    return text + ("; " + "; ".join(alternatives) if alternatives else "") + "."


def _active(hosts: Iterable[HostLoadNow]) -> dict[str, HostLoadNow]:
    return {h.capacity.name: h for h in hosts if h.capacity.reachable and not h.capacity.in_maintenance}


def balance(
    hosts: Iterable[HostLoadNow], guests: Iterable[GuestLoadNow], *, now: datetime, rules: Rules = Rules(),
    basis_label: str = "memory", held_s: float | None = None, paused: str = "",
    seconds_per_move: float | None = None, fmt: Callable[[float], str] = memory_text,
) -> Outcome:
    """The moves that bring the spread of use under ``rules.threshold_pts``, each gaining at least the margin.

    ``held_s``: how long the measured spread has been over the threshold (None: the basis needs
    no history). ``paused``: a reason recommendations are paused (a maintenance window).
    ``fmt`` writes a guest's load on the basis in words (GiB, vCPUs, cores).
    """
    if paused:
        return Outcome((), f"Paused: {paused}")
    active = _active(hosts)
    if len(active) < 2:
        return Outcome((), "Fewer than two hosts can take guests: nothing to balance.")
    loads = {h: a.load for h, a in active.items()}
    limits = {h: a.limit for h, a in active.items()}
    caps = {h: a.capacity for h, a in active.items()}
    before = _uses(loads, limits)
    spread0 = _spread(before)
    if spread0 <= rules.threshold_pts:
        return Outcome((), f"The {basis_label} spread is {spread0:g} points, at or under the threshold of "
                           f"{rules.threshold_pts:g}: nothing to do.")
    if held_s is not None and held_s < rules.hold_s:
        return Outcome((), f"The {basis_label} spread is {spread0:g} points but has been over the threshold for "
                           f"{held_s / 60:.0f} min, less than the hold time of {rules.hold_s / 60:.0f} min.")
    where = {g.needs.uuid: g for g in guests if g.host in active}
    moves: list[Move] = []
    spread = spread0
    stop = ""
    while spread > rules.threshold_pts and len(moves) < rules.max_moves:
        uses = _uses(loads, limits)
        busiest = max(uses, key=lambda h: (uses[h], h))
        best = None
        for g in sorted(where.values(), key=lambda g: (-g.load, g.needs.name)):
            if g.host != busiest or _movable(g, now, rules) or g.needs.uuid in {m.uuid for m in moves}:
                continue
            tried = []  # (after spread or None, dest, refusal, uses after)
            for dest in sorted(active):
                if dest == busiest:
                    continue
                refused = _refusal(g, dest, caps, rules)
                if refused:
                    tried.append((None, dest, refused, None))
                    continue
                trial = dict(loads)
                trial[busiest] -= g.load
                trial[dest] += g.load
                trial_uses = _uses(trial, limits)
                tried.append((_spread(trial_uses), dest, None, trial_uses))
            fitting = sorted((t for t in tried if t[0] is not None), key=lambda t: (t[0], t[1]))
            if fitting and (best is None or fitting[0][0] < best[0]):
                best = (fitting[0][0], g, fitting[0][1], fitting[0][3], tried)
        if best is None:
            stop = f"No guest of {busiest} can move to a host with room under the rules."
            break
        after, g, dest, trial_uses, tried = best
        if spread - after < rules.margin_pts:
            stop = (f"The best next move ({g.needs.name} to {dest}) would lower the spread by "
                    f"{spread - after:.1f} points, under the margin of {rules.margin_pts:g}.")
            break
        others = sorted(((d, a, r) for a, d, r, _ in tried if d != dest), key=lambda o: (o[2] is not None, o[1] or 0, o[0]))
        free_after = caps[dest].free_memory_kib - placement._taken(g.needs)
        moves.append(Move(
            g.needs.uuid, g.needs.name, busiest, dest, g.needs.memory_kib,
            _destination_why(g, busiest, dest, uses=uses, trial_uses=trial_uses, spread=spread, after=after,
                             free_after_kib=free_after, others=others, fmt=fmt),
        ))
        loads[busiest] -= g.load
        loads[dest] += g.load
        caps[busiest] = replace(caps[busiest], free_memory_kib=caps[busiest].free_memory_kib + placement._taken(g.needs))
        caps[dest] = replace(caps[dest], free_memory_kib=caps[dest].free_memory_kib - placement._taken(g.needs))
        where[g.needs.uuid] = replace(g, host=dest)
        spread = after
    if not moves:
        return Outcome((), stop or "No move helps.")
    after_uses = _uses(loads, limits)
    hi, lo = max(before, key=lambda h: (before[h], h)), min(before, key=lambda h: (before[h], h))
    held = f" for {held_s / 60:.0f} min" if held_s is not None else ""
    summary = (f"{hi} at {before[hi]:g} % {basis_label}{held}, {lo} at {before[lo]:g} %: {len(moves)} move(s) bring "
               f"the spread from {spread0:g} to {spread:g} points.")
    reasons = tuple(m.why for m in moves) + ((stop,) if stop else ())
    return Outcome((Recommendation(
        id=_rid(KIND_BALANCE, moves), kind=KIND_BALANCE, moves=tuple(moves), summary=summary, reasons=reasons,
        before=before, after=after_uses, expected_s=_expected(len(moves), seconds_per_move),
    ),), summary)


def _expected(moves: int, seconds_per_move: float | None) -> int | None:
    return round(moves * seconds_per_move) if seconds_per_move is not None else None


def consolidate(
    hosts: Iterable[HostLoadNow], guests: Iterable[GuestLoadNow], *, rules: Rules = Rules(), paused: str = "",
    seconds_per_move: float | None = None, fmt: Callable[[float], str] = memory_text,
) -> Outcome:
    """Hosts whose running guests all fit elsewhere, fewest moves first; each then can be powered off."""
    if paused:
        return Outcome((), f"Paused: {paused}")
    active = _active(hosts)
    caps = [a.capacity for a in active.values()]
    limits = {h: a.limit for h, a in active.items()}
    found = []
    for name in sorted(active):
        mine = [g for g in guests if g.host == name and g.needs.state != "shutoff"]
        plan = placement.place([g.needs for g in mine], caps, source=name, strategy="pack", headroom=rules.headroom)
        if plan.blocked or len(active) < 2:
            continue
        loads = {h: a.load for h, a in active.items()}
        before = _uses(loads, limits)
        free = {h: a.capacity.free_memory_kib for h, a in active.items()}
        by_uuid = {g.needs.uuid: g for g in mine}
        moves = []
        for p in plan.moves:
            g = by_uuid[p.uuid]
            was = _pct(loads[p.destination], limits[p.destination])
            loads[name] -= g.load
            loads[p.destination] += g.load
            free[p.destination] -= placement._taken(g.needs)
            moves.append(Move(
                p.uuid, p.name, name, p.destination, g.needs.memory_kib,
                f"{p.name} ({fmt(g.load)}) fits on {p.destination}: {was:g} % → "
                f"{_pct(loads[p.destination], limits[p.destination]):g} % with {memory_text(free[p.destination])} of "
                f"its budget left (pack: the fullest host that fits).",
            ))
        moves = tuple(moves)
        after = _uses(loads, limits)
        summary = (f"{name} can be emptied with {len(moves)} move(s); then {name} can be powered off." if moves
                   else f"{name} runs no guest; it can be powered off.")
        found.append(Recommendation(
            id=_rid(KIND_CONSOLIDATE, moves) if moves else _rid(KIND_CONSOLIDATE + name, ()), kind=KIND_CONSOLIDATE,
            moves=moves, summary=summary, reasons=tuple(m.why for m in moves), before=before, after=after,
            expected_s=_expected(len(moves), seconds_per_move), power_off=name,
        ))
    found.sort(key=lambda r: (len(r.moves), r.power_off))
    note = f"{len(found)} host(s) could be emptied." if found else "No host can be emptied: its guests do not fit elsewhere."
    return Outcome(tuple(found), note)
