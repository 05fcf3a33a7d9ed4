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

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.utils import load_backend
from tests.fakes.fleet import make_host, make_vm

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


class Connections:
    """Runs callables in threads, each on its own connection to the database under test."""

    def __init__(self, settings_dict: dict | None):
        self.settings_dict = settings_dict  # None: the test database as configured

    def _connect(self) -> None:
        if self.settings_dict is not None:
            backend = load_backend(self.settings_dict["ENGINE"])
            connections["default"] = backend.DatabaseWrapper(dict(self.settings_dict), "default")

    def run(self, work: Callable[[], Any]) -> Any:
        """work() in a thread of its own; its result (or exception) comes back here."""
        return self.race([work])[0]

    def race(self, works: list[Callable[[], Any]]) -> list[Any]:
        """Start every work at once (a barrier); return each one's result or raised exception."""
        barrier = threading.Barrier(len(works))
        results: list[Any] = [None] * len(works)

        def go(i: int) -> None:
            self._connect()
            try:
                barrier.wait(timeout=10)
                results[i] = works[i]()
            except Exception as exc:  # the outcome of each request is what the test looks at
                results[i] = exc
            finally:
                connections["default"].close()

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(works))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a request never finished"
        return results


@pytest.fixture
def guests(db):
    """ROUNDS shut-off guests on kvm-a (each raced for once), kvm-b as the destination."""
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    return dst, [make_vm(src, f"web-{i}", state=VMStateChoices.SHUTOFF, state_reason="shutdown")
                 for i in range(ROUNDS)]


@pytest.fixture
def threads(guests, tmp_path, monkeypatch):
    """Where the racing requests run (created after ``guests``, so the file copy holds them)."""
    settings_dict = None
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        path = tmp_path / "race.sqlite3"
        connection.ensure_connection()
        copy = sqlite3.connect(path)
        connection.connection.backup(copy)
        # In WAL already, as the portal's file is after its first use: two connections both
        # switching a fresh file to WAL at the same moment is not the race under test.
        copy.execute("PRAGMA journal_mode=WAL")
        copy.close()
        settings_dict = {**connection.settings_dict, "NAME": str(path)}
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
    return Connections(settings_dict)


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

