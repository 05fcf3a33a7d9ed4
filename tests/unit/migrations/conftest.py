"""Fixtures for the Django side of migrations: two hosts, a guest, and a fake libvirt world."""

from __future__ import annotations

import pytest
from migration_fakes import FakeDomain, FakeMigrationWorld, make_host, make_vm

from core.actors import Actor
from migrations_app import endpoints, runner, whereabouts

@pytest.fixture
def world(monkeypatch, settings):
    w = FakeMigrationWorld()
    monkeypatch.setattr(endpoints, "connect", w.connect)
    monkeypatch.setattr(endpoints, "gather_pair", w.gather_pair)
    adapter = w.adapter()
    monkeypatch.setattr(runner, "migration_adapter", adapter)
    monkeypatch.setattr(whereabouts, "migration_adapter", adapter)
    monkeypatch.setattr(
        whereabouts, "refresh_hosts", lambda migration, ctx: w.calls.append(("refresh", migration.source.name, migration.destination.name))
    )
    monkeypatch.setattr(runner, "HEARTBEAT_SETTLE_S", 0)
    real_tick = runner.Sampler.tick

    def tick(sampler):
        w.run_due_actions()
        real_tick(sampler)

    monkeypatch.setattr(runner.Sampler, "tick", tick)
    settings.VMPORTAL_MIGRATION_SAMPLE_SECONDS = 0.005
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = ""
    return w


@pytest.fixture
def two_hosts(db, world):
    """kvm-a runs web-1; kvm-b is empty. Both in the inventory and in the fake world."""
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vm = make_vm(src)
    world.add_host("kvm-a", FakeDomain(uuid=str(vm.uuid), name=vm.name))
    world.add_host("kvm-b")
    return src, dst, vm


@pytest.fixture
def system():
    return Actor.system()
