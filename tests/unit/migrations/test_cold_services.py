"""Cold-migration services: refusals (each audited), the request's record, job and audit row,
the end of a move (the inventory follows the guest only on success), and live migrations
refused while a cold one is under way.

The job is never run here: ``cold_migration_job`` is replaced by a recorder, so no host is
reached.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.actors import Actor
from core.models import AuditEvent, Job
from hosts.choices import GuestLeaseKindChoices, HostStatusChoices, VMStateChoices
from hosts.models import GuestLease, VirtualMachine
from hosts.services import ServiceRefused
from migrations_app import jobs, policy
from migrations_app.choices import (
    ColdMigrationStatusChoices as C,
    MigrationJobKindChoices,
    MigrationStatusChoices as S,
)
from migrations_app.models import ColdMigration, Migration
from migrations_app.options import MigrationOptions
from migrations_app.services import cold as cold_services, live
from storage.choices import ShareStatusChoices
from storage.models import Share
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def job_calls(monkeypatch):
    """What would have run: (job id, cold id) per call, instead of reaching hosts."""
    calls = []
    monkeypatch.setattr(jobs, "cold_migration_job", lambda job_id, cold_id: calls.append((job_id, cold_id)))
    return calls


@pytest.fixture
def hosts_and_guest(db):
    """kvm-a holds web-1, shut off; kvm-b is another host; kvm-c serves a share."""
    src, dst, third = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    vm = make_vm(src, "web-1", state=VMStateChoices.SHUTOFF, state_reason="shutdown")
    return src, dst, third, vm


@pytest.fixture
def share(hosts_and_guest):
    """kvm-c exports /srv/vm; kvm-a mounts it at /mnt/vm (kvm-b does not)."""
    src, _dst, third, _vm = hosts_and_guest
    s = Share.objects.create(server=third, export_path="/srv/vm", mount_path="/mnt/vm", status=ShareStatusChoices.READY)
    s.clients.add(src)
    return s


def request(vm, destination, **kwargs):
    return cold_services.cold_migration_request(vm=vm, destination=destination, actor=SYSTEM, **kwargs)


def assert_refused(vm, destination, message_has, hint_has="", **kwargs):
    """Refused with that message, audited as refused, and nothing created."""
    jobs_before = Job.objects.count()
    with pytest.raises(ServiceRefused) as refused:
        request(vm, destination, **kwargs)
    assert message_has in refused.value.message
    assert hint_has in refused.value.hint
    event = AuditEvent.objects.get(action="migration.cold.request")
    assert event.result == "refused" and event.message == refused.value.message
    assert event.target_type == "virtualmachine" and event.target_id == str(vm.pk)
    assert event.parameters["vm_uuid"] == str(vm.uuid) and event.parameters["destination"] == destination.name
    assert not ColdMigration.objects.filter(vm_uuid=vm.uuid, status=C.QUEUED).exists()
    assert Job.objects.count() == jobs_before
    return refused.value


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("state", [VMStateChoices.RUNNING, VMStateChoices.PAUSED, VMStateChoices.PMSUSPENDED,
                                   VMStateChoices.CRASHED])
def test_refused_unless_the_guest_is_shut_off(hosts_and_guest, state):
    _src, dst, _third, vm = hosts_and_guest
    VirtualMachine.objects.filter(pk=vm.pk).update(state=state)
    refused = assert_refused(vm, dst, f"web-1 is {state.label.lower()}; a cold migration moves a shut-off guest.")
    assert "live migration" in refused.hint


def test_refused_to_its_own_host_without_a_share(hosts_and_guest):
    src, _dst, _third, vm = hosts_and_guest
    assert_refused(vm, src, "already on kvm-a and no shared storage was chosen: nothing would move",
                   "Choose a share")


def test_refused_when_the_destination_does_not_mount_the_share(hosts_and_guest, share):
    _src, dst, _third, vm = hosts_and_guest
    assert_refused(vm, dst, "kvm-b does not mount the share kvm-c:/srv/vm.", "NFS wizard", share=share)
    assert AuditEvent.objects.get().parameters["share"] == "kvm-c:/srv/vm"


def test_refused_onto_a_share_its_own_host_does_not_mount(hosts_and_guest, share):
    src, dst, _third, vm = hosts_and_guest
    share.clients.set([dst])
    assert_refused(vm, src, "kvm-a does not mount the share kvm-c:/srv/vm.", share=share)


@pytest.mark.parametrize("status", [S.QUEUED, S.CHECKING, S.MIGRATING, S.COMPLETING])
def test_refused_while_a_live_migration_of_the_guest_is_active(hosts_and_guest, status):
    src, dst, third, vm = hosts_and_guest
    moving = live.migration_request(vm=vm, destination=third, options=MigrationOptions(), actor=SYSTEM,
                                    run_by_worker=False)
    Migration.objects.filter(pk=moving.pk).update(status=status)
    assert_refused(vm, dst, f"web-1 is busy: live migration #{moving.pk} has held it since",
                   f"Follow live migration #{moving.pk} at {moving.get_absolute_url()}")


@pytest.mark.parametrize("status", [C.QUEUED, C.CHECKING, C.COPYING, C.DEFINING, C.STARTING])
def test_refused_while_a_cold_migration_of_the_guest_is_active(hosts_and_guest, status):
    src, dst, third, vm = hosts_and_guest
    busy = request(vm, third)
    ColdMigration.objects.filter(pk=busy.pk).update(status=status)
    jobs_before = Job.objects.count()
    with pytest.raises(ServiceRefused, match=f"web-1 is busy: cold migration #{busy.pk} has held it since"):
        request(vm, dst)
    refusal = AuditEvent.objects.filter(action="migration.cold.request").order_by("pk").last()
    assert refusal.result == "refused" and refusal.parameters["held_by"]["owner"] == f"cold migration #{busy.pk}"
    assert list(ColdMigration.objects.values_list("pk", flat=True)) == [busy.pk]
    assert Job.objects.count() == jobs_before


@pytest.mark.parametrize("role", ["source", "destination"])
@pytest.mark.parametrize(
    "changes",
    [
        {"status": HostStatusChoices.PENDING_TRUST},
        {"status": HostStatusChoices.KEY_MISMATCH},
        {"host_key": ""},  # no pinned key: the portal may not log in
    ],
)
def test_refused_when_a_host_cannot_be_contacted(hosts_and_guest, role, changes):
    src, dst, _third, vm = hosts_and_guest
    host = src if role == "source" else dst
    type(host).objects.filter(pk=host.pk).update(**changes)
    dst.refresh_from_db()
    assert_refused(vm, dst, f"The {role} host {host.name} cannot be contacted", "Fix the host's connection")


def test_refused_to_a_host_in_maintenance(hosts_and_guest):
    _src, dst, _third, vm = hosts_and_guest
    type(dst).objects.filter(pk=dst.pk).update(in_maintenance=True)
    dst.refresh_from_db()
    assert_refused(vm, dst, "kvm-b is in maintenance.")


def test_a_host_in_maintenance_may_still_move_its_own_guests_disks(hosts_and_guest, share):
    src, _dst, _third, vm = hosts_and_guest
    type(src).objects.filter(pk=src.pk).update(in_maintenance=True)
    src.refresh_from_db()
    assert request(vm, src, share=share).same_host


# --------------------------------------------------------------------------- accepted requests


def test_request_creates_the_record_a_job_and_the_audit_row(hosts_and_guest, job_calls,
                                                            django_capture_on_commit_callbacks):
    src, dst, _third, vm = hosts_and_guest
    with django_capture_on_commit_callbacks(execute=True):
        cold = request(vm, dst, start=True, keep_source=True)
    cold.refresh_from_db()
    assert (cold.status, cold.vm_uuid, cold.vm_name, cold.source, cold.destination) == (
        C.QUEUED, vm.uuid, "web-1", src, dst)
    assert cold.start and cold.keep_source and cold.share is None and cold.run_by_worker
    assert cold.phase == "Waiting for a worker" and not cold.same_host
    job = cold.job
    assert job.kind == MigrationJobKindChoices.COLD_RUN
    assert (job.target_type, job.target_id) == ("coldmigration", str(cold.pk))
    assert job.timeout_s == policy.cold_job_timeout_s(64 * 2**30)  # the inventory lists no disk: generous
    assert job_calls == [(job.pk, cold.pk)]  # enqueued once the request committed
    event = AuditEvent.objects.get(action="migration.cold.request")
    assert event.result == "ok" and event.target_type == "coldmigration" and event.target_id == str(cold.pk)
    assert event.message == "Cold-migrate web-1 from kvm-a to kvm-b requested."
    assert event.parameters == {"vm_uuid": str(vm.uuid), "source": "kvm-a", "destination": "kvm-b", "share": None,
                                "start": True, "keep_source": True, "copy_bytes": 64 * 2**30,
                                "copy_bytes_basis": "no disk recorded in the inventory (never refreshed?), assuming "
                                                    "one of 64 GiB",
                                "timeout_s": job.timeout_s}


def _disk(vm, target, **fields):
    from hosts.models import VirtualDisk
    base = dict(device="disk", source_type="file", source=f"/var/lib/libvirt/images/{vm.name}-{target}.qcow2",
                format="qcow2", storage="local")
    return VirtualDisk.objects.create(vm=vm, target=target, **{**base, **fields})


def test_the_job_timeout_follows_the_recorded_disk_sizes(hosts_and_guest):
    """Each copied file counts with its recorded file size (the copy and both checksums read all of it);
    a cdrom and a network disk do not move and do not count."""
    _src, dst, _third, vm = hosts_and_guest
    _disk(vm, "vda", capacity_bytes=20 * 2**30, allocation_bytes=3 * 2**30, physical_bytes=3 * 2**30 + 2**20)
    _disk(vm, "vdb", format="raw", capacity_bytes=10 * 2**30, allocation_bytes=2**30, physical_bytes=10 * 2**30)
    _disk(vm, "sda", device="cdrom", source="/srv/iso/debian.iso", capacity_bytes=600 * 2**20)
    _disk(vm, "vdc", source_type="network", protocol="rbd", source="pool/web-1-data", storage="network")
    cold = request(vm, dst)
    copied = 3 * 2**30 + 2**20 + 10 * 2**30
    assert cold.job.timeout_s == policy.cold_job_timeout_s(copied) < policy.cold_job_timeout_s(64 * 2**30)
    event = AuditEvent.objects.get(action="migration.cold.request")
    assert (event.parameters["copy_bytes"], event.parameters["copy_bytes_basis"]) == (copied, "recorded sizes")


def test_a_disk_no_refresh_sized_is_assumed_and_the_audit_says_so(hosts_and_guest):
    _src, dst, _third, vm = hosts_and_guest
    _disk(vm, "vda", capacity_bytes=8 * 2**30, allocation_bytes=2**30, physical_bytes=2**30)
    _disk(vm, "vdb")  # never sized
    cold = request(vm, dst)
    assert cold.job.timeout_s == policy.cold_job_timeout_s(2**30 + policy.COLD_ASSUMED_DISK_BYTES)
    basis = AuditEvent.objects.get(action="migration.cold.request").parameters["copy_bytes_basis"]
    assert basis == "size of vdb unknown (no refresh recorded it), assuming 64 GiB"


def test_the_wizard_shows_the_sizes_and_what_it_assumes(hosts_and_guest, operator_client):
    from django.urls import reverse
    _src, _dst, _third, vm = hosts_and_guest
    _disk(vm, "vda", capacity_bytes=20 * 2**30, allocation_bytes=3 * 2**30, physical_bytes=3 * 2**30)
    _disk(vm, "vdb")  # never sized
    page = operator_client.get(reverse("migrations_app:cold_new", args=[vm.pk])).content.decode()
    assert "— file 3 GiB, 3 GiB used of 20 GiB" in page and "— size unknown" in page
    estimate = page[page.index('id="cold-estimate"'):]
    estimate = estimate[:estimate.index("</p>")]
    assert "The copy reads about <strong>67 GiB</strong> (2 files" in estimate
    assert "size of vdb unknown (no refresh recorded it), assuming 64 GiB" in estimate
    assert f"up to {policy.cold_job_timeout_s(67 * 2**30) // 3600} h" in estimate


def test_a_request_run_by_its_caller_is_not_enqueued(hosts_and_guest, job_calls, django_capture_on_commit_callbacks):
    _src, dst, _third, vm = hosts_and_guest
    with django_capture_on_commit_callbacks(execute=True):
        cold = request(vm, dst, run_by_worker=False, disk_bytes_hint=2**30)
    assert job_calls == []
    assert not cold.run_by_worker and cold.phase == "Waiting to start"
    assert Job.objects.get().pk == cold.job_id and cold.job.timeout_s == policy.cold_job_timeout_s(2**30)


def test_moving_a_guests_disks_onto_a_share_its_host_mounts(hosts_and_guest, share):
    src, _dst, _third, vm = hosts_and_guest
    cold = request(vm, src, share=share)
    assert cold.same_host and cold.share == share
    assert AuditEvent.objects.get(result="ok").message == "Cold-migrate web-1 onto kvm-c:/srv/vm requested."


def test_onto_a_share_the_destination_serves(hosts_and_guest, share):
    _src, _dst, third, vm = hosts_and_guest
    assert request(vm, third, share=share).share == share


def test_a_finished_cold_migration_does_not_block_the_next(hosts_and_guest):
    src, dst, third, vm = hosts_and_guest
    for status in (C.SUCCEEDED, C.FAILED, C.NEEDS_ATTENTION):
        ColdMigration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=third,
                                     status=status)
    Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=third, options={},
                             status=S.SUCCEEDED)
    assert request(vm, dst).status == C.QUEUED


def test_the_database_allows_one_active_cold_migration_per_guest(hosts_and_guest):
    """The guest's lease (a unique row per guest UUID) is what the database enforces."""
    src, dst, _third, vm = hosts_and_guest
    first = request(vm, dst)
    with pytest.raises(IntegrityError), transaction.atomic():
        GuestLease.objects.create(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.COLD_MIGRATION,
                                  owner=first, owner_label="a second claim", actor_label="system")


