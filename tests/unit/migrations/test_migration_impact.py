"""What a live migration did to the destination's other guests: CPU use and steal per window (pure)."""

from __future__ import annotations

import pytest

from migrations_app import impact
from migrations_app.impact import Counters, Neighbour, Reading

S = 1_000_000_000  # ns in a second


def reading(at_s: float, **guests: tuple) -> Reading:
    """guests: uuid=(name, vcpus, cpu seconds, steal seconds or None)."""
    return Reading(at_s=at_s, guests={u: Counters(name=n, vcpus=v, vcpu_ns=int(c * S),
                                                  delay_ns=None if d is None else int(d * S))
                                      for u, (n, v, c, d) in guests.items()})


@pytest.mark.parametrize(("before", "start", "end", "expected"), [
    # A quiet neighbour at 10 % CPU, no steal; the arrival pushes its steal to 40 % of the 2 s: slowed.
    (reading(0, a=("db", 1, 0, 0)), reading(60, a=("db", 1, 6, 0)), reading(62, a=("db", 1, 6.2, 0.8)),
     [("db", 10.0, 10.0, 0.0, 40.0, True)]),
    # Two vCPUs: shares are of both vCPUs' time; steal up 5 points only: not slowed.
    (reading(0, a=("web", 2, 0, 0)), reading(10, a=("web", 2, 4, 1)), reading(12, a=("web", 2, 4.8, 1.4)),
     [("web", 20.0, 20.0, 5.0, 10.0, False)]),
    # A busy guest whose CPU use halves while the newcomer arrives: slowed, even without steal figures.
    (reading(0, a=("batch", 1, 0, None)), reading(10, a=("batch", 1, 8, None)), reading(14, a=("batch", 1, 9.2, None)),
     [("batch", 80.0, 30.0, None, None, True)]),
    # An idle guest (2 % → 0.5 %): below MIN_BUSY_PCT, a fall means nothing.
    (reading(0, a=("idle", 1, 0, 0)), reading(100, a=("idle", 1, 2, 0)), reading(102, a=("idle", 1, 2.01, 0)),
     [("idle", 2.0, 0.5, 0.0, 0.0, False)]),
    # No refresh kept counters: the "before" is unknown, the rest measured.
    (None, reading(10, a=("db", 1, 1, 0)), reading(12, a=("db", 1, 1.5, 0.1)), [("db", None, 25.0, None, 5.0, False)]),
    # The last refresh is too old to stand for "before" (over MAX_BEFORE_S), or too recent to be a window.
    (reading(0, a=("db", 1, 0, 0)), reading(impact.MAX_BEFORE_S + 1, a=("db", 1, 1, 0)),
     reading(impact.MAX_BEFORE_S + 3, a=("db", 1, 1.2, 0)), [("db", None, 10.0, None, 0.0, False)]),
    (reading(10, a=("db", 1, 1, 0)), reading(10.05, a=("db", 1, 1, 0)), reading(12.05, a=("db", 1, 1.2, 0)),
     [("db", None, 10.0, None, 0.0, False)]),
    # A guest started since the refresh has no "before"; a guest restarted (counter went back) has none either.
    (reading(0, b=("old", 1, 50, 0)), reading(10, a=("new", 1, 1, 0), b=("old", 1, 1, 0)),
     reading(12, a=("new", 1, 1.2, 0), b=("old", 1, 1.2, 0)),
     [("new", None, 10.0, None, 0.0, False), ("old", None, 10.0, None, 0.0, False)]),
    # The guest that moved is not its own neighbour; a guest gone by the end is left out.
    (None, reading(10, a=("db", 1, 1, 0), gone=("x", 1, 1, 0)),
     reading(12, a=("db", 1, 1.2, 0), moving=("me", 1, 9, 0)), [("db", None, 10.0, None, 0.0, False)]),
])
def test_neighbour_shares_per_window(before, start, end, expected):
    rows = impact.neighbours(before=before, start=start, end=end, moving="moving")
    assert [(r.name, r.cpu_before_pct, r.cpu_during_pct, r.steal_before_pct, r.steal_during_pct, r.slowed)
            for r in rows] == expected


def row(name: str, slowed: bool) -> Neighbour:
    return Neighbour(uuid=name, name=name, cpu_before_pct=50.0, cpu_during_pct=10.0 if slowed else 50.0,
                     steal_before_pct=None, steal_during_pct=None)


@pytest.mark.parametrize(("rows", "says"), [
    ([], "No other guest ran on labh1"),
    ([row("a", False), row("b", False)], "None of the 2 other guest(s) on labh1 was slowed"),
    ([row("a", True), row("b", False)], "1 of 2 other guest(s) on labh1 were slowed while the guest arrived "
                                         "(steal up 10+ points or CPU use halved): a."),
    ([row(f"g{i}", True) for i in range(7)], "g0, g1, g2, g3, g4 and 2 more."),
])
def test_the_verdict_in_one_line(rows, says):
    assert says in impact.verdict(rows, host="labh1")


def test_the_record_keeps_figures_per_guest():
    rows = impact.neighbours(before=reading(0, a=("db", 1, 0, 0)), start=reading(60, a=("db", 1, 6, 0)),
                             end=reading(62, a=("db", 1, 6.2, 0.8)), moving="m")
    kept = impact.summary(rows, host="labh1", before_s=60.0, during_s=2.0)
    assert kept["measured"] is True and kept["slowed"] == 1 and kept["before_s"] == 60.0 and kept["total"] == 1
    assert kept["guests"] == [{"uuid": "a", "name": "db", "cpu_before_pct": 10.0, "cpu_during_pct": 10.0,
                               "steal_before_pct": 0.0, "steal_during_pct": 40.0, "slowed": True}]


def test_a_host_with_many_guests_keeps_the_most_affected_and_counts_them_all():
    many = [Neighbour(uuid=f"u{i}", name=f"g{i:03d}", cpu_before_pct=1.0, cpu_during_pct=1.0,
                      steal_before_pct=0.0, steal_during_pct=float(i % 7)) for i in range(300)]
    many.append(Neighbour(uuid="s", name="zz-slowed", cpu_before_pct=50.0, cpu_during_pct=5.0,
                          steal_before_pct=None, steal_during_pct=None))
    kept = impact.summary(many, host="labh1", before_s=None, during_s=2.0)
    assert kept["total"] == 301 and kept["slowed"] == 1 and len(kept["guests"]) == impact.MAX_KEPT
    assert kept["guests"][0]["name"] == "zz-slowed"  # slowed first
    assert [g["steal_during_pct"] for g in kept["guests"][1:]] == sorted(
        (g["steal_during_pct"] for g in kept["guests"][1:]), reverse=True)
    assert kept["guests"][1]["steal_during_pct"] == 6.0
