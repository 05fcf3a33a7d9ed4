"""migrations_app.placement and each host's guest budget (hosts.HostBudget): evacuation placement and
the order home never put a guest on a host past its memory or vCPU budget, and say which budget and
how to raise it — pure tables."""

from __future__ import annotations

import pytest

from migrations_app.placement import (
    OUTCOME_BLOCKED,
    OUTCOME_MOVE,
    GuestNeeds,
    HostCapacity,
    ReturnMove,
    budget_remedy,
    place,
    return_order,
)

GIB = 1024 * 1024  # KiB
SOURCE = "labh1"


def guest(name: str, gib: float, **kw) -> GuestNeeds:
    return GuestNeeds(uuid=f"uuid-{name}", name=name, memory_kib=int(gib * GIB), vcpus=kw.pop("vcpus", 1),
                      arch="x86_64", domain_type="kvm", state=kw.pop("state", "running"), **kw)


def host(name: str, free_gib: float = 64, *, budget_gib: float | None = None, committed_gib: float = 0,
         vcpus: int | None = None, vcpus_used: int = 0) -> HostCapacity:
    return HostCapacity(
        name=name, free_memory_kib=int(free_gib * GIB), cpus=8, arches=frozenset({"x86_64"}),
        budget_memory_kib=None if budget_gib is None else int(budget_gib * GIB),
        committed_memory_kib=int(committed_gib * GIB),
        budget_vcpus=vcpus, free_vcpus=None if vcpus is None else vcpus - vcpus_used,
    )


def outcome(plan, name: str) -> str:
    p = plan.by_uuid(f"uuid-{name}")
    if p.outcome == OUTCOME_MOVE:
        return p.destination
    if p.outcome == OUTCOME_BLOCKED:
        return f"blocked:{p.blocker.check}"
    return p.outcome


CASES = [
    # (id, guests, hosts, keyword arguments of place, expected outcome per guest)
    ("no-budget-no-bound", [guest("a", 8)], [host("labh2")], {}, {"a": "labh2"}),
    ("within-budget", [guest("a", 2)], [host("labh2", budget_gib=4, committed_gib=2)], {}, {"a": "labh2"}),
    # the host has the memory free, but its budget for guests is spent by what runs there
    ("budget-spent", [guest("a", 2)], [host("labh2", budget_gib=4, committed_gib=3)], {}, {"a": "blocked:budget"}),
    # spread would choose labh2 (most free); its budget sends the guest to labh3
    ("budget-moves-it-elsewhere", [guest("a", 2)],
     [host("labh2", 60, budget_gib=1), host("labh3", 10)], {}, {"a": "labh3"}),
    # what this plan sends counts against the budget: the second guest does not fit it
    ("plan-fills-the-budget", [guest("a", 2), guest("b", 2)], [host("labh2", budget_gib=3)], {},
     {"a": "labh2", "b": "blocked:budget"}),
    # a shut-off guest takes no memory and no vCPU there
    ("shutoff-not-counted", [guest("a", 2, state="shutoff")], [host("labh2", budget_gib=1)], {}, {"a": "labh2"}),
    ("vcpu-budget-spent", [guest("a", 1, vcpus=4)], [host("labh2", vcpus=8, vcpus_used=6)], {}, {"a": "blocked:budget"}),
    ("vcpu-budget-fits", [guest("a", 1, vcpus=2)], [host("labh2", vcpus=8, vcpus_used=6)], {}, {"a": "labh2"}),
    # one host short of free memory, the other of budget: still a budget blocker (raising it helps)
    ("memory-and-budget", [guest("a", 4)], [host("labh2", 2), host("labh3", 64, budget_gib=1)], {},
     {"a": "blocked:budget"}),
    # only free memory missing: the free-memory blocker as before
    ("memory-only", [guest("a", 4)], [host("labh2", 2)], {}, {"a": "blocked:no-room"}),
    # the admin's choice is checked against the budget too
    ("override-over-budget", [guest("a", 2)], [host("labh2", budget_gib=1), host("labh3")],
     {"overrides": {"uuid-a": "labh2"}}, {"a": "blocked:override"}),
    ("pin-to-over-budget", [guest("a", 2, pin_to="labh2")], [host("labh2", budget_gib=1), host("labh3")], {},
     {"a": "blocked:pin-to"}),
    # already over budget (an admin lowered it): nothing more goes there
    ("over-budget-already", [guest("a", 0.5)], [host("labh2", budget_gib=1, committed_gib=2)], {},
     {"a": "blocked:budget"}),
]


