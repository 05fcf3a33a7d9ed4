"""Migration services: refusals, one active migration per guest (its lease, in the database), per-host slots, states."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from core.actors import Actor
from core.models import AuditEvent, Job
from hosts import leases
from hosts.choices import GuestLeaseKindChoices, HostStatusChoices
from hosts.leases import GuestBusy, lease_holder
from hosts.models import GuestLease
from migrations_app import reconcile, states
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration, MigrationSlot
from migrations_app.options import MigrationOptions
from migrations_app.services import live, records, refusals, slots
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system()


def request(vm, destination, **options):
    return live.migration_request(vm=vm, destination=destination, options=MigrationOptions(**options), actor=SYSTEM)


# ---------------------------------------------------------------------------
# States (pure tables)

@pytest.mark.parametrize(
    "current, new, allowed",
    [
        (S.QUEUED, S.CHECKING, True),
        (S.QUEUED, S.MIGRATING, False),
        (S.QUEUED, S.ABORTED, True),
        (S.CHECKING, S.MIGRATING, True),
        (S.CHECKING, S.FAILED, True),
        (S.CHECKING, S.COMPLETING, False),
        (S.MIGRATING, S.COMPLETING, True),
        (S.MIGRATING, S.CHECKING, False),
        (S.MIGRATING, S.SUCCEEDED, True),  # the reconciler settles straight from here
        (S.COMPLETING, S.SUCCEEDED, True),
        (S.COMPLETING, S.MIGRATING, False),
        (S.NEEDS_ATTENTION, S.SUCCEEDED, True),
        (S.NEEDS_ATTENTION, S.NEEDS_ATTENTION, True),  # reconciled again, still broken
        (S.NEEDS_ATTENTION, S.QUEUED, False),
        (S.SUCCEEDED, S.FAILED, False),
        (S.FAILED, S.SUCCEEDED, False),
        (S.ABORTED, S.QUEUED, False),
    ],
)
def test_transitions(current, new, allowed):
    assert states.can_transition(current, new) is allowed


@pytest.mark.parametrize(
    "outcome, aborted, status",
    [
        (reconcile.SUCCEEDED, False, S.SUCCEEDED),
        (reconcile.SUCCEEDED, True, S.SUCCEEDED),  # aborted too late: the hosts decide
        (reconcile.FAILED, False, S.FAILED),
        (reconcile.FAILED, True, S.ABORTED),
        (reconcile.NEEDS_ATTENTION, True, S.NEEDS_ATTENTION),
    ],
)
def test_status_for_outcome(outcome, aborted, status):
    assert states.status_for_outcome(outcome, aborted=aborted) == status


# ---------------------------------------------------------------------------
# Requests

def test_request_is_queued_and_audited(two_hosts):
    src, dst, vm = two_hosts
    migration = request(vm, dst, auto_converge=True)
    assert migration.status == S.QUEUED and migration.vm_uuid == vm.uuid and migration.vm_name == "web-1"
    assert migration.options["auto_converge"] is True
    event = AuditEvent.objects.get(action="migration.request")
    assert event.result == "ok" and event.parameters["destination"] == "kvm-b"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda src, dst: None, None),
        (lambda src, dst: setattr(dst, "in_maintenance", True) or dst.save(), "in maintenance"),
        (lambda src, dst: setattr(dst, "status", HostStatusChoices.PENDING_TRUST) or dst.save(), "cannot be contacted"),
        (lambda src, dst: setattr(src, "status", HostStatusChoices.KEY_MISMATCH) or src.save(), "source host kvm-a"),
    ],
)
def test_request_refusals_are_audited(two_hosts, setup, message):
    src, dst, vm = two_hosts
    setup(src, dst)
    if message is None:
        request(vm, dst)
        return
    with pytest.raises(refusals.ServiceRefused, match=message):
        request(vm, dst)
    assert not Migration.objects.exists()
    assert AuditEvent.objects.get(action="migration.request").result == "refused"


def test_request_refuses_bad_combinations_and_the_same_host(two_hosts):
    src, dst, vm = two_hosts
    with pytest.raises(refusals.ServiceRefused, match="requires peer-to-peer"):
        request(vm, dst, tunnelled=True, peer_to_peer=False)
    with pytest.raises(refusals.ServiceRefused, match="already runs on kvm-a"):
        request(vm, src)


def test_one_active_migration_per_guest(two_hosts):
    src, dst, vm = two_hosts
    third = make_host("kvm-c")
    first = request(vm, dst)
    with pytest.raises(refusals.ServiceRefused, match=f"is busy: live migration #{first.pk} has held it since"):
        request(vm, third)
    live.migration_abort(migration=first, actor=SYSTEM)
    assert request(vm, third).status == S.QUEUED  # once it ended, a new one may start


def test_the_database_enforces_one_active_migration_per_guest(two_hosts):
    """What the database enforces is the guest's lease: one row per guest UUID, held while it runs."""
    src, dst, vm = two_hosts
    first = request(vm, dst)
    with pytest.raises(IntegrityError), transaction.atomic():
        GuestLease.objects.create(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.LIVE_MIGRATION,
                                  owner=first, owner_label="a second claim", actor_label="system")
    # A finished one does not hold it.
    live.migration_abort(migration=first, actor=SYSTEM)
    assert lease_holder(vm.uuid) is None