@pytest.mark.parametrize(
    "disk_bytes, seconds",
    [(0, 900), (20 * 2**20, 903), (64 * 2**30, 900 + 3 * 64 * 1024 // 20)],
)
def test_cold_job_timeout_allows_a_slow_copy_and_both_checksums(disk_bytes, seconds):
    assert policy.cold_job_timeout_s(disk_bytes) == seconds


# --------------------------------------------------------------------------- the end of a move


def running(cold: ColdMigration) -> ColdMigration:
    ColdMigration.objects.filter(pk=cold.pk).update(status=C.COPYING, started=timezone.now())
    cold.refresh_from_db()
    return cold


def test_success_moves_the_inventory_row_to_the_destination(hosts_and_guest):
    src, dst, _third, vm = hosts_and_guest
    cold = running(request(vm, dst))
    assert cold_services.cold_finish(cold=cold, status=C.SUCCEEDED, outcome="Defined on kvm-b.") is True
    vm.refresh_from_db()
    assert vm.host == dst and VirtualMachine.objects.filter(uuid=vm.uuid).count() == 1
    cold.refresh_from_db()
    assert cold.status == C.SUCCEEDED and cold.phase == "Done" and cold.ended and cold.total_seconds is not None
    event = AuditEvent.objects.get(action="migration.cold.outcome")
    assert event.result == "ok" and event.job_id == cold.job_id and "Defined on kvm-b." in event.message


@pytest.mark.parametrize("status, phase, result", [
    (C.FAILED, "Failed", "failed"), (C.NEEDS_ATTENTION, "Needs attention", "failed"),
])
def test_failure_leaves_the_inventory_row_on_the_source(hosts_and_guest, status, phase, result):
    src, dst, _third, vm = hosts_and_guest
    cold = running(request(vm, dst))
    assert cold_services.cold_finish(cold=cold, status=status, outcome="Still on kvm-a.", error="copy failed",
                                rollback=[{"step": "remove the copy", "ok": True}]) is True
    vm.refresh_from_db()
    assert vm.host == src
    cold.refresh_from_db()
    assert (cold.status, cold.phase, cold.error) == (status, phase, "copy failed")
    assert cold.rollback == [{"step": "remove the copy", "ok": True}]
    assert AuditEvent.objects.get(action="migration.cold.outcome").result == result


def test_success_onto_a_share_on_its_own_host_keeps_the_row_there(hosts_and_guest, share):
    src, _dst, _third, vm = hosts_and_guest
    cold = running(request(vm, src, share=share))
    assert cold_services.cold_finish(cold=cold, status=C.SUCCEEDED, outcome="Disks on the share.") is True
    vm.refresh_from_db()
    assert vm.host == src


def test_finishing_twice_changes_nothing_the_second_time(hosts_and_guest):
    src, dst, _third, vm = hosts_and_guest
    cold = running(request(vm, dst))
    assert cold_services.cold_finish(cold=cold, status=C.FAILED, outcome="Still on kvm-a.") is True
    stale = ColdMigration.objects.get(pk=cold.pk)
    assert cold_services.cold_finish(cold=stale, status=C.SUCCEEDED, outcome="Defined on kvm-b.") is False
    stale.refresh_from_db()
    vm.refresh_from_db()
    assert stale.status == C.FAILED and stale.outcome == "Still on kvm-a." and vm.host == src
    assert AuditEvent.objects.filter(action="migration.cold.outcome").count() == 1


# --------------------------------------------------------------------------- live while cold


def test_a_live_migration_is_refused_while_a_cold_one_is_active(hosts_and_guest):
    _src, dst, third, vm = hosts_and_guest
    cold = request(vm, third)
    with pytest.raises(ServiceRefused) as refused:
        live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM)
    assert f"web-1 is busy: cold migration #{cold.pk} has held it since" in refused.value.message
    assert AuditEvent.objects.get(action="migration.request").result == "refused"
    assert not Migration.objects.exists()


def test_a_live_migration_is_accepted_once_the_cold_one_ended(hosts_and_guest):
    _src, dst, third, vm = hosts_and_guest
    cold = running(request(vm, third))
    cold_services.cold_finish(cold=cold, status=C.FAILED, outcome="Still on kvm-a.")
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM,
                                           run_by_worker=False)
    assert migration.status == S.QUEUED


def test_starting_a_guest_being_cold_migrated_is_refused(django_capture_on_commit_callbacks):
    from hosts.choices import VMActionChoices
    from hosts.services import vm_action_request

    src, dst = make_host("kvm-start-a"), make_host("kvm-start-b")
    vm = make_vm(src, "moving", state=VMStateChoices.SHUTOFF)
    with django_capture_on_commit_callbacks(execute=False):
        cold = cold_services.cold_migration_request(vm=vm, destination=dst, actor=Actor.system(), run_by_worker=False)
    with pytest.raises(ServiceRefused) as refused:
        vm_action_request(vm=vm, action=VMActionChoices.START, actor=Actor.system())
    assert f"moving is busy: cold migration #{cold.pk} has held it since" in refused.value.message
    assert cold.get_absolute_url() in refused.value.hint
