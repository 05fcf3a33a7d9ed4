"""Snapshots over the fake fleet: taken with memory through the real adapter, the lease held from
request to end, refusals audited with the disk named, revert and delete confirmed, the records
following libvirt's list (a snapshot deleted with virsh is marked gone, one taken with virsh is
recorded), the guest page's card and the vm_snapshot command."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from core.actors import Actor
from core.choices import JobStatusChoices
from core.errors import ServiceRefused
from core.models import AuditEvent, Job
from guest_state import jobs, snapshot_services as services
from guest_state.choices import SnapshotStatusChoices as S
from guest_state.models import GuestSnapshot
from hosts.adapters import libvirt as lv
from hosts.choices import GuestLeaseKindChoices
from hosts.models import GuestLease, HostFacts, VirtualDisk, VirtualMachine
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()
DISK = "/shared/images/web-1.qcow2"


@pytest.fixture
def guest(fleet):
    host = make_host("kvm-a")
    HostFacts.objects.create(host=host, hypervisor_version="7.2.0", libvirt_version="9.0.0")
    vm = make_vm(host, "web-1")
    VirtualDisk.objects.create(vm=vm, target="vda", device="disk", source_type="file", source=DISK, format="qcow2")
    fake = fleet.adopt(host, fleet.guest_of(vm))
    return host, vm, fake


def take(vm, name="clean", note=""):
    snap = services.snapshot_request(vm=vm, name=name, note=note, actor=SYSTEM, enqueue=False)
    jobs.snapshot_create_job(snap.job_id, snap.pk)
    snap.refresh_from_db()
    return snap


def job_of(request, snap, *, revert: bool):
    job = request(snapshot=snap, confirmed=True, actor=SYSTEM, enqueue=False)
    (jobs.snapshot_revert_job if revert else jobs.snapshot_delete_job)(job.pk, snap.pk)
    job.refresh_from_db()
    snap.refresh_from_db()
    return job


def test_take_with_memory_claims_the_lease_and_audits(guest):
    _host, vm, fake = guest
    snap = services.snapshot_request(vm=vm, name="clean", note="for the <next> user", actor=SYSTEM, enqueue=False)
    lease = GuestLease.objects.get(guest_uuid=vm.uuid)
    assert lease.kind == GuestLeaseKindChoices.SAVE and snap.status == S.TAKING and snap.with_memory
    with pytest.raises(ServiceRefused, match="busy"):
        services.snapshot_request(vm=vm, name="other", actor=SYSTEM, enqueue=False)
    jobs.snapshot_create_job(snap.job_id, snap.pk)
    snap.refresh_from_db()
    assert snap.status == S.PRESENT, snap.error
    assert (snap.with_memory, snap.kind, snap.taken is not None, snap.checked is not None) == (True, "internal", True, True)
    made = fake.snapshots[str(vm.uuid)]["clean"]
    assert (made.memory, made.disks, made.description) == ("internal", {"vda": "internal"}, "for the <next> user")
    assert not GuestLease.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", "result"))
    assert {("guest.snapshot_requested", "ok"), ("guest.snapshot_outcome", "ok")} <= actions
    assert ("guest.snapshot_requested", "refused") in actions


def test_a_shut_off_guest_gets_a_disk_only_snapshot(guest):
    _host, vm, fake = guest
    fake.set_state(str(vm.uuid), "shutoff", "shutdown")
    VirtualMachine.objects.filter(pk=vm.pk).update(state="shutoff")
    snap = take(vm)
    assert (snap.status, snap.with_memory) == (S.PRESENT, False), snap.error
    assert fake.snapshots[str(vm.uuid)]["clean"].memory == "no"


@pytest.mark.parametrize("name, words", [
    ("", "Give the snapshot a name"), ("<b>x</b>", "letters, digits"), ("x" * 65, "at most 64"),
])
def test_bad_names_are_refused_and_audited(guest, name, words):
    _host, vm, _fake = guest
    with pytest.raises(ServiceRefused, match=words):
        services.snapshot_request(vm=vm, name=name, actor=SYSTEM, enqueue=False)
    assert AuditEvent.objects.filter(action="guest.snapshot_requested", result="refused").exists()
    assert not GuestSnapshot.objects.exists() and not GuestLease.objects.exists()


def test_a_raw_disk_is_refused_naming_the_disk(guest):
    _host, vm, _fake = guest
    VirtualDisk.objects.create(vm=vm, target="vdb", device="disk", source_type="file", source="/srv/data.img",
                               format="raw")
    with pytest.raises(ServiceRefused, match=r"Disk vdb \(/srv/data.img\) is raw.*qemu-img convert"):
        services.snapshot_request(vm=vm, name="clean", actor=SYSTEM, enqueue=False)
    assert not GuestSnapshot.objects.exists()


def test_the_job_judges_libvirts_truth_when_the_inventory_is_stale(guest, fleet):
    """The inventory says qcow2; libvirt's definition has a raw disk by now: the job refuses, names it."""
    _host, vm, fake = guest
    info = fake.domains[str(vm.uuid)]
    raw = lv.DiskInfo(target="vdb", device="disk", source_type="file", source="/srv/new.img", protocol="",
                      format="raw", readonly=False, shareable=False)
    fake.domains[str(vm.uuid)] = type(info)(**{**info.__dict__, "disks": [*info.disks, raw]})
    snap = take(vm)
    assert snap.status == S.FAILED and "Disk vdb (/srv/new.img) is raw" in snap.error
    assert "snapshot-create" not in [verb for verb, _uuid in fake.calls]
    assert not GuestLease.objects.exists()
    assert Job.objects.get(pk=snap.job_id).status == JobStatusChoices.FAILED