def test_simultaneous_requests_one_proceeds_the_other_gets_a_clear_message(two_hosts, monkeypatch):
    """Nothing is looked up before the insert: the second request's lease INSERT fails on the
    guest's UUID, and only then is the holder read for the message. (Two requests really at
    once, in threads: tests/unit/test_guest_lease_race.py.)"""
    src, dst, vm = two_hosts
    lookups = []
    real_holder = leases.lease_holder
    monkeypatch.setattr(leases, "lease_holder", lambda uuid: lookups.append(uuid) or real_holder(uuid))
    first = request(vm, dst)
    assert lookups == []  # the winner never asked whether the guest was free
    with pytest.raises(GuestBusy) as refused:
        request(vm, dst)
    assert lookups == [vm.uuid]
    assert refused.value.holder.owner_id == first.pk
    assert f"{vm.name} is busy: live migration #{first.pk} has held it since" in refused.value.message
    assert first.get_absolute_url() in refused.value.hint
    assert Migration.objects.filter(vm_uuid=vm.uuid).count() == 1
    assert AuditEvent.objects.filter(action="migration.request", result="refused").count() == 1


# ---------------------------------------------------------------------------
# Per-host slots

def test_per_host_limits_keep_extra_migrations_queued_until_a_slot_frees(db, world, settings,
                                                                            django_capture_on_commit_callbacks):
    settings.VMPORTAL_MAX_OUTGOING = 2
    settings.VMPORTAL_MAX_INCOMING = 2
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vms = [make_vm(src, f"web-{i}") for i in range(3)]
    world.adopt(src, *[world.guest_of(v) for v in vms])
    world.adopt(dst)
    settings.VMPORTAL_JOBS_INLINE = False  # keep the jobs queued: we only look at the dispatch
    monkey_jobs = []
    import core.jobs

    real_submit = core.jobs._submit
    core.jobs._submit = lambda job_id, func, args: monkey_jobs.append(job_id)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            migrations = [request(vm, dst) for vm in vms]
        for m in migrations:
            m.refresh_from_db()
        assert [m.job is not None for m in migrations] == [True, True, False]
        assert "Waiting for a free outgoing slot on kvm-a" in migrations[2].phase
        assert MigrationSlot.objects.filter(host=src, direction="outgoing").count() == 2
        assert MigrationSlot.objects.filter(host=dst, direction="incoming").count() == 2
        # Dispatching again changes nothing while both run.
        with django_capture_on_commit_callbacks(execute=True):
            assert slots.migrations_dispatch() == 0
        # The first ends: its slots go, and the waiting one gets them.
        with django_capture_on_commit_callbacks(execute=True):
            records.migration_finish(migration=migrations[0], status=S.ABORTED, outcome="test")
        migrations[2].refresh_from_db()
        assert migrations[2].job is not None and migrations[2].phase == "Waiting for a worker"
        assert migrations[2].job.queue_name == "migrations"
        assert len(monkey_jobs) == 3
    finally:
        core.jobs._submit = real_submit


def test_incoming_limit_counts_across_sources(db, world, settings, django_capture_on_commit_callbacks):
    settings.VMPORTAL_MAX_INCOMING = 1
    a, b, dst = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    vm_a, vm_b = make_vm(a, "one"), make_vm(b, "two")
    settings.VMPORTAL_JOBS_INLINE = False
    import core.jobs

    real_submit = core.jobs._submit
    core.jobs._submit = lambda *args: None
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first, second = request(vm_a, dst), request(vm_b, dst)
        first.refresh_from_db()
        second.refresh_from_db()
        assert first.job is not None and second.job is None
        assert "incoming slot on kvm-c" in second.phase
        assert not MigrationSlot.objects.filter(migration=second).exists()  # no half claim kept
    finally:
        core.jobs._submit = real_submit


def test_a_slot_index_is_claimed_once(two_hosts):
    src, dst, vm = two_hosts
    migration = request(vm, dst)
    MigrationSlot.objects.create(host=src, direction="outgoing", index=0, migration=migration)
    other = make_vm(src, "db-1")
    second = request(other, dst)
    with pytest.raises(IntegrityError), transaction.atomic():
        MigrationSlot.objects.create(host=src, direction="outgoing", index=0, migration=second)
    with pytest.raises(IntegrityError), transaction.atomic():
        MigrationSlot.objects.create(host=src, direction="outgoing", index=1, migration=migration)


