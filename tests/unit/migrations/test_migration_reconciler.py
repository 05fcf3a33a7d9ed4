"""Reconciling migrations whose worker died: who counts as dead, and what gets recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from migration_fakes import FakeDomain

from core.actors import Actor
from core.choices import JobStatusChoices
from core.jobs import job_enqueue
from core.models import AuditEvent, Job
from hosts.models import VirtualMachine
from migrations_app import reconciler
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.jobs import migration_job
from migrations_app.models import Migration, MigrationSample, MigrationSlot
from migrations_app.options import MigrationOptions
from migrations_app.services import live

pytestmark = pytest.mark.django_db

NOW = timezone.now()
STALE = timedelta(seconds=90)


def job(status=JobStatusChoices.RUNNING, **changes) -> Job:
    row = Job.objects.create(kind="migration.run", timeout_s=600, status=status, created=NOW - timedelta(minutes=5))
    for key, value in changes.items():
        setattr(row, key, value)
    row.save()
    return row


def migration_row(two_hosts, status, *, beat_age_s=1.0, job_row=None) -> Migration:
    src, dst, vm = two_hosts
    return Migration.objects.create(
        vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst, options={}, status=status,
        started=NOW - timedelta(minutes=5), heartbeat=NOW - timedelta(seconds=beat_age_s), job=job_row,
    )


@pytest.mark.parametrize(
    "status, job_status, beat_age, rq_state, lost",
    [
        (S.QUEUED, None, 999, None, None),  # waiting for a slot
        (S.QUEUED, JobStatusChoices.QUEUED, 999, None, None),  # waiting for a worker
        (S.QUEUED, JobStatusChoices.QUEUED, 999, "missing", "missing in the queue"),
        (S.QUEUED, JobStatusChoices.FAILED, 1, None, "ended (failed) before the migration started"),
        (S.MIGRATING, JobStatusChoices.RUNNING, 1, "started", None),
        (S.MIGRATING, JobStatusChoices.RUNNING, 300, "started", "no sign of life from its worker for 300 s"),
        (S.MIGRATING, JobStatusChoices.FAILED, 1, None, "ended as failed"),
        (S.CHECKING, JobStatusChoices.ABORTED, 1, None, "ended as aborted"),
        (S.COMPLETING, JobStatusChoices.RUNNING, 1, "failed", "failed in the queue"),
        (S.COMPLETING, None, 300, None, "no sign of life"),  # vm_migrate --wait that died
        (S.SUCCEEDED, JobStatusChoices.FAILED, 999, None, None),
    ],
)
def test_worker_lost_reason(two_hosts, status, job_status, beat_age, rq_state, lost):
    row = job(job_status) if job_status else None
    migration = migration_row(two_hosts, status, beat_age_s=beat_age, job_row=row)
    reason = reconciler.worker_lost_reason(migration, row, now=NOW, stale_after=STALE, rq_state=rq_state)
    if lost is None:
        assert reason is None
    else:
        assert lost in reason


def test_rq_state_is_not_asked_for_fresh_jobs_nor_inline(two_hosts, settings):
    row = job()
    assert reconciler.rq_job_state(row, now=NOW) is None  # in-process jobs (tests)
    settings.VMPORTAL_JOBS_INLINE = False
    fresh = Job.objects.create(kind="migration.run", timeout_s=600, rq_job_id="x")
    assert reconciler.rq_job_state(fresh, now=timezone.now()) is None  # may not be in Redis yet


def test_dead_worker_guest_on_destination_is_settled_as_succeeded(two_hosts, world, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    # The worker died mid-migration after libvirt finished: the guest runs on kvm-b.
    world.hosts["kvm-b"].domains[str(vm.uuid)] = world.hosts["kvm-a"].domains.pop(str(vm.uuid))
    world.hosts["kvm-b"].completed[str(vm.uuid)] = {"type": 3, "downtime": 55, "time_elapsed": 2100}
    migration = migration_row(two_hosts, S.MIGRATING, job_row=job(JobStatusChoices.FAILED, error="Work-horse terminated"))
    MigrationSample.objects.create(migration=migration, elapsed_ms=250, stats={"type": 2, "memory_total": 1, "memory_remaining": 0})
    MigrationSlot.objects.create(host=src, direction="outgoing", index=0, migration=migration)
    with django_capture_on_commit_callbacks(execute=True):
        found = reconciler.migrations_reconcile()
    assert found["reconciling"] == 1
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED
    assert "runs on kvm-b and is gone from kvm-a" in migration.outcome
    assert "Work-horse terminated" in migration.error  # why it had to be reconciled
    assert migration.downtime_ms == 55 and migration.total_time_ms == 2100
    assert not MigrationSlot.objects.exists()
    assert VirtualMachine.objects.get(uuid=vm.uuid).host_id == dst.pk
    event = AuditEvent.objects.get(action="migration.reconciled")
    assert event.result == "ok" and event.actor_label == "system"
    # Nothing left to do on the next pass.
    with django_capture_on_commit_callbacks(execute=True):
        assert reconciler.migrations_reconcile()["reconciling"] == 0


def test_dead_worker_guest_still_on_source_is_failed_or_aborted(two_hosts, world, django_capture_on_commit_callbacks):
    migration = migration_row(two_hosts, S.CHECKING, beat_age_s=500, job_row=job())
    Migration.objects.filter(pk=migration.pk).update(abort_requested=NOW)
    with django_capture_on_commit_callbacks(execute=True):
        reconciler.migrations_reconcile()
    migration.refresh_from_db()
    assert migration.status == S.ABORTED and "stayed on kvm-a" in migration.outcome


def test_a_migration_libvirt_still_runs_stays_active(two_hosts, world, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(reconciler, "JOB_END_WAIT_S", 0.0)
    src, dst, vm = two_hosts
    world.hosts["kvm-a"].job_active.add(str(vm.uuid))
    migration = migration_row(two_hosts, S.MIGRATING, beat_age_s=500, job_row=job())
    with django_capture_on_commit_callbacks(execute=True):
        reconciler.migrations_reconcile()
    migration.refresh_from_db()
    assert migration.status == S.MIGRATING
    assert "libvirt still reports a migration job" in migration.phase


def test_split_brain_needs_attention_then_reconcile_by_hand(two_hosts, world, operator_client,
                                                            django_capture_on_commit_callbacks):
    from django.urls import reverse

    src, dst, vm = two_hosts
    uuid = str(vm.uuid)
    world.hosts["kvm-b"].domains[uuid] = FakeDomain(uuid=uuid, name=vm.name)  # running on both
    migration = migration_row(two_hosts, S.MIGRATING, beat_age_s=500, job_row=job())
    with django_capture_on_commit_callbacks(execute=True):
        reconciler.migrations_reconcile()
    migration.refresh_from_db()
    assert migration.status == S.NEEDS_ATTENTION
    assert "Split brain" in migration.outcome and "virsh destroy" in migration.repair
    page = operator_client.get(reverse("migrations_app:migration_detail", args=[migration.pk])).content.decode()
    assert "Split brain" in page and 'id="reconcile-migration"' in page
    # The admin destroys the copy on kvm-b, then asks the portal to look again.
    del world.hosts["kvm-b"].domains[uuid]
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("migrations_app:migration_action", args=[migration.pk, "reconcile"]))
    migration.refresh_from_db()
    assert migration.status == S.FAILED and "stayed on kvm-a" in migration.outcome
    assert AuditEvent.objects.filter(action="migration.reconcile", actor_label="otto").exists()


def test_a_reconcile_is_queued_once_per_migration(two_hosts, world):
    migration = migration_row(two_hosts, S.MIGRATING, beat_age_s=500, job_row=job())
    first = live.migration_reconcile_request(migration=migration, actor=Actor.system(), reason="test")
    second = live.migration_reconcile_request(migration=migration, actor=Actor.system(), reason="test")
    assert first.pk == second.pk


def test_reconcile_hands_out_slots_too(two_hosts, world, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    assert migration.job is None  # its on-commit dispatch was not run here
    with django_capture_on_commit_callbacks(execute=True):
        assert reconciler.migrations_reconcile()["dispatched"] == 1
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED


def test_watch_hosts_loop_reconciles_at_start_and_periodically(db, monkeypatch, settings):
    from hosts import watcher as watcher_module
    from hosts.watcher import HostEventWatch

    # Closing connections would end the test's transaction (PostgreSQL takes that literally).
    monkeypatch.setattr(watcher_module, "close_old_connections", lambda: None)

    calls = []
    monkeypatch.setattr(reconciler, "migrations_reconcile", lambda: calls.append(1) or {"dispatched": 0, "reconciling": 0})
    settings.VMPORTAL_MIGRATION_RECONCILE_SECONDS = 30
    clock = {"t": 1000.0}

    class NoWatcher:
        def watch(self, *a, **k):
            pass

        def unwatch(self, uri):
            pass

        def close(self):
            pass

    watch = HostEventWatch(watcher=NoWatcher(), clock=lambda: clock["t"], full_refresh_s=10**6)
    watch.step(0)
    assert calls == [1]
    clock["t"] += 10
    watch.step(0)
    assert calls == [1]
    clock["t"] += 25
    watch.step(0)
    assert calls == [1, 1]


def test_watch_hosts_survives_a_failing_reconcile(db, monkeypatch):
    from hosts import watcher as watcher_module
    from hosts.watcher import HostEventWatch

    monkeypatch.setattr(watcher_module, "close_old_connections", lambda: None)

    def boom():
        raise RuntimeError("redis down")

    monkeypatch.setattr(reconciler, "migrations_reconcile", boom)
    watch = HostEventWatch(watcher=type("W", (), {"watch": lambda *a, **k: None, "unwatch": lambda *a: None,
                                                   "close": lambda self: None})(), full_refresh_s=10**6)
    watch.step(0)  # logged, not raised


def test_worker_reconciles_before_taking_jobs(monkeypatch):
    import rq

    from core.worker import PortalWorker

    order = []
    monkeypatch.setattr(reconciler, "migrations_reconcile", lambda: order.append("reconcile") or {"dispatched": 0, "reconciling": 1})
    monkeypatch.setattr(rq.Worker, "work", lambda self, *a, **k: order.append("work") or True)
    worker = object.__new__(PortalWorker)
    assert worker.work(burst=True) is True
    assert order == ["reconcile", "work"]


def test_worker_starts_even_if_reconciling_fails(monkeypatch):
    import rq

    from core.worker import PortalWorker

    def boom():
        raise RuntimeError("db down")

    monkeypatch.setattr(reconciler, "migrations_reconcile", boom)
    monkeypatch.setattr(rq.Worker, "work", lambda self, *a, **k: "worked")
    assert object.__new__(PortalWorker).work() == "worked"


def test_settings_select_the_reconciling_worker_class():
    from django.conf import settings
    from django_rq.workers import get_worker_class

    from core.worker import PortalWorker

    assert settings.RQ["WORKER_CLASS"] == "core.worker.PortalWorker"
    assert get_worker_class() is PortalWorker


def test_job_function_takes_ids(two_hosts, world):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    job_row = job_enqueue(kind="migration.run", func=migration_job, args=(migration.pk,), target=migration,
                          timeout_s=600, actor=Actor.system(), enqueue=False)
    migration_job(job_row.pk, migration.pk)
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED


def test_a_cold_migration_whose_worker_died_is_handed_to_the_cold_reconciler(two_hosts, monkeypatch,
                                                                              django_capture_on_commit_callbacks):
    from migrations_app.choices import ColdMigrationStatusChoices as C
    from migrations_app.models import ColdMigration

    src, dst, vm = two_hosts
    stale = ColdMigration.objects.create(
        vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst, status=C.COPYING,
        started=NOW - timedelta(minutes=30), heartbeat=NOW - timedelta(minutes=20), job=job(),
    )
    fresh = ColdMigration.objects.create(
        vm_uuid="6f1c8a52-0000-4000-8000-0000000000aa", vm_name="other", source=src, destination=dst,
        status=C.COPYING, started=NOW, heartbeat=timezone.now(), job=job(),
    )
    settled = []
    monkeypatch.setattr("migrations_app.jobs.cold_reconcile_job",
                        lambda job_id, cold_id, reason="": settled.append((cold_id, reason)))
    with django_capture_on_commit_callbacks(execute=True):
        found = reconciler.migrations_reconcile()
    assert found["reconciling"] == 1
    assert [cold_id for cold_id, _ in settled] == [stale.pk]
    assert "no sign of life" in settled[0][1]
    assert fresh.pk not in [cold_id for cold_id, _ in settled]
    # Asking again while that reconcile job is still queued does not queue a second one.
    Job.objects.filter(kind="migration.reconcile").update(status=JobStatusChoices.QUEUED)
    reconciler.migrations_reconcile()
    assert Job.objects.filter(kind="migration.reconcile", target_type="coldmigration").count() == 1
