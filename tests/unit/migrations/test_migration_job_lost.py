"""A migration whose work horse died is settled at once, from where libvirt says the guest is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.choices import JobStatusChoices
from core.models import Job
from hosts.models import VirtualMachine
from migrations_app.choices import ColdMigrationStatusChoices as C, MigrationStatusChoices as S
from migrations_app.models import ColdMigration, Migration
from tests.rq_support import horse_killed, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def running_job(kind="migration.run") -> Job:
    return Job.objects.create(kind=kind, timeout_s=600, status=JobStatusChoices.RUNNING,
                              started=timezone.now() - timedelta(seconds=3))


def live_migration(two_hosts, status=S.MIGRATING) -> Migration:
    src, dst, vm = two_hosts
    now = timezone.now()
    # A fresh heartbeat: only the horse's death says the worker is gone.
    return Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                    options={}, status=status, started=now, heartbeat=now, job=running_job())


def test_horse_killed_after_libvirt_moved_the_guest_settles_succeeded_at_once(
        two_hosts, world, private_redis, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    world["kvm-b"].domains[str(vm.uuid)] = world["kvm-a"].domains.pop(str(vm.uuid))
    migration = live_migration(two_hosts, S.COMPLETING)
    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, migration.job_id, migration.pk)
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED
    assert "runs on kvm-b and is gone from kvm-a" in migration.outcome
    assert "killed by signal 9" in migration.error
    assert VirtualMachine.objects.get(uuid=vm.uuid).host_id == dst.pk


@pytest.mark.parametrize("status", [S.CHECKING, S.MIGRATING])
def test_horse_killed_with_the_guest_still_at_home_settles_failed_at_once(
        two_hosts, world, private_redis, django_capture_on_commit_callbacks, status):
    src, dst, vm = two_hosts
    migration = live_migration(two_hosts, status)
    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, migration.job_id, migration.pk)
    migration.refresh_from_db()
    assert migration.status == S.FAILED and "stayed on kvm-a" in migration.outcome
    assert str(vm.uuid) in world["kvm-a"].domains and str(vm.uuid) not in world["kvm-b"].domains
    assert VirtualMachine.objects.get(uuid=vm.uuid).host_id == src.pk


def test_horse_killed_during_a_cold_move_settles_the_cold_record_at_once(
        two_hosts, world, private_redis, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    now = timezone.now()
    cold = ColdMigration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                        status=C.COPYING, started=now, heartbeat=now, job=running_job("migration.cold"))
    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, cold.job_id, cold.pk)
    cold.refresh_from_db()
    assert not cold.is_active, cold.status
    assert "killed by signal 9" in cold.error
    assert str(vm.uuid) in world["kvm-a"].domains and str(vm.uuid) not in world["kvm-b"].domains


def test_a_lost_job_of_a_finished_migration_changes_nothing(two_hosts, world, private_redis,
                                                            django_capture_on_commit_callbacks):
    migration = live_migration(two_hosts)
    Migration.objects.filter(pk=migration.pk).update(status=S.SUCCEEDED, outcome="done")
    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, migration.job_id, migration.pk)
    migration.refresh_from_db()
    assert (migration.status, migration.outcome) == (S.SUCCEEDED, "done")
    assert not Job.objects.filter(kind="migration.reconcile").exists()