def test_caller_claim_for_vm_migrate_wait(two_hosts, settings):
    settings.VMPORTAL_MAX_OUTGOING = 1
    src, dst, vm = two_hosts
    migration = live.migration_request(
        vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM, run_by_worker=False
    )
    assert slots.migrations_dispatch() == 0  # not the dispatcher's
    job = slots.migration_claim_for_caller(migration=migration)
    assert isinstance(job, Job) and job.status == "queued"
    other = live.migration_request(
        vm=make_vm(src, "db-1"), destination=dst, options=MigrationOptions(), actor=SYSTEM, run_by_worker=False
    )
    assert slots.migration_claim_for_caller(migration=other) is None
    other.refresh_from_db()
    assert "outgoing slot on kvm-a" in other.phase


def test_force_complete_only_for_a_running_live_migration(two_hosts):
    src, dst, vm = two_hosts
    migration = request(vm, dst)
    with pytest.raises(refusals.ServiceRefused, match="only a running live migration"):
        live.migration_force_complete(migration=migration, actor=SYSTEM)
    Migration.objects.filter(pk=migration.pk).update(status=S.MIGRATING)
    migration.refresh_from_db()
    live.migration_force_complete(migration=migration, actor=SYSTEM)
    live.migration_force_complete(migration=migration, actor=SYSTEM)
    migration.refresh_from_db()
    assert migration.force_complete_requests == 2
    assert AuditEvent.objects.filter(action="migration.force_complete", result="ok").count() == 2


def test_abort_of_a_running_migration_is_a_request_for_the_runner(two_hosts):
    src, dst, vm = two_hosts
    migration = request(vm, dst)
    Migration.objects.filter(pk=migration.pk).update(status=S.MIGRATING)
    live.migration_abort(migration=migration, actor=SYSTEM)
    live.migration_abort(migration=migration, actor=SYSTEM)  # twice: one request, one audit event
    migration.refresh_from_db()
    assert migration.status == S.MIGRATING and migration.abort_requested is not None
    assert AuditEvent.objects.filter(action="migration.abort").count() == 1
    Migration.objects.filter(pk=migration.pk).update(status=S.COMPLETING)
    migration.refresh_from_db()
    with pytest.raises(refusals.ServiceRefused, match="can no longer be aborted"):
        live.migration_abort(migration=migration, actor=SYSTEM)


def test_finish_is_conditional_so_a_race_keeps_the_first_result(two_hosts):
    src, dst, vm = two_hosts
    migration = request(vm, dst)
    assert records.migration_finish(migration=migration, status=S.ABORTED, outcome="first")
    assert not records.migration_finish(migration=migration, status=S.SUCCEEDED, outcome="second")
    migration.refresh_from_db()
    assert migration.status == S.ABORTED and migration.outcome == "first"


@pytest.mark.django_db(transaction=True)
def test_two_threads_requesting_at_once_exactly_one_proceeds(two_hosts):
    """Real concurrency. Shared-cache in-memory SQLite (the default test database) fails the
    second writer at once ("table is locked") instead of waiting, so this runs on PostgreSQL
    (tests/integration/test_postgres.py runs this file there)."""
    import threading

    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("needs a database where concurrent writers wait (PostgreSQL run)")
    src, dst, vm = two_hosts
    barrier = threading.Barrier(2)
    results = []

    def go():
        try:
            barrier.wait(timeout=10)
            results.append(("ok", request(vm, dst).pk))
        except refusals.ServiceRefused as exc:
            results.append(("refused", exc.message))
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(kind for kind, _ in results) == ["ok", "refused"], results
    assert Migration.objects.filter(vm_uuid=vm.uuid).count() == 1


def test_the_guests_row_follows_it_or_gives_way_to_the_destinations(two_hosts):
    from hosts.models import VirtualMachine
    from hosts.services import vm_relocate

    src, dst, vm = two_hosts
    moved = vm_relocate(vm_uuid=vm.uuid, source=src, destination=dst)
    assert moved.pk == vm.pk and moved.host_id == dst.pk
    # A refresh of the other host got there first: its row stays, the stale one goes.
    back_row = make_vm(src, "web-1", uuid=vm.uuid)
    kept = vm_relocate(vm_uuid=vm.uuid, source=src, destination=dst)
    assert kept.pk == vm.pk and not VirtualMachine.objects.filter(pk=back_row.pk).exists()
    assert vm_relocate(vm_uuid=vm.uuid, source=src, destination=dst).pk == vm.pk  # nothing left to move
