"""migrations_app.placement: where each guest of a host in maintenance goes, and the order home —
pure decisions, tested with plain tables of cases."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from migrations_app import placement
from migrations_app.placement import (
    OUTCOME_BLOCKED,
    OUTCOME_EXCLUDED,
    OUTCOME_MOVE,
    OUTCOME_STAYS,
    GuestNeeds,
    HostCapacity,
    ReturnMove,
    place,
    return_order,
)

GIB = 1024 * 1024  # in KiB
SOURCE = "labh1"


def guest(name: str, gib: float, **kw) -> GuestNeeds:
    kw.setdefault("state", "running")
    return GuestNeeds(
        uuid=f"uuid-{name}", name=name, memory_kib=int(gib * GIB), vcpus=kw.pop("vcpus", 1),
        arch=kw.pop("arch", "x86_64"), domain_type=kw.pop("domain_type", "kvm"), **kw,
    )


def host(name: str, free_gib: float, **kw) -> HostCapacity:
    return HostCapacity(
        name=name, free_memory_kib=int(free_gib * GIB), cpus=kw.pop("cpus", 8),
        arches=kw.pop("arches", frozenset({"x86_64"})), **kw,
    )


def outcome(plan, name: str) -> str:
    """A placement in one word: the destination, 'blocked:<check>', 'stays' or 'excluded'."""
    p = plan.by_uuid(f"uuid-{name}")
    if p.outcome == OUTCOME_MOVE:
        return p.destination
    if p.outcome == OUTCOME_BLOCKED:
        return f"blocked:{p.blocker.check}"
    return p.outcome


THREE = [host("labh1", 64), host("labh2", 16), host("labh3", 12)]

CASES = [
    # (id, guests, hosts, keyword arguments of place, expected outcome per guest name)
    ("spread-goes-to-most-free", [guest("a", 4)], THREE, {}, {"a": "labh2"}),
    ("pack-goes-to-least-free-that-fits", [guest("a", 4)], THREE, {"strategy": "pack"}, {"a": "labh3"}),
    ("spread-alternates-as-memory-is-taken",
     [guest("a", 6), guest("b", 4), guest("c", 2)], THREE, {},
     {"a": "labh2", "b": "labh3", "c": "labh2"}),  # free after: a 10 vs 6, b 6 vs 8, c 8 vs 6
    ("pack-fills-one-host-first",
     [guest("a", 4), guest("b", 4)], [host("labh2", 16), host("labh3", 9)], {"strategy": "pack"},
     {"a": "labh3", "b": "labh3"}),  # labh3 keeps 5 GiB after a, enough for b's 4.4
    ("spread-tie-goes-to-first-name", [guest("a", 2)], [host("labh3", 8), host("labh2", 8)], {}, {"a": "labh2"}),
    ("pack-tie-goes-to-first-name", [guest("a", 2)], [host("labh3", 8), host("labh2", 8)],
     {"strategy": "pack"}, {"a": "labh2"}),
    ("headroom-keeps-a-tight-host-out", [guest("a", 10)], [host("labh2", 10.5), host("labh3", 11.5)],
     {"strategy": "pack"}, {"a": "labh3"}),  # 10 GiB + 10% = 11 GiB
    ("no-headroom-lets-it-fit", [guest("a", 10)], [host("labh2", 10.5), host("labh3", 11.5)],
     {"strategy": "pack", "headroom": 0}, {"a": "labh2"}),
    ("never-the-source", [guest("a", 4)], [host("labh1", 64), host("labh2", 5)], {}, {"a": "labh2"}),
    ("never-in-maintenance", [guest("a", 4)], [host("labh2", 64, in_maintenance=True), host("labh3", 5)], {},
     {"a": "labh3"}),
    ("never-unreachable", [guest("a", 4)], [host("labh2", 64, reachable=False), host("labh3", 5)], {},
     {"a": "labh3"}),
    ("nothing-left-to-go-to", [guest("a", 1)],
     [host("labh1", 64), host("labh2", 64, in_maintenance=True), host("labh3", 64, reachable=False)], {},
     {"a": "blocked:no-destination"}),
    ("arch-mismatch", [guest("a", 2, arch="aarch64")],
     [host("labh2", 16), host("labh3", 8, arches=frozenset({"aarch64"}))], {}, {"a": "labh3"}),
    ("arch-nowhere", [guest("a", 2, arch="aarch64")], [host("labh2", 16)], {}, {"a": "blocked:no-destination"}),
    ("domain-type-mismatch", [guest("a", 2)],
     [host("labh2", 16, domain_types=frozenset({"qemu"})), host("labh3", 8)], {}, {"a": "labh3"}),
    ("cpu-incompatible", [guest("a", 2, cpu_model="Skylake")], [host("labh2", 16), host("labh3", 8)],
     {"cpu_ok": {("Skylake", "labh2"): False, ("Skylake", "labh3"): True}}, {"a": "labh3"}),
    ("cpu-unknown-is-a-candidate", [guest("a", 2, cpu_model="Skylake")], [host("labh2", 16), host("labh3", 8)],
     {"cpu_ok": {("Skylake", "labh3"): True}}, {"a": "labh2"}),
    ("local-disk-blocks", [guest("a", 2, local_disks=("/var/lib/libvirt/images/a.qcow2",))], THREE, {},
     {"a": "blocked:local-disk"}),
    ("local-disk-with-copy-storage", [guest("a", 2, local_disks=("/var/lib/libvirt/images/a.qcow2",))], THREE,
     {"copy_storage": True}, {"a": "labh2"}),
    ("shared-disk-needs-a-host-seeing-the-share", [guest("a", 2, shared_disks=True)],
     [host("labh2", 16, sees_shared_storage=False), host("labh3", 8)], {}, {"a": "labh3"}),
    ("shutoff-shared-moves-its-definition", [guest("a", 2, state="shutoff", shared_disks=True)], THREE, {},
     {"a": "labh2"}),
    ("shutoff-local-stays-not-blocked", [guest("a", 2, state="shutoff", local_disks=("/srv/a.qcow2",))], THREE,
     {"copy_storage": True}, {"a": "stays"}),
    ("shutoff-takes-no-memory", [guest("a", 32, state="shutoff"), guest("b", 4)],
     [host("labh2", 5)], {}, {"a": "labh2", "b": "labh2"}),
    ("paused-moves-like-running", [guest("a", 4, state="paused")], THREE, {}, {"a": "labh2"}),
    ("pinned-blocks", [guest("a", 2, pinned=True)], THREE, {}, {"a": "blocked:pinned"}),
    ("pinned-shutoff-stays-not-blocked", [guest("a", 2, pinned=True, state="shutoff")], THREE, {},
     {"a": "stays"}),
    ("pinned-blocks-even-with-override", [guest("a", 2, pinned=True)], THREE,
     {"overrides": {"uuid-a": "labh3"}}, {"a": "blocked:pinned"}),
    ("pin-to-a-host", [guest("a", 2, pin_to="labh3")], THREE, {}, {"a": "labh3"}),
    ("pin-to-a-full-host", [guest("a", 20, pin_to="labh3")], [host("labh2", 64), host("labh3", 12)], {},
     {"a": "blocked:pin-to"}),
    ("pin-to-the-source", [guest("a", 2, pin_to="labh1")], THREE, {}, {"a": "blocked:pin-to"}),
    ("anti-affinity-splits-siblings",
     [guest("a", 2, anti_affinity=frozenset({"db"})), guest("b", 1, anti_affinity=frozenset({"db"}))],
     [host("labh2", 64), host("labh3", 8)], {}, {"a": "labh2", "b": "labh3"}),
    ("anti-affinity-counts-guests-already-there", [guest("a", 2, anti_affinity=frozenset({"db"}))],
     [host("labh2", 64, anti_affinity=frozenset({"db"})), host("labh3", 8)], {}, {"a": "labh3"}),
    ("anti-affinity-with-nowhere-left",
     [guest("a", 2, anti_affinity=frozenset({"db"})), guest("b", 1, anti_affinity=frozenset({"db"}))],
     [host("labh2", 64)], {}, {"a": "labh2", "b": "blocked:no-destination"}),
    ("other-groups-may-share", [guest("a", 2, anti_affinity=frozenset({"db"})),
                                guest("b", 1, anti_affinity=frozenset({"web"}))],
     [host("labh2", 64), host("labh3", 8)], {}, {"a": "labh2", "b": "labh2"}),
    ("slots-send-the-rest-elsewhere", [guest("a", 3), guest("b", 2), guest("c", 1)],
     [host("labh2", 64, max_incoming=1), host("labh3", 8)], {}, {"a": "labh2", "b": "labh3", "c": "labh3"}),
    ("slots-full-everywhere", [guest("a", 2), guest("b", 1)], [host("labh2", 64, max_incoming=1)], {},
     {"a": "labh2", "b": "blocked:no-destination"}),
    ("memory-taken-by-this-plan-counts", [guest("a", 8), guest("b", 8)], [host("labh2", 16.5)], {},
     {"a": "labh2", "b": "blocked:no-room"}),
    ("override-feasible", [guest("a", 2)], THREE, {"overrides": {"uuid-a": "labh3"}}, {"a": "labh3"}),
    ("override-host-too-small", [guest("a", 14)], THREE, {"overrides": {"uuid-a": "labh3"}},
     {"a": "blocked:override"}),
    ("override-host-in-maintenance", [guest("a", 2)], [host("labh2", 16), host("labh3", 16, in_maintenance=True)],
     {"overrides": {"uuid-a": "labh3"}}, {"a": "blocked:override"}),
    ("override-wins-over-pin-to", [guest("a", 2, pin_to="labh2")], THREE, {"overrides": {"uuid-a": "labh3"}},
     {"a": "labh3"}),
    ("excluded-is-neither-placed-nor-blocked", [guest("a", 2, pinned=True), guest("b", 2)], THREE,
     {"excluded": {"uuid-a", "uuid-b"}}, {"a": "excluded", "b": "excluded"}),
    ("excluded-takes-no-room", [guest("a", 8), guest("b", 8)], [host("labh2", 9)], {"excluded": {"uuid-a"}},
     {"a": "excluded", "b": "labh2"}),
]


@pytest.mark.parametrize(("guests", "hosts", "kwargs", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_placement_table(guests, hosts, kwargs, expected):
    plan = place(guests, hosts, source=SOURCE, **kwargs)
    assert {g.name: outcome(plan, g.name) for g in guests} == expected


def test_override_is_placed_before_larger_guests():
    # Without the override going first, "big" (placed first by size) would take labh3 under
    # pack and leave no room there for the admin's choice.
    guests = [guest("big", 6), guest("small", 4)]
    hosts = [host("labh2", 16), host("labh3", 10)]
    assert outcome(place(guests, hosts, source=SOURCE, strategy="pack"), "big") == "labh3"
    plan = place(guests, hosts, source=SOURCE, strategy="pack", overrides={"uuid-small": "labh3"})
    assert (outcome(plan, "small"), outcome(plan, "big")) == ("labh3", "labh2")


def test_plan_order_is_largest_memory_first_then_name():
    guests = [guest("c", 2), guest("b", 8), guest("a", 2), guest("d", 4, pinned=True)]
    plan = place(guests, THREE, source=SOURCE, excluded={"uuid-c"})
    assert [p.name for p in plan.placements] == ["b", "d", "a", "c"]


def test_same_facts_in_any_order_give_the_same_plan():
    guests = [guest(f"g{i}", 1 + i % 4, anti_affinity=frozenset({"db"}) if i % 3 == 0 else frozenset())
              for i in range(12)]
    guests.append(guest("twin", 3))  # same memory as g2, g6, g10: the name decides
    hosts = [host("labh2", 20, max_incoming=6), host("labh3", 20), host("labh4", 12), host("labh1", 64)]
    first = place(guests, hosts, source=SOURCE)
    rng = random.Random(7)
    for _ in range(5):
        g, h = guests[:], hosts[:]
        rng.shuffle(g)
        rng.shuffle(h)
        assert place(g, h, source=SOURCE) == first
    assert first.moves and first.blocked  # the case exercises both outcomes


def test_no_room_says_how_much_is_missing_on_the_best_host():
    plan = place([guest("a", 10)], [host("labh2", 8), host("labh3", 9)], source=SOURCE)
    blocker = plan.by_uuid("uuid-a").blocker
    assert blocker.check == "no-room"
    assert "labh3" in blocker.reason and "2.0 GiB" in blocker.reason  # 11 GiB needed, 9 free
    assert "Free 2.0 GiB on labh3" in blocker.remedy


def test_mixed_refusals_name_each_host():
    guests = [guest("a", 4, cpu_model="Skylake")]
    hosts = [host("labh2", 2), host("labh3", 64)]
    plan = place(guests, hosts, source=SOURCE, cpu_ok={("Skylake", "labh3"): False})
    blocker = plan.by_uuid("uuid-a").blocker
    assert blocker.check == "no-destination"
    assert "labh2 has 2.0 GiB free" in blocker.reason and "labh3's CPU cannot run" in blocker.reason


@pytest.mark.parametrize(
    ("needs", "remedy_part"),
    [
        ({"local_disks": ("/srv/a.qcow2",)}, "allow copy-storage"),
        ({"pinned": True}, "shut down and start again after maintenance"),
    ],
    ids=["local-disk", "pinned"],
)
def test_blockers_say_what_the_admin_can_do(needs, remedy_part):
    plan = place([guest("a", 2, **needs)], THREE, source=SOURCE)
    assert remedy_part in plan.by_uuid("uuid-a").blocker.remedy


@pytest.mark.parametrize(
    ("needs", "kwargs", "warning_part"),
    [
        ({"state": "paused"}, {}, "stays paused"),
        ({"state": "shutoff"}, {}, "only its definition moves"),
        ({"local_disks": ("/srv/a.qcow2",)}, {"copy_storage": True}, "Copies 1 local disk"),
        ({"cpu_model": "Skylake"}, {}, "was not checked"),
    ],
    ids=["paused", "shutoff", "copy-storage", "cpu-unknown"],
)
def test_placed_guests_carry_their_warnings(needs, kwargs, warning_part):
    p = place([guest("a", 2, **needs)], THREE, source=SOURCE, **kwargs).by_uuid("uuid-a")
    assert p.outcome == OUTCOME_MOVE
    assert any(warning_part in w for w in p.warnings)


def test_a_checked_cpu_gives_no_warning():
    p = place([guest("a", 2, cpu_model="Skylake")], THREE, source=SOURCE,
              cpu_ok={("Skylake", "labh2"): True}).by_uuid("uuid-a")
    assert (p.destination, p.warnings) == ("labh2", ())


def test_shutoff_local_stays_with_a_note():
    p = place([guest("a", 2, state="shutoff", local_disks=("/srv/a.qcow2",))], THREE, source=SOURCE).by_uuid("uuid-a")
    assert (p.outcome, p.blocker, p.destination) == (OUTCOME_STAYS, None, None)
    assert "/srv/a.qcow2" in p.note


def test_excluded_has_neither_destination_nor_blocker():
    p = place([guest("a", 2)], THREE, source=SOURCE, excluded={"uuid-a"}).by_uuid("uuid-a")
    assert (p.outcome, p.destination, p.blocker) == (OUTCOME_EXCLUDED, None, None)


def test_placement_loads_without_django():
    # The dry run and the evacuation share it; it must stay a pure module.
    code = "import sys, migrations_app.placement; print(sorted(m for m in sys.modules if m.startswith('django')))"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy"):
        place([guest("a", 2)], THREE, source=SOURCE, strategy="random")


# --- The way home ---------------------------------------------------------------------------


def move(name: str, gib: float, src: str, dst: str) -> ReturnMove:
    return ReturnMove(uuid=f"uuid-{name}", name=name, memory_kib=int(gib * GIB), from_host=src, to_host=dst)


def free(**gib: float) -> dict[str, int]:
    return {name: int(g * GIB) for name, g in gib.items()}


RETURN_CASES = [
    # (id, moves, free memory now, expected order of names, expected stuck names)
    ("all-home-largest-first", [move("a", 2, "labh2", "labh1"), move("b", 4, "labh3", "labh1")],
     free(labh1=64, labh2=1, labh3=1), ["b", "a"], []),
    # labh1 can take a (4.4 needed) only after c leaves it, and c fits labh3 only after b leaves.
    ("chain-needs-moving-out-first",
     [move("a", 4, "labh2", "labh1"), move("b", 4, "labh3", "labh2"), move("c", 4, "labh1", "labh3")],
     free(labh1=1, labh2=1, labh3=5), ["c", "a", "b"], []),
    # Largest-first alone would send big to labh1 and leave no room for small, whose leaving
    # labh3 is what lets out (labh1 → labh3) go and free labh1 for big.
    ("order-that-greedy-by-size-misses",
     [move("big", 8, "labh2", "labh1"), move("small", 5, "labh3", "labh1"), move("out", 8, "labh1", "labh3")],
     free(labh1=14, labh2=0, labh3=4), ["small", "out", "big"], []),
    # Sending b first (largest that fits) leaves labh2 too full for c, which must go first so
    # that d can leave labh2: only a search that backs out of b finds the order.
    ("needs-backing-out-of-a-first-choice",
     [move("a", 1, "labh2", "labh1"), move("b", 6, "labh1", "labh2"), move("c", 4, "labh3", "labh2"),
      move("d", 7, "labh2", "labh3")],
     free(labh1=8, labh2=8, labh3=5), ["c", "d", "b", "a"], []),
    ("swap-with-no-room-is-impossible", [move("a", 8, "labh2", "labh1"), move("b", 8, "labh1", "labh2")],
     free(labh1=2, labh2=2), [], ["a", "b"]),
    ("one-too-many-is-left-out", [move("a", 8, "labh2", "labh1"), move("b", 8, "labh3", "labh1")],
     free(labh1=16, labh2=0, labh3=0), ["a"], ["b"]),
    ("nothing-to-do", [], free(labh1=1), [], []),
]


@pytest.mark.parametrize(("moves", "free_kib", "order", "stuck"),
                         [c[1:] for c in RETURN_CASES], ids=[c[0] for c in RETURN_CASES])
def test_return_order_table(moves, free_kib, order, stuck):
    plan = return_order(moves, free_kib)
    assert [m.name for m in plan.steps] == order
    assert [s.move.name for s in plan.stuck] == stuck
    # Replaying the order never needs a host over capacity (guest + headroom free on arrival).
    now = dict(free_kib)
    for m in plan.steps:
        assert now[m.to_host] >= placement.math.ceil(m.memory_kib * (1 + placement.MEMORY_HEADROOM))
        now[m.to_host] -= m.memory_kib
        now[m.from_host] += m.memory_kib


def test_an_impossible_return_says_what_is_missing():
    plan = return_order([move("a", 8, "labh2", "labh1"), move("b", 8, "labh3", "labh1")],
                        free(labh1=16, labh2=0, labh3=0))
    (stuck,) = plan.stuck
    assert "labh1 would have 8.0 GiB free" in stuck.reason and "missing 0.8 GiB" in stuck.reason
    assert "leave b on labh3" in stuck.remedy


def test_return_order_does_not_depend_on_input_order():
    moves = [move(f"g{i}", 1 + i % 3, f"labh{2 + i % 3}", "labh1") for i in range(9)]
    moves.append(move("back", 2, "labh1", "labh2"))
    free_kib = free(labh1=20, labh2=1, labh3=1, labh4=1)
    first = return_order(moves, free_kib)
    rng = random.Random(3)
    for _ in range(5):
        shuffled = moves[:]
        rng.shuffle(shuffled)
        assert return_order(shuffled, free_kib) == first
    assert len(first.steps) == len(moves) and not first.stuck
    # "back" needs labh2's room, which only the guests leaving labh2 make.
    names = [m.name for m in first.steps]
    assert names.index("back") > min(names.index(m.name) for m in moves if m.from_host == "labh2")


# --- vetoes: a preflight that failed for one (guest, host) pair -------------------------------


def test_veto_removes_that_host_for_that_guest_only():
    plan = place([guest("a", 1), guest("b", 1)], [host("labh2", 8), host("labh3", 4)], source=SOURCE,
                 vetoes={("uuid-a", "labh2"): ("ports", "labh2's ports are closed.", "Open them.")})
    assert outcome(plan, "a") == "labh3"
    assert outcome(plan, "b") == "labh2"


def test_guest_vetoed_everywhere_is_blocked_with_the_preflight_fixes():
    vetoes = {
        ("uuid-a", "labh2"): ("storage", "labh2 cannot open disk vda.", "Export the share to labh2."),
        ("uuid-a", "labh3"): ("storage", "labh3 cannot open disk vda.", "Export the share to labh2."),
    }
    p = place([guest("a", 1)], [host("labh2", 8), host("labh3", 8)], source=SOURCE, vetoes=vetoes).by_uuid("uuid-a")
    assert p.outcome == OUTCOME_BLOCKED
    assert p.blocker.reason == "labh2 cannot open disk vda. labh3 cannot open disk vda."
    assert p.blocker.remedy == "Export the share to labh2."


def test_override_onto_a_vetoed_host_is_blocked_with_its_fix():
    p = place([guest("a", 1)], [host("labh2", 8)], source=SOURCE, overrides={"uuid-a": "labh2"},
              vetoes={("uuid-a", "labh2"): ("cpu", "labh2 lacks avx512.", "Use a host-model CPU.")}).by_uuid("uuid-a")
    assert p.outcome == OUTCOME_BLOCKED
    assert "labh2 lacks avx512." in p.blocker.reason and p.blocker.remedy == "Use a host-model CPU."
