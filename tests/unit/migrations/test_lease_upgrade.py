"""Upgrading to one lease per guest: migrations under way get their guest's lease, so the rule
"one operation per guest" holds across the schema migration that drops the old constraints."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from tests.fakes.fleet import make_host, make_vm

from hosts.choices import GuestLeaseKindChoices as K
from hosts.models import GuestLease
from migrations_app.choices import ColdMigrationStatusChoices as C, MigrationStatusChoices as S
from migrations_app.models import ColdMigration, Migration

pytestmark = pytest.mark.django_db

upgrade = importlib.import_module("migrations_app.migrations.0003_one_lease_per_guest")


def test_migrations_under_way_get_their_guests_lease():
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    alice = get_user_model().objects.create_user(username="alice", password="x")
    live_vm, offline_vm, cold_vm, both_vm, idle_vm = (make_vm(src, f"web-{i}") for i in range(5))

    def migration(vm, status, **fields):
        return Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                        status=status, **{"options": {}, **fields})

    def cold(vm, status):
        return ColdMigration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                            status=status)

    live = migration(live_vm, S.MIGRATING, requested_by=alice)
    migration(live_vm, S.SUCCEEDED)
    offline = migration(offline_vm, S.QUEUED, options={"live": False})
    moving = cold(cold_vm, C.COPYING)
    older = cold(both_vm, C.QUEUED)  # the old constraints let a live and a cold one overlap
    migration(both_vm, S.CHECKING)
    migration(idle_vm, S.NEEDS_ATTENTION)
    cold(idle_vm, C.FAILED)

    upgrade.leases_for_migrations_under_way(apps, None)

    held = {lease.guest_uuid: lease for lease in GuestLease.objects.all()}
    assert set(held) == {live_vm.uuid, offline_vm.uuid, cold_vm.uuid, both_vm.uuid}  # idle_vm: nothing under way
    assert (held[live_vm.uuid].owner, held[live_vm.uuid].kind, held[live_vm.uuid].actor_label) == (
        live, K.LIVE_MIGRATION, "alice")
    assert held[live_vm.uuid].owner_label == f"live migration #{live.pk}"
    assert held[live_vm.uuid].owner_url == live.get_absolute_url()
    assert (held[offline_vm.uuid].owner, held[offline_vm.uuid].kind) == (offline, K.OFFLINE_MIGRATION)
    assert (held[cold_vm.uuid].owner, held[cold_vm.uuid].kind) == (moving, K.COLD_MIGRATION)
    assert held[cold_vm.uuid].owner_url == moving.get_absolute_url()
    assert held[both_vm.uuid].owner == older

    upgrade.leases_for_migrations_under_way(apps, None)  # running it again changes nothing
    assert GuestLease.objects.count() == 4