def test_a_duplicate_name_is_refused(guest):
    _host, vm, _fake = guest
    take(vm)
    with pytest.raises(ServiceRefused, match="already has a snapshot named clean"):
        services.snapshot_request(vm=vm, name="clean", actor=SYSTEM, enqueue=False)


def test_revert_confirmed_then_delete(guest):
    _host, vm, fake = guest
    snap = take(vm)
    fake.set_state(str(vm.uuid), "paused", "user")  # the guest moved on since
    with pytest.raises(ServiceRefused, match="the guest's current state is lost"):
        services.snapshot_revert_request(snapshot=snap, confirmed=False, actor=SYSTEM, enqueue=False)
    job = services.snapshot_revert_request(snapshot=snap, confirmed=True, actor=SYSTEM, enqueue=False)
    assert GuestLease.objects.get().kind == GuestLeaseKindChoices.RESTORE
    jobs.snapshot_revert_job(job.pk, snap.pk)
    job.refresh_from_db()
    snap.refresh_from_db()
    vm.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED, job.error
    assert fake.reverted == [(str(vm.uuid), "clean")] and fake.domains[str(vm.uuid)].state == "running"
    assert (snap.revert_count, vm.state) == (1, "running")
    assert not GuestLease.objects.exists()

    with pytest.raises(ServiceRefused, match="Confirm the deletion"):
        services.snapshot_delete_request(snapshot=snap, confirmed=False, actor=SYSTEM, enqueue=False)
    job = job_of(services.snapshot_delete_request, snap, revert=False)
    assert job.status == JobStatusChoices.SUCCEEDED and snap.status == S.DELETED
    assert fake.snapshots[str(vm.uuid)] == {} and not GuestLease.objects.exists()
    assert AuditEvent.objects.filter(action="guest.snapshot_delete", result="ok").count() == 2


def test_a_snapshot_deleted_with_virsh_is_marked_gone_and_one_taken_with_virsh_recorded(guest):
    _host, vm, fake = guest
    snap = take(vm)
    del fake.snapshots[str(vm.uuid)]["clean"]  # `virsh snapshot-delete` behind the portal's back
    with fleet_conn(fake) as conn:
        lv.create_snapshot(conn, str(vm.uuid), name="by virsh!", description="made by hand", memory=True)
    job = services.snapshot_check_request(vm=vm, actor=SYSTEM, enqueue=False)
    jobs.snapshot_check_job(job.pk, vm.pk)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED, job.error
    snap.refresh_from_db()
    assert snap.status == S.MISSING
    found = GuestSnapshot.objects.get(name="by virsh!")
    assert (found.made_here, found.status, found.note, found.with_memory) == (False, S.PRESENT, "made by hand", True)
    event = AuditEvent.objects.get(action="guest.snapshot_checked")
    assert "gone from libvirt: clean" in event.message and "taken outside the portal: by virsh!" in event.message
    with pytest.raises(ServiceRefused, match="nothing to revert to"):
        services.snapshot_revert_request(snapshot=snap, confirmed=True, actor=SYSTEM, enqueue=False)
    # Deleting the record of a snapshot libvirt no longer has: only the record goes.
    job = job_of(services.snapshot_delete_request, snap, revert=False)
    assert job.status == JobStatusChoices.SUCCEEDED and snap.status == S.DELETED
    assert AuditEvent.objects.filter(action="guest.snapshot_delete", parameters__already_gone=True).exists()


