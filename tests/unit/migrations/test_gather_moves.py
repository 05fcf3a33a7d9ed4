"""A run's one gather: its moves grouped per source (pure), then gathered once per host and pair."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from migrations_app.gather_fleet import Move, moves_by_source


@dataclass(frozen=True)
class H:
    pk: int
    name: str


A, B, C = H(1, "a"), H(2, "b"), H(3, "c")


@pytest.mark.parametrize("moves, groups", [
    ([], []),
    # An evacuation: one source, its destinations and guests in the order first named.
    ([Move("g1", A, B), Move("g2", A, C), Move("G1", A, C), Move("g3", A, B)],
     [(A, (B, C), ("g1", "g2", "g3"), False)]),
    # A return: many sources, one destination.
    ([Move("g1", B, A), Move("g2", C, A), Move("g3", B, A)], [(B, (A,), ("g1", "g3"), False), (C, (A,), ("g2",), False)]),
    # Copy-storage moves are gathered apart (they measure disk sizes and room).
    ([Move("g1", A, B, copying=True), Move("g2", A, B)], [(A, (B,), ("g1",), True), (A, (B,), ("g2",), False)]),
    # A host is never its own destination.
    ([Move("g1", A, A)], []),
])
def test_moves_by_source(moves, groups):
    found = [(g.source, g.destinations, g.guest_uuids, g.copying) for g in moves_by_source(moves)]
    assert found == groups
