"""Fixtures for the storage tests: the fake fleet's NFS lab behind the inventory.

``nfs_fleet`` adds h1, h2, h3 (tests.fakes.fleet.nfs_lab) to the fleet and to the inventory
(host keys pinned, so the portal may contact them); storage.nfs reaches them through
``hosts.access`` like any host.
"""

from __future__ import annotations

import pytest

from tests.fakes.fleet import nfs_lab


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    """Probes that wait for a daemon poll for 1/100 of their time here (the fakes answer at once)."""
    from storage import runner

    monkeypatch.setattr(runner, "WAIT_SCALE", 0.01)


@pytest.fixture
def nfs_fleet(db, fleet):
    nfs_lab(fleet)
    for name in fleet.hosts:
        fleet.host_row(name)
    return fleet