def test_the_sweep_checks_guests_whose_records_were_compared_long_ago_once(guest, settings):
    from datetime import timedelta

    from django.utils import timezone

    from guest_state.apps import check_snapshots

    host, vm, fake = guest
    snap = take(vm)
    assert snap.status == S.PRESENT and snap.checked is not None
    # Just compared: nothing is due.
    assert services.snapshots_check_due(older_than_s=300) == 0
    GuestSnapshot.objects.filter(pk=snap.pk).update(checked=timezone.now() - timedelta(seconds=301))
    other = make_vm(host, "web-2")  # a guest without snapshot records is never asked about
    assert services.snapshots_check_due(older_than_s=300) == 1
    job = Job.objects.get(kind="guest.snapshot_check")
    assert job.target_id == str(vm.pk) and job.target_id != str(other.pk)
    assert services.snapshots_check_due(older_than_s=300) == 0  # its check is queued already: not twice
    # The check it queued runs: a snapshot deleted behind the portal's back shows as gone.
    del fake.snapshots[str(vm.uuid)]["clean"]
    jobs.snapshot_check_job(job.pk, vm.pk)
    snap.refresh_from_db()
    assert snap.status == S.MISSING
    # A guest whose host cannot be contacted is left for later; the periodic entry point reads the setting.
    GuestSnapshot.objects.filter(pk=snap.pk).update(status=S.PRESENT, checked=timezone.now() - timedelta(days=1))
    host.status = "unreachable"
    host.save(update_fields=["status"])
    assert services.snapshots_check_due(older_than_s=300) == 0
    host.status = "reachable"
    host.save(update_fields=["status"])
    settings.VMPORTAL_GUEST_SNAPSHOT_RECONCILE_SECONDS = 300
    check_snapshots()
    assert Job.objects.filter(kind="guest.snapshot_check", status=JobStatusChoices.QUEUED).count() == 1


def test_revert_refused_by_the_job_when_libvirt_lost_it_meanwhile(guest):
    _host, vm, fake = guest
    snap = take(vm)
    job = services.snapshot_revert_request(snapshot=snap, confirmed=True, actor=SYSTEM, enqueue=False)
    fake.snapshots[str(vm.uuid)].clear()
    jobs.snapshot_revert_job(job.pk, snap.pk)
    job.refresh_from_db()
    snap.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "no longer has the snapshot clean" in job.error
    assert fake.reverted == [] and snap.status == S.MISSING and not GuestLease.objects.exists()
    assert AuditEvent.objects.filter(action="guest.snapshot_revert", result="failed").count() == 1


def fleet_conn(fake):
    import contextlib

    from tests.fakes.virt import FakeConnect

    return contextlib.nullcontext(FakeConnect(fake))


# --- the guest page's card -------------------------------------------------------------------------


def page_of(client, vm) -> str:
    return client.get(reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])).content.decode()


def test_card_lists_snapshots_with_revert_and_delete(operator_client, guest):
    _host, vm, _fake = guest
    take(vm, name="clean", note="before <the next> user")
    page = page_of(operator_client, vm)
    assert 'id="snapshot-form"' in page and 'id="snapshots-table"' in page
    assert "before &lt;the next&gt; user" in page and "the guest's current state is lost" in page
    assert "with memory" in page and "In libvirt" in page and "Take snapshot (with memory)" in page


def test_card_says_plainly_why_a_raw_disk_cannot_be_snapshotted(operator_client, guest):
    _host, vm, _fake = guest
    VirtualDisk.objects.filter(vm=vm).update(format="raw", source="/srv/<raw>.img")
    page = page_of(operator_client, vm)
    assert 'id="snapshot-refusal"' in page and "Disk vda (/srv/&lt;raw&gt;.img) is raw" in page
    assert 'id="snapshot-form"' not in page


