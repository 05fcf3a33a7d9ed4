"""The recovery plan (pure): who can be brought back, where, and why not, as tables."""

from __future__ import annotations

import pytest

from migrations_app.placement import GuestNeeds, HostCapacity
from recovery.plan import DiskFact, GuestFacts, recovery_plan

GIB = 1024 * 1024
SHARED = (DiskFact("vda", "shared"),)


def guest(name, *, running=True, definition=True, disks=SHARED, memory=GIB, devices=0, superseded="", **needs):
    return GuestFacts(
        needs=GuestNeeds(uuid=f"u-{name}", name=name, memory_kib=memory, vcpus=1, arch="x86_64", domain_type="kvm",
                         state="running" if running else "shutoff", **needs),
        was_running=running, has_definition=definition, disks=disks, host_devices=devices, superseded_note=superseded)


def host(name, free=8 * GIB, **kw):
    return HostCapacity(name=name, free_memory_kib=free, cpus=4, arches=frozenset({"x86_64"}), **kw)


HOSTS = [host("dead", reachable=False), host("h1"), host("h2", free=16 * GIB)]


@pytest.mark.parametrize("facts, words", [
    (guest("off", running=False), "was not running"),
    (guest("nodef", definition=False), "holds no definition"),
    (guest("local", disks=(DiskFact("vda", "local"),)), "vda (local)"),
    (guest("iso", disks=(DiskFact("vda", "shared"), DiskFact("sda", "local", readonly=True))), "sda (read-only, local)"),
    (guest("unknown", disks=(DiskFact("vda", "unknown"),)), "vda (unknown)"),
    (guest("dev", devices=1), "passed-through"),
    (guest("again", superseded="recovered to h1 by recovery #3"), "Already replaced: recovered to h1"),
    (guest("pinned", pinned=True), "pinned"),
    (guest("huge", memory=64 * GIB), "No host has room"),
])
def test_guests_left_behind_say_why(facts, words):
    plan = recovery_plan([facts], HOSTS, source="dead")
    assert not plan.moves
    assert len(plan.left) == 1 and words in plan.left[0].reason, plan.left[0].reason


def test_shared_and_network_disks_are_recovered_on_the_placements_choice():
    facts = [guest("a", disks=(DiskFact("vda", "shared"), DiskFact("hdc", "local", has_source=False))),
             guest("b", disks=(DiskFact("vda", "network"),))]
    plan = recovery_plan(facts, HOSTS, source="dead")
    assert [(m.name, m.destination) for m in plan.moves] == [("a", "h2"), ("b", "h2")]  # spread: most free
    assert not plan.left


def test_the_dead_host_and_hosts_in_maintenance_are_never_destinations():
    plan = recovery_plan([guest("a")], [host("dead"), host("h1", in_maintenance=True)], source="dead")
    assert not plan.moves and "No other host" in plan.left[0].reason


def test_the_admins_destination_overrides_and_is_checked():
    assert recovery_plan([guest("a")], HOSTS, source="dead", destination="h1").moves[0].destination == "h1"
    plan = recovery_plan([guest("a", memory=12 * GIB)], HOSTS, source="dead", destination="h1")
    assert not plan.moves and "h1" in plan.left[0].reason


def test_same_facts_same_plan_and_fingerprint():
    one = recovery_plan([guest("a"), guest("b")], HOSTS, source="dead")
    two = recovery_plan([guest("b"), guest("a")], list(reversed(HOSTS)), source="dead")
    assert one == two and one.fingerprint == two.fingerprint
    assert recovery_plan([guest("a")], HOSTS, source="dead", destination="h1").fingerprint != one.fingerprint


def test_a_host_over_its_budget_takes_nobody_and_the_reason_says_how_to_raise_it():
    spent = host("h1", budget_memory_kib=2 * GIB, committed_memory_kib=2 * GIB)
    plan = recovery_plan([guest("a")], [host("dead", reachable=False), spent], source="dead")
    assert not plan.moves
    assert "h1's memory budget for guests (2.0 GiB) has 0.0 GiB left" in plan.left[0].reason
    assert "python manage.py host_capacity h1" in plan.left[0].reason
    # within the budget it goes there; a second host with room takes what the first's budget cannot
    roomy = recovery_plan([guest("a", memory=GIB), guest("b", memory=GIB)],
                          [host("h1", budget_memory_kib=GIB), host("h2", budget_memory_kib=GIB)], source="dead")
    assert sorted(m.destination for m in roomy.moves) == ["h1", "h2"] and not roomy.left
