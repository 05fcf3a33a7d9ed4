"""Two requests of different kinds on one guest at the same moment: exactly one proceeds.

Real concurrency: each request runs in its own thread on its own database connection, as two
web requests would, released together by a barrier. The database (the lease's unique guest
UUID), not a query before the insert, decides who goes; the other gets GuestBusy naming it.

On PostgreSQL (tests/integration/test_postgres.py runs this file there) both requests are
also held inside their transactions, their own record inserted, until both are there, so
the two lease INSERTs really overlap: the second waits on the unique index, then fails.
On SQLite the default test database (shared-cache, in memory) fails a second writer at once
("table is locked") instead of waiting as the portal's SQLite file does, so the race runs
on a file copy of the test database with the portal's own SQLite settings (IMMEDIATE
transactions, busy timeout, WAL): there the second request waits for the first to commit.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from tests.fakes.fleet import make_host, make_vm
from tests.race_support import connections_for_race

from core.actors import Actor
from hosts import leases
from hosts.choices import GuestLeaseKindChoices as K, VMActionChoices, VMStateChoices
from hosts.leases import GuestBusy
from hosts.models import GuestLease
from hosts.services import vm_action_request
from migrations_app.models import ColdMigration, Migration
from migrations_app.options import MigrationOptions
from migrations_app.services import cold as cold_services, live as live_services

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 3
SYSTEM = Actor.system()


@pytest.fixture
def guests(db):
    """ROUNDS shut-off guests on kvm-a (each raced for once), kvm-b as the destination."""
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    return dst, [make_vm(src, f"web-{i}", state=VMStateChoices.SHUTOFF, state_reason="shutdown")
                 for i in range(ROUNDS)]


@pytest.fixture
def threads(guests, tmp_path, monkeypatch):
    """Where the racing requests run (created after ``guests``, so the file copy holds them)."""
    threads = connections_for_race(tmp_path)
    if connection.vendor == "postgresql":
        # Hold each request inside its transaction, its own record written, until the other
        # is there too: then both INSERT the lease at once.
        inside = threading.Barrier(2)
        claim = leases.lease_claim

        def claim_together(**kwargs):
            try:
                inside.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass  # the other request was refused before its transaction: nothing to wait for
            return claim(**kwargs)

        monkeypatch.setattr(leases, "lease_claim", claim_together)
    return threads


def live(vm, dst):
    return lambda: live_services.migration_request(
        vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM, run_by_worker=False
    )


def cold(vm, dst):
    return lambda: cold_services.cold_migration_request(vm=vm, destination=dst, actor=SYSTEM, run_by_worker=False)


def power(vm):
    return lambda: vm_action_request(vm=vm, action=VMActionChoices.START, actor=SYSTEM)


def _outcome(results):
    proceeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(proceeded) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], GuestBusy), repr(refused[0])
    return proceeded[0], refused[0]


def test_a_live_and_a_cold_migration_requested_at_once_exactly_one_proceeds(guests, threads):
    dst, vms = guests
    for vm in vms:  # which kind wins is the scheduler's choice: each round checks either outcome
        winner, busy = _outcome(threads.race([live(vm, dst), cold(vm, dst)]))
        kind = K.LIVE_MIGRATION if isinstance(winner, Migration) else K.COLD_MIGRATION

        def recorded(vm=vm):
            lease = GuestLease.objects.get(guest_uuid=vm.uuid)
            return (lease.kind, lease.owner_id, Migration.objects.filter(vm_uuid=vm.uuid).count(),
                    ColdMigration.objects.filter(vm_uuid=vm.uuid).count())

        lease_kind, owner_id, lives, colds = threads.run(recorded)
        # One record, holding the one lease; the refused request left nothing behind.
        assert (lease_kind, owner_id, lives + colds) == (kind, winner.pk, 1)
        assert busy.holder.owner_id == winner.pk and busy.holder.kind == kind
        assert f"{vm.name} is busy: {kind.label.lower()} #{winner.pk} has held it since" in busy.message
        assert winner.get_absolute_url() in busy.hint


def test_a_power_action_and_a_cold_migration_requested_at_once_exactly_one_proceeds(guests, threads, monkeypatch):
    from hosts import jobs as host_jobs

    monkeypatch.setattr(host_jobs, "vm_action_job", lambda *args: None)  # no host to start it on
    dst, vms = guests
    vm = vms[0]
    winner, busy = _outcome(threads.race([power(vm), cold(vm, dst)]))
    assert busy.holder.owner_id == winner.pk
    assert threads.run(lambda: GuestLease.objects.filter(guest_uuid=vm.uuid).count()) == 1

