"""The capacity check of hosts in maintenance at the same time (pure table)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from calendar_app import conflicts
from migrations_app import placement

GIB = 1024 * 1024


def guest(name, gib, state="running"):
    return placement.GuestNeeds(uuid=f"u-{name}", name=name, memory_kib=gib * GIB, vcpus=1, arch="x86_64",
                                domain_type="kvm", state=state)


def host(name, free_gib):
    return placement.HostCapacity(name=name, free_memory_kib=free_gib * GIB, cpus=8, arches=frozenset({"x86_64"}))


GUESTS = {"h1": [guest("a", 4), guest("b", 4)], "h2": [guest("c", 4), guest("off", 8, state="shutoff")],
          "h3": [guest("d", 2)]}

# (case, down, free GiB per host, ok, placed, short guests)
CASES = [
    ("one host: the others hold it", {"h1"}, {"h1": 1, "h2": 6, "h3": 6, "h4": 1}, True, 2, []),
    ("two hosts: the room the first takes is gone for the second", {"h1", "h2"},
     {"h1": 0, "h2": 0, "h3": 6, "h4": 5}, False, 2, ["c"]),
    ("two hosts with room for all", {"h1", "h2"}, {"h1": 0, "h2": 0, "h3": 10, "h4": 10}, True, 3, []),
    ("shut-off guests need no memory", {"h2"}, {"h1": 5, "h2": 0, "h3": 0, "h4": 0}, True, 1, []),
    ("every host down: nowhere to go", {"h1", "h2", "h3", "h4"}, {"h1": 9, "h2": 9, "h3": 9, "h4": 9}, False, 0,
     ["a", "b", "c", "d"]),
]


@pytest.mark.parametrize("case,down,free,ok,placed,short", CASES, ids=[c[0] for c in CASES])
def test_capacity_check(case, down, free, ok, placed, short):
    verdict = conflicts.capacity_check(down=down, guests=GUESTS, hosts=[host(n, g) for n, g in free.items()])
    assert verdict.ok is ok
    assert verdict.placed == placed
    assert sorted(s.guest for s in verdict.shortages) == short
    if not ok:
        assert "find no room" in verdict.summary() and "GiB short" in verdict.summary()


def test_hosts_down_together_follow_the_overlaps():
    t = datetime(2027, 3, 6, tzinfo=UTC)
    h = timedelta(hours=1)
    new = conflicts.Busy(t, t + 2 * h, frozenset({"h1"}))
    others = [conflicts.Busy(t + h, t + 3 * h, frozenset({"h2"})),  # overlaps
              conflicts.Busy(t + 2 * h, t + 4 * h, frozenset({"h3"})),  # starts as the new one ends: no overlap
              conflicts.Busy(t - h, t + h + h / 2, frozenset({"h4"}))]  # overlaps, and overlaps h2's too
    sets = conflicts.hosts_down_together(new, others)
    assert frozenset({"h1", "h2", "h4"}) in sets
    assert all("h3" not in s for s in sets)


@pytest.mark.parametrize("budget_gib, short", [
    (None, []),  # no budget: 20 GiB free holds both hosts' guests
    (10, ["c"]),  # the budget the first host's guests take is gone for the second's
    (4, ["b", "c"]),
])
def test_capacity_check_carries_each_hosts_budget_across_the_hosts_down(budget_gib, short):
    budgeted = replace(host("h3", 20), budget_memory_kib=None if budget_gib is None else budget_gib * GIB)
    verdict = conflicts.capacity_check(down={"h1", "h2"}, guests=GUESTS, hosts=[host("h1", 0), host("h2", 0), budgeted])
    assert sorted(s.guest for s in verdict.shortages) == short
    assert all("memory budget" in s.reason for s in verdict.shortages)