@pytest.mark.parametrize("case, guests, hosts, kw, expected", CASES, ids=[c[0] for c in CASES])
def test_place_keeps_every_host_within_its_budget(case, guests, hosts, kw, expected):
    plan = place(guests, [host(SOURCE), *hosts], source=SOURCE, **kw)
    assert {g.name: outcome(plan, g.name) for g in guests} == expected


def test_a_budget_blocker_names_the_budget_and_how_to_raise_it():
    plan = place([guest("web-3", 2)], [host(SOURCE), host("labh2", budget_gib=4, committed_gib=3)], source=SOURCE)
    blocker = plan.by_uuid("uuid-web-3").blocker
    assert "labh2's memory budget for guests (4.0 GiB) has 1.0 GiB left" in blocker.reason
    assert "python manage.py host_capacity labh2 --memory-mib" in blocker.remedy and "Edit capacity" in blocker.remedy
    assert blocker.budget_hosts == ("labh2",)
    vcpu = place([guest("big", 1, vcpus=4)], [host(SOURCE), host("labh2", vcpus=8, vcpus_used=6)],
                 source=SOURCE).by_uuid("uuid-big").blocker
    assert "labh2's vCPU budget (8) has 2 vCPU(s) left; the guest has 4" in vcpu.reason
    assert "--vcpu-ratio" in vcpu.remedy
    chosen = place([guest("a", 2)], [host(SOURCE), host("labh2", budget_gib=1)], source=SOURCE,
                   overrides={"uuid-a": "labh2"}).by_uuid("uuid-a").blocker
    assert "memory budget" in chosen.reason and "host_capacity labh2" in chosen.remedy


def test_budget_remedy_names_every_host():
    assert "of labh2, labh3:" in budget_remedy(["labh2", "labh3", "labh2"])


M = 1 * GIB


def mv(name, src, dst, gib=1.0, vcpus=1):
    return ReturnMove(uuid=f"u-{name}", name=name, memory_kib=int(gib * GIB), from_host=src, to_host=dst, vcpus=vcpus)


RETURN_CASES = [
    # (id, moves, free GiB, budget left GiB, vCPUs left, expected order, expected stuck with their limit)
    ("no-budget", [mv("a", "h2", "h1")], {"h1": 8}, {}, {}, ["a"], {}),
    ("budget-blocks-home", [mv("a", "h2", "h1", 2)], {"h1": 8}, {"h1": 1}, {}, [], {"a": "memory budget"}),
    ("budget-fits-one-of-two", [mv("a", "h2", "h1", 2), mv("b", "h3", "h1", 2)], {"h1": 8}, {"h1": 3}, {},
     ["a"], {"b": "memory budget"}),
    # a move out of h1 frees its budget: the order makes room for the move in
    ("moving-out-frees-budget", [mv("in", "h2", "h1", 2), mv("out", "h1", "h3", 2)], {"h1": 8, "h3": 8},
     {"h1": 0}, {}, ["out", "in"], {}),
    ("vcpu-budget", [mv("a", "h2", "h1", 1, vcpus=4)], {"h1": 8}, {}, {"h1": 2}, [], {"a": "vCPU budget"}),
    ("shut-off-takes-nothing", [mv("a", "h2", "h1", 0, vcpus=0)], {"h1": 0}, {"h1": 0}, {"h1": 0}, ["a"], {}),
]


@pytest.mark.parametrize("case, moves, free, budget, vcpus, order, stuck", RETURN_CASES, ids=[c[0] for c in RETURN_CASES])
def test_return_order_keeps_every_host_within_its_budget(case, moves, free, budget, vcpus, order, stuck):
    plan = return_order(moves, {h: int(g * GIB) for h, g in free.items()},
                        budget_left_kib={h: int(g * GIB) for h, g in budget.items()}, vcpus_left=vcpus)
    assert [m.name for m in plan.steps] == order
    assert {s.move.name for s in plan.stuck} == set(stuck)
    for s in plan.stuck:
        assert stuck[s.move.name] in s.reason, s.reason
        assert f"host_capacity {s.move.to_host}" in s.remedy, s.remedy
