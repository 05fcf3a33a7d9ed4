"""Fixtures for the storage tests: a fake world of hosts (storage_fakes) behind the inventory.

``nfs_world`` adds h1, h2, h3 to the inventory (host keys pinned, so the portal may contact
them) and makes storage.nfs reach them through FakeChannels instead of SSH and libvirt.
"""

from __future__ import annotations

import pytest
from storage_fakes import FakeChannel, debian_lab_world

from hosts.choices import HostAuthMethodChoices, HostStatusChoices
from hosts.models import Host
from storage import nfs


class _FakeHostChannel:
    world = None

    def __init__(self, host):
        self.fake = FakeChannel(self.world.hosts[host.name])

    def __enter__(self):
        if not self.fake.host.reachable:
            from hosts.adapters.errors import HostUnreachable

            raise HostUnreachable(f"{self.fake.host.address}:22 refused the connection", address=self.fake.host.address)
        return self.fake

    def __exit__(self, *exc):
        return None


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    """Probes that wait for a daemon poll for 1/100 of their time here (the fakes answer at once)."""
    from storage import runner

    monkeypatch.setattr(runner, "WAIT_SCALE", 0.01)


@pytest.fixture
def nfs_world(db, monkeypatch):
    world = debian_lab_world()
    for fake in world.hosts.values():
        Host.objects.create(
            name=fake.name, address=fake.address, auth_method=HostAuthMethodChoices.PORTAL_KEY,
            host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests", host_key_fingerprint="SHA256:fake",
            status=HostStatusChoices.REACHABLE,
        )
    channel = type("FakeHostChannel", (_FakeHostChannel,), {"world": world})
    monkeypatch.setattr(nfs, "HostChannel", channel)
    return world
