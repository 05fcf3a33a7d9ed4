"""Balance and consolidate rules, as tables: threshold, hold time, margin, cool-down, pins, capacity."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from fleet import recommend as r
from migrations_app.placement import GuestNeeds, HostCapacity

GIB = 1024 * 1024
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
RULES = r.Rules(threshold_pts=20, hold_s=1800, margin_pts=5, headroom=0.0)


def fleet(spec, *, limit_gib=16, tags=None, balanced=None, pinned=(), shutoff=(), in_maintenance=()):
    """spec: {host: [guest GiB, …]} → hosts and guests on the memory basis (assigned)."""
    hosts, guests = [], []
    for host, sizes in spec.items():
        used = sum(sizes) * GIB
        hosts.append(r.HostLoadNow(
            HostCapacity(name=host, free_memory_kib=limit_gib * GIB - used, cpus=8, arches=frozenset({"x86_64"}),
                         in_maintenance=host in in_maintenance),
            load=used, limit=limit_gib * GIB))
        for i, size in enumerate(sizes):
            name = f"{host}-g{i}"
            guests.append(r.GuestLoadNow(
                GuestNeeds(uuid=name, name=name, memory_kib=size * GIB, vcpus=1, arch="x86_64", domain_type="kvm",
                           state="shutoff" if name in shutoff else "running", pinned=name in pinned),
                host=host, load=size * GIB, tags=frozenset((tags or {}).get(name, ())),
                balanced_at=(balanced or {}).get(name)))
    return hosts, guests


def moves(outcome):
    return [(m.vm, m.source, m.destination) for rec in outcome.recommendations for m in rec.moves]


@pytest.mark.parametrize("spec, kw, expected", [
    # even: nothing
    ({"a": [4, 4], "b": [4, 4]}, {}, []),
    # spread 50 points (a 75 %, b 25 %): one 4 GiB move brings it to 0
    ({"a": [4, 4, 4], "b": [4]}, {}, [("a-g0", "a", "b")]),
    # spread 25 (a 50 %, b 25 %): the only move (4 GiB) makes it 25 the other way: gain 0 < margin → none
    ({"a": [4, 4], "b": [4]}, {}, []),
    # four on a, none on c: moves until under the threshold
    ({"a": [2, 2, 2, 2], "b": [2], "c": []}, {}, [("a-g0", "a", "c"), ("a-g1", "a", "b")]),
    # pinned and tagged guests stay; the other moves
    ({"a": [4, 4, 4], "b": [4]}, {"pinned": ("a-g0",), "tags": {"a-g1": {"no-balance"}}}, [("a-g2", "a", "b")]),
    # cool-down: all of a's guests moved by the balancer an hour ago → none
    ({"a": [4, 4, 4], "b": [4]},
     {"balanced": {f"a-g{i}": NOW - timedelta(hours=1) for i in range(3)}}, []),
    # cool-down passed → moves
    ({"a": [4, 4, 4], "b": [4]},
     {"balanced": {f"a-g{i}": NOW - timedelta(hours=25) for i in range(3)}}, [("a-g0", "a", "b")]),
    # a host in maintenance is neither counted nor a destination
    ({"a": [4, 4, 4], "b": [4], "c": []}, {"in_maintenance": ("c",)}, [("a-g0", "a", "b")]),
    # capacity: b (10 GiB free) has no room for the 12 GiB guest; the 2 GiB one goes, and then no more
    ({"a": [12, 2], "b": [2, 2, 2]}, {}, [("a-g1", "a", "b")]),
    # shut-off guests are not moved
    ({"a": [4, 4, 4], "b": [4]}, {"shutoff": ("a-g0", "a-g1", "a-g2")}, []),
])
def test_balance_rules(spec, kw, expected):
    hosts, guests = fleet(spec, **kw)
    assert moves(r.balance(hosts, guests, now=NOW, rules=RULES)) == expected


@pytest.mark.parametrize("held_s, expected", [(None, 1), (600, 0), (1800, 1)])
def test_balance_waits_for_the_hold_time(held_s, expected):
    hosts, guests = fleet({"a": [4, 4, 4], "b": [4]})
    out = r.balance(hosts, guests, now=NOW, rules=RULES, held_s=held_s)
    assert len(out.recommendations) == expected
    if not expected:
        assert "hold time" in out.note


def test_balance_explains_itself_and_is_paused_in_a_window():
    hosts, guests = fleet({"a": [4, 4, 4], "b": [4]})
    rec = r.balance(hosts, guests, now=NOW, rules=RULES, seconds_per_move=30).recommendations[0]
    assert rec.summary == "a at 75 % memory, b at 25 %: 1 move(s) bring the spread from 50 to 0 points."
    assert "from 50 to 0 points" in rec.moves[0].why and rec.before == {"a": 75.0, "b": 25.0}
    assert rec.after == {"a": 50.0, "b": 50.0} and rec.expected_s == 30
    assert rec.as_dict()["moves"][0] | {"why": ""} == {"vm": "a-g0", "uuid": "a-g0", "from": "a", "to": "b", "why": ""}
    paused = r.balance(hosts, guests, now=NOW, rules=RULES, paused="window Patch Tuesday is open")
    assert paused.recommendations == () and paused.note.startswith("Paused")


def test_balance_after_applying_proposes_nothing():
    hosts, guests = fleet({"a": [2, 2, 2, 2], "b": [2], "c": []})
    first = r.balance(hosts, guests, now=NOW, rules=RULES)
    after, _ = fleet({"a": [2, 2], "b": [2], "c": [2, 2]})
    assert first.recommendations and not r.balance(after, _, now=NOW, rules=RULES).recommendations


@pytest.mark.parametrize("spec, expected", [
    # each host's guests fit on the others; fewest moves first, then by name
    ({"a": [8], "b": [2, 2], "c": [2]}, [("a", 1), ("c", 1), ("b", 2)]),
    # nothing fits anywhere
    ({"a": [12], "b": [12]}, []),
    # an empty host can be powered off with no moves
    ({"a": [4], "b": []}, [("b", 0), ("a", 1)]),
])
def test_consolidate(spec, expected):
    hosts, guests = fleet(spec)
    out = r.consolidate(hosts, guests, rules=RULES)
    assert [(rec.power_off, len(rec.moves)) for rec in out.recommendations] == expected
    for rec in out.recommendations:
        assert f"then {rec.power_off} can be powered off" in rec.summary or "runs no guest" in rec.summary


def test_consolidate_respects_pins():
    hosts, guests = fleet({"a": [8], "b": [2]}, pinned=("b-g0",))
    assert [rec.power_off for rec in r.consolidate(hosts, guests, rules=RULES).recommendations] == ["a"]


@pytest.mark.parametrize("points, expected", [
    ([(0, 30), (10, 40), (20, 35)], 20 * 60),
    ([(0, 30), (10, 10), (20, 35)], 0),  # under at 20 min: the clock restarts at 20 → 0 s at now
    ([(0, 10)], 0),
])
def test_held_over(points, expected):
    now = NOW
    series = [(NOW - timedelta(minutes=20) + timedelta(minutes=m), v) for m, v in points]
    assert r.held_over_s(series, 20, now) == expected


def test_each_move_says_why_its_destination_in_numbers():
    # a 75 %, b 25 %, c 50 %: b gives the lowest spread; c would leave 50 points
    hosts, guests = fleet({"a": [4, 4, 4], "b": [4], "c": [4, 4]})
    (move,) = r.balance(hosts, guests, now=NOW, rules=RULES).recommendations[0].moves
    assert (move.vm, move.destination) == ("a-g0", "b")
    assert move.why == ("a-g0 (4.0 GiB) is on a, the busiest host (75 % → 50 %). b goes from 25 % to 50 % with "
                        "8.0 GiB of its budget left, and the spread from 50 to 0 points; c would leave 50.")


def test_a_destination_that_cannot_take_the_guest_says_why():
    hosts, guests = fleet({"a": [4, 4, 4], "b": [4], "c": []})
    hosts[2] = replace(hosts[2], capacity=replace(hosts[2].capacity, free_memory_kib=GIB))  # c: room for none
    why = r.balance(hosts, guests, now=NOW, rules=RULES).recommendations[0].moves[0].why
    assert "c cannot take it (" in why and why.endswith("c cannot take it (c has 1.0 GiB free; the guest needs 4.0 GiB (missing 3.0 GiB)).")


def test_consolidate_moves_say_where_in_numbers():
    hosts, guests = fleet({"a": [4], "b": [8]})
    rec = next(x for x in r.consolidate(hosts, guests, rules=RULES).recommendations if x.power_off == "a")
    assert rec.moves[0].why.startswith("a-g0 (4.0 GiB) fits on b: 50 % → 75 % with 4.0 GiB of its budget left")


@pytest.mark.parametrize("dismissed, now, holds", [
    ({"a": 75, "b": 25}, {"a": 75, "b": 25}, True),
    ({"a": 75, "b": 25}, {"a": 79, "b": 22}, True),  # within 5 points
    ({"a": 75, "b": 25}, {"a": 81, "b": 25}, False),  # a moved 6 points: the facts changed
    ({"a": 75, "b": 25}, {"a": 75, "b": 25, "c": 0}, False),  # a host more
    ({"a": 75, "b": 25}, {"a": 75}, False),
])
def test_dismissal_holds_until_the_facts_change(dismissed, now, holds):
    assert r.dismissal_holds(dismissed, now) is holds


def test_cpu_basis_balances_vcpus_and_placement_keeps_the_vcpu_budget():
    # vCPU basis: a runs 12 of 16 vCPUs, b 2; one 4-vCPU guest would fit, but b's budget leaves 3
    hosts = [r.HostLoadNow(HostCapacity(name=n, free_memory_kib=64 * GIB, cpus=4, arches=frozenset({"x86_64"}),
                                        free_vcpus=16 - used), load=used, limit=16)
             for n, used in (("a", 12), ("b", 13))]
    guests = [r.GuestLoadNow(GuestNeeds(uuid=f"g{i}", name=f"g{i}", memory_kib=GIB, vcpus=4, arch="x86_64",
                                        domain_type="kvm", state="running"), host="a", load=4) for i in range(3)]
    hosts[1] = replace(hosts[1], load=2)
    out = r.balance(hosts, guests, now=NOW, rules=RULES, basis_label="vCPU", fmt=lambda n: f"{n:g} vCPU")
    assert out.recommendations == () and "No guest of a can move" in out.note
    hosts[1] = replace(hosts[1], capacity=replace(hosts[1].capacity, free_vcpus=14))
    rec = r.balance(hosts, guests, now=NOW, rules=RULES, basis_label="vCPU", fmt=lambda n: f"{n:g} vCPU").recommendations[0]
    assert rec.summary.startswith("a at 75 % vCPU, b at 12.5 %") and "(4 vCPU)" in rec.moves[0].why