def test_posting_the_card(operator_client, guest, django_capture_on_commit_callbacks):
    _host, vm, _fake = guest
    response = operator_client.post(reverse("guest_state:snapshot_create", args=[vm.pk]),
                                    {"name": "clean", "note": "n"})
    assert response.status_code == 302 and response["Location"].endswith("#snapshots")
    snap = GuestSnapshot.objects.get()
    jobs.snapshot_create_job(snap.job_id, snap.pk)
    response = operator_client.post(reverse("guest_state:snapshot_revert", args=[snap.pk]), {}, follow=True)
    assert "Confirm the revert of web-1 to clean" in response.content.decode()
    operator_client.post(reverse("guest_state:snapshot_revert", args=[snap.pk]), {"confirm": "on"})
    assert Job.objects.filter(kind="guest.snapshot_revert").exists()


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "x" * 5000])
def test_hostile_names_are_a_message_not_a_500(operator_client, guest, name):
    _host, vm, _fake = guest
    response = operator_client.post(reverse("guest_state:snapshot_create", args=[vm.pk]), {"name": name}, follow=True)
    body = response.content.decode()
    assert response.status_code == 200 and ("letters, digits" in body or "at most 64" in body)
    assert "<script>alert(1)" not in body and not GuestSnapshot.objects.exists()


def test_viewer_may_not_snapshot(viewer_client, guest):
    _host, vm, _fake = guest
    assert viewer_client.post(reverse("guest_state:snapshot_create", args=[vm.pk]), {"name": "x"}).status_code == 403
    assert 'id="snapshot-form"' not in page_of(viewer_client, vm)


# --- the command -----------------------------------------------------------------------------------


def test_cli_take_list_revert_delete(guest):
    _host, vm, fake = guest
    out = StringIO()
    call_command("vm_snapshot", "web-1", "--name", "clean", "--note", "fresh", "--json", stdout=out)
    made = json.loads(out.getvalue())
    assert (made["status"], made["with_memory"], made["note"], made["job_status"]) == ("present", True, "fresh",
                                                                                        "succeeded")
    out = StringIO()
    call_command("vm_snapshot", "web-1", "--list", "--json", stdout=out)
    assert [s["name"] for s in json.loads(out.getvalue())] == ["clean"]
    out = StringIO()
    call_command("vm_snapshot", "web-1", "--revert", "clean", stdout=out)
    assert "Revert to clean of web-1: Succeeded" in out.getvalue()
    call_command("vm_snapshot", "web-1", "--delete", "clean", stdout=StringIO())
    assert fake.snapshots[str(vm.uuid)] == {}
    out = StringIO()
    call_command("vm_snapshot", "web-1", "--list", stdout=out)
    assert "has no snapshots" in out.getvalue()
    with pytest.raises(CommandError, match="no snapshot named 'nope'"):
        call_command("vm_snapshot", "web-1", "--revert", "nope")
    with pytest.raises(CommandError, match="letters, digits"):
        call_command("vm_snapshot", "web-1", "--name", "a b")


def test_cli_as_a_viewer_is_refused(guest):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("vera", password="x-long-pass-9")
    user.groups.add(Group.objects.get_or_create(name="Viewer")[0])
    with pytest.raises(CommandError, match="does not hold the Operator role"):
        call_command("vm_snapshot", "web-1", "--name", "clean", "--as", "vera")
    call_command("vm_snapshot", "web-1", "--list", "--no-check", "--as", "vera", stdout=StringIO())


def test_a_lost_snapshot_job_ends_the_record_and_frees_the_guest(guest, django_capture_on_commit_callbacks):
    from core.jobs import job_lost

    _host, vm, _fake = guest
    snap = services.snapshot_request(vm=vm, name="clean", actor=SYSTEM, enqueue=False)
    assert GuestLease.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        job_lost(job_id=snap.job_id, reason="its work horse was killed")
    snap.refresh_from_db()
    assert snap.status == S.FAILED and "worker lost the job" in snap.error
    assert not GuestLease.objects.exists()
    assert Job.objects.filter(kind="guest.snapshot_check").exists()
