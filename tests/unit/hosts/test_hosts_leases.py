"""One lease per guest (hosts/leases.py): claim, refusal naming the holder, release, reclaim."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone as dt_timezone
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.urls import reverse

from core.actors import Actor
from core.choices import AuditResultChoices, JobStatusChoices
from core.errors import ServiceRefused
from core.models import AuditEvent, Job
from hosts import leases
from hosts.choices import GuestLeaseKindChoices as K, HostAuthMethodChoices, HostStatusChoices
from hosts.leases import GuestBusy
from hosts.models import GuestLease, Host, VirtualMachine

pytestmark = pytest.mark.django_db

GUEST = uuid.UUID("6a1b0c52-5d3e-4f7a-9b1c-2d3e4f5a6b7c")


def _job(kind="vm.shutdown", status=JobStatusChoices.QUEUED) -> Job:
    return Job.objects.create(kind=kind, timeout_s=60, status=status)


def _alice() -> Actor:
    return Actor(user=get_user_model().objects.create_user(username="alice", password="x"))


def _claim(owner, *, guest=GUEST, kind=K.POWER_ACTION, actor=None, label="") -> GuestLease:
    with transaction.atomic():
        return leases.lease_claim(guest_uuid=guest, guest_name="web-1", kind=kind, owner=owner,
                                  actor=actor or Actor.system(), label=label)


# ---------------------------------------------------------------------------
# Which leases the sweep reclaims (pure table)

def _lease(pk, owner_id, label="live migration #%d"):
    return SimpleNamespace(pk=pk, owner_type_id=7, owner_id=owner_id, owner_label=label % owner_id)


@pytest.mark.parametrize(
    "owner_ended, reclaimed, reason",
    [
        ({(7, 1): False}, False, None),  # its owner still runs: kept, however old
        ({(7, 1): True}, True, "its owner live migration #1 ended without releasing it"),
        ({}, True, "its owner live migration #1 no longer exists"),
        ({(8, 1): False}, True, "its owner live migration #1 no longer exists"),  # same id, other model
    ],
)
def test_stale_leases(owner_ended, reclaimed, reason):
    stale = leases.stale_leases([_lease(1, 1)], owner_ended)
    assert [s.lease.pk for s in stale] == ([1] if reclaimed else [])
    assert [s.reason for s in stale] == ([reason] if reason else [])


def test_stale_leases_judges_each_lease_by_its_own_owner():
    stale = leases.stale_leases(
        [_lease(1, 1), _lease(2, 2), _lease(3, 3)], {(7, 1): False, (7, 2): True}
    )
    assert [s.lease.pk for s in stale] == [2, 3]


# ---------------------------------------------------------------------------
# Claiming and refusing

def test_a_claim_records_what_holds_the_guest_and_who_asked():
    job = _job()
    alice = _alice()
    lease = _claim(job, actor=alice, label="shut down job #%d" % job.pk)
    holder = leases.lease_holder(GUEST)
    assert holder.pk == lease.pk and holder.owner == job
    assert (holder.kind, holder.owner_label, holder.owner_url, holder.actor_label, holder.actor) == (
        K.POWER_ACTION, f"shut down job #{job.pk}", reverse("core:job_detail", args=[job.pk]), "alice", alice.user,
    )
    assert leases.lease_holder(uuid.uuid4()) is None


def test_the_default_label_is_the_kind_and_the_owners_number():
    job = _job()
    assert _claim(job, kind=K.COLD_MIGRATION).owner_label == f"cold migration #{job.pk}"


def test_a_second_claim_is_refused_with_one_message_naming_the_holder():
    first = _job()
    lease = _claim(first, kind=K.COLD_MIGRATION, actor=_alice())
    lease.since = datetime(2026, 12, 1, 11, 42, 3, tzinfo=dt_timezone.utc)
    lease.save(update_fields=["since"])
    second = _job()
    with pytest.raises(GuestBusy) as caught:
        _claim(second, kind=K.LIVE_MIGRATION)
    busy = caught.value
    assert isinstance(busy, ServiceRefused)
    assert busy.message == (
        f"web-1 is busy: cold migration #{first.pk} has held it since 2026-12-01 11:42:03 UTC, requested by alice."
    )
    assert busy.hint == (
        f"Follow cold migration #{first.pk} at {reverse('core:job_detail', args=[first.pk])}; "
        "web-1 is free again once it ends."
    )
    assert busy.holder.pk == lease.pk
    assert list(GuestLease.objects.values_list("owner_id", flat=True)) == [first.pk]


def test_a_refused_claim_leaves_the_callers_transaction_usable():
    _claim(_job())
    with transaction.atomic():
        mine = _job(kind="vm.start")
        with pytest.raises(GuestBusy):
            leases.lease_claim(guest_uuid=GUEST, guest_name="web-1", kind=K.POWER_ACTION, owner=mine,
                               actor=Actor.system())
        # The failed INSERT ran in a savepoint: the caller may go on (PostgreSQL would refuse otherwise).
        assert Job.objects.filter(pk=mine.pk).exists()


def test_other_guests_are_not_held():
    _claim(_job())
    other = uuid.uuid4()
    assert _claim(_job(), guest=other).guest_uuid == other


@pytest.mark.django_db(transaction=True)  # the usual test wraps everything in a transaction
def test_a_claim_outside_a_transaction_is_a_programming_error():
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside the transaction"):
        leases.lease_claim(guest_uuid=GUEST, guest_name="web-1", kind=K.POWER_ACTION, owner=_job(),
                           actor=Actor.system())
    assert not GuestLease.objects.exists()


def test_a_claim_rolls_back_with_the_request_that_made_it():
    class RequestFailed(Exception):
        pass

    with pytest.raises(RequestFailed), transaction.atomic():
        _claim(_job())
        raise RequestFailed
    assert leases.lease_holder(GUEST) is None


def test_a_refusal_is_audited_in_its_own_transaction_and_raised_again():
    holder = _job()
    _claim(holder)
    busy = None
    with pytest.raises(GuestBusy):
        try:
            with transaction.atomic():
                _claim(_job(kind="vm.start"))
        except GuestBusy as exc:
            busy = exc
            leases.lease_refused(exc, actor=Actor.system(), action="vm.start", target=None,
                                 parameters={"vm_uuid": str(GUEST)})
    event = AuditEvent.objects.get(action="vm.start")
    assert event.result == AuditResultChoices.REFUSED and event.message == busy.message
    assert event.parameters["vm_uuid"] == str(GUEST)
    assert event.parameters["held_by"]["owner"] == f"power action #{holder.pk}"
    assert event.parameters["held_by"]["kind"] == K.POWER_ACTION


# ---------------------------------------------------------------------------
# Releasing and reclaiming

def test_release_frees_the_guest_for_the_next_operation():
    first = _job()
    _claim(first)
    assert leases.lease_release(owner=_job()) == 0  # not the holder: nothing released
    assert leases.lease_holder(GUEST).owner_id == first.pk
    assert leases.lease_release(owner=first) == 1
    assert leases.lease_holder(GUEST) is None
    second = _job()
    assert _claim(second, kind=K.LIVE_MIGRATION).owner_id == second.pk


def test_reclaim_releases_leases_of_ended_or_vanished_owners_and_audits_each():
    running = _job(status=JobStatusChoices.RUNNING)
    ended = _job(status=JobStatusChoices.FAILED)
    vanished = _job()
    _claim(running, guest=uuid.uuid4())
    ended_lease = _claim(ended, guest=uuid.uuid4())
    vanished_lease = _claim(vanished, guest=uuid.uuid4())
    vanished.delete()

    assert leases.leases_reclaim() == 2
    assert list(GuestLease.objects.values_list("owner_id", flat=True)) == [running.pk]
    events = {e.target_id: e for e in AuditEvent.objects.filter(action="guest.lease_reclaimed")}
    assert set(events) == {str(ended_lease.pk), str(vanished_lease.pk)}
    assert events[str(ended_lease.pk)].message == (
        f"Lease on web-1 reclaimed: its owner power action #{ended.pk} ended without releasing it."
    )
    assert "no longer exists" in events[str(vanished_lease.pk)].message
    assert leases.leases_reclaim() == 0  # nothing left to do: no second audit row
    assert AuditEvent.objects.filter(action="guest.lease_reclaimed").count() == 2


# ---------------------------------------------------------------------------
# The guest's page shows the holder

def test_the_guests_page_shows_what_holds_it_with_a_link(viewer_client):
    host = Host.objects.create(name="kvm-a", address="192.0.2.10", auth_method=HostAuthMethodChoices.PORTAL_KEY,
                               status=HostStatusChoices.REACHABLE, host_key="ssh-ed25519 AAAA")
    vm = VirtualMachine.objects.create(host=host, uuid=GUEST, name="web-1", state="running")
    url = reverse("hosts:vm_detail", args=[host.pk, vm.uuid])
    assert 'id="guest-lease"' not in viewer_client.get(url).content.decode()

    job = _job()
    _claim(job, label=f"shut down job #{job.pk}")
    page = viewer_client.get(url).content.decode()
    assert 'id="guest-lease"' in page
    assert f'<a href="{reverse("core:job_detail", args=[job.pk])}">held by shut down job #{job.pk}</a>' in page
    assert "requested by system" in page


def test_the_guests_page_holds_its_buttons_back_while_another_operation_holds_it(operator_client):
    host = Host.objects.create(name="kvm-a", address="192.0.2.10", auth_method=HostAuthMethodChoices.PORTAL_KEY,
                               status=HostStatusChoices.REACHABLE, host_key="ssh-ed25519 AAAA")
    vm = VirtualMachine.objects.create(host=host, uuid=GUEST, name="web-1", state="running")
    url = reverse("hosts:vm_detail", args=[host.pk, vm.uuid])
    action_url = reverse("hosts:vm_action", args=[host.pk, vm.uuid, "shutdown"])
    free = operator_client.get(url).content.decode()
    assert f'href="{action_url}"' in free and 'id="migrate-button" href=' in free

    job = _job()
    _claim(job, label=f"shut down job #{job.pk}")
    held = operator_client.get(url).content.decode()
    assert f'href="{action_url}"' not in held
    assert 'id="migrate-button" disabled' in held
    assert f'title="web-1 is held by shut down job #{job.pk}; try again once it ends">Shut down</button>' in held


# ---------------------------------------------------------------------------
# Power actions: the job holds the guest until it ends, however it ends

def _guest(state="running") -> VirtualMachine:
    host = Host.objects.create(name="kvm-p", address="192.0.2.20", auth_method=HostAuthMethodChoices.PORTAL_KEY,
                               status=HostStatusChoices.REACHABLE, host_key="ssh-ed25519 AAAA")
    return VirtualMachine.objects.create(host=host, uuid=GUEST, name="web-1", state=state)


@pytest.mark.parametrize("ends", ["ok", "adapter error", "bug"])
def test_a_power_action_holds_the_guest_until_its_job_ends(monkeypatch, django_capture_on_commit_callbacks, ends):
    from hosts import inventory, services as host_services
    from hosts.adapters.errors import AdapterError

    def work(**_kwargs):
        holder = leases.lease_holder(GUEST)
        seen.append((holder.kind, holder.owner_label))  # held while the action runs
        if ends == "adapter error":
            raise AdapterError("The host said no.", hint="Look at the host.")
        if ends == "bug":
            raise KeyError("state")
        return {"state": "shutoff"}

    seen = []
    monkeypatch.setattr(inventory, "run_vm_action", work)
    vm = _guest()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = host_services.vm_action_request(vm=vm, action="shutdown", actor=Actor.system())
    with pytest.raises(GuestBusy, match=f"web-1 is busy: shut down job #{job.pk} has held it since"):
        host_services.vm_action_request(vm=vm, action="destroy", actor=Actor.system())
    assert AuditEvent.objects.get(action="vm.destroy").result == AuditResultChoices.REFUSED
    for callback in callbacks:
        callback()  # the job runs (inline)
    job.refresh_from_db()
    assert seen == [(K.POWER_ACTION, f"shut down job #{job.pk}")]
    assert job.status == (JobStatusChoices.SUCCEEDED if ends == "ok" else JobStatusChoices.FAILED)
    assert leases.lease_holder(GUEST) is None


def test_a_power_action_job_delivered_twice_does_not_free_the_guest_under_the_first(monkeypatch):
    from hosts.jobs import vm_action_job

    vm = _guest()
    job = _job(status=JobStatusChoices.RUNNING)  # the first delivery is running it
    _claim(job)
    vm_action_job(job.pk, vm.pk, "shutdown")  # the second one does not run it again
    assert leases.lease_holder(GUEST).owner_id == job.pk


def test_the_inventory_sweep_reclaims_leases_of_ended_jobs():
    from hosts.jobs import inventory_refresh_all

    _claim(_job(status=JobStatusChoices.ABORTED))  # its worker died; jobs_abort_stale said so
    inventory_refresh_all()
    assert leases.lease_holder(GUEST) is None


def test_a_power_action_whose_queued_job_the_queue_lost_frees_the_guest_at_the_next_sweep(settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone
    from rq.exceptions import NoSuchJobError

    from core import jobs as core_jobs
    from hosts.jobs import inventory_refresh_all

    settings.VMPORTAL_JOBS_INLINE = False
    job = _job()
    Job.objects.filter(pk=job.pk).update(rq_job_id="rq-lost", created=timezone.now() - timedelta(minutes=5))
    _claim(job)

    def fetch(rq_id, connection=None):
        raise NoSuchJobError(rq_id)

    monkeypatch.setattr(core_jobs.RQJob, "fetch", staticmethod(fetch))
    monkeypatch.setattr(core_jobs.django_rq, "get_connection", lambda name: None)
    inventory_refresh_all()
    job.refresh_from_db()
    assert job.status == JobStatusChoices.ABORTED
    assert leases.lease_holder(GUEST) is None


def test_the_migration_reconciler_reclaims_leases_of_ended_owners():
    from migrations_app import reconciler

    _claim(_job(status=JobStatusChoices.FAILED))
    assert reconciler.migrations_reconcile()["leases_reclaimed"] == 1
    assert leases.lease_holder(GUEST) is None


def test_an_image_repair_job_frees_the_guest_when_it_ends(monkeypatch):
    from migrations_app import jobs as migration_jobs, permissions

    def repair(**_kwargs):
        raise RuntimeError("the host went away")

    monkeypatch.setattr(permissions, "repair_image_permissions", repair)
    job = _job(kind="image.permissions")
    _claim(job, kind=K.IMAGE_REPAIR)
    migration_jobs.image_permissions_job(job.pk, 12345)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and leases.lease_holder(GUEST) is None


def test_an_image_repair_takes_the_guest_and_is_refused_while_another_operation_holds_it(monkeypatch):
    from migrations_app.models import MigrationPlan, PreflightRun
    from migrations_app.services import repairs

    monkeypatch.setattr("migrations_app.jobs.image_permissions_job", lambda job_id, run_id: None)
    dst = _guest().host
    plan = MigrationPlan.objects.create(vm_uuid=GUEST, vm_name="web-1", source=dst, options={})
    run = PreflightRun.objects.create(
        plan=plan, destination=dst, status="done", overall="fail",
        verdicts=[{"check": "storage", "status": "fail", "reason": "QEMU cannot open it", "fix": "chown",
                   "repairs": [["/var/lib/libvirt/images/web.qcow2", "0660"]]}],
    )
    moving = _job(kind="migration.cold")
    _claim(moving, kind=K.COLD_MIGRATION)
    with pytest.raises(GuestBusy, match=f"web-1 is busy: cold migration #{moving.pk}"):
        repairs.image_permissions_repair_request(run=run, actor=Actor.system())
    assert AuditEvent.objects.get(action="image.permissions.request").result == AuditResultChoices.REFUSED

    leases.lease_release(owner=moving)
    job = repairs.image_permissions_repair_request(run=run, actor=Actor.system())
    holder = leases.lease_holder(GUEST)
    assert (holder.kind, holder.owner, holder.owner_label) == (K.IMAGE_REPAIR, job, f"image permission repair job #{job.pk}")
