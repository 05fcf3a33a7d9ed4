"""Recovery over the fake fleet: the inventory keeps each guest's definition, a dead host's
shared-disk guests are defined and started elsewhere after the check, refusals are audited, the
old host's rows are marked, and a stale copy is noted and removed when the host comes back."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.choices import JobStatusChoices
from core.encryption import decrypt_secret
from core.errors import ServiceRefused
from core.models import AuditEvent
from hosts import services as host_services
from hosts.adapters.libvirt import DiskInfo
from hosts.choices import HostStatusChoices
from hosts.jobs import refresh_host_job
from hosts.models import GuestLease, VirtualMachine
from recovery import jobs, services, sweep
from recovery.choices import RecoveryItemStatusChoices as IS, RecoveryStatusChoices as RS
from recovery.models import RecoveryItem
from tests.fakes.fleet import make_domain
from tests.fakes.shell import fail

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()
DISK = "/shared/images/db-1.qcow2"


def refresh(host):
    job = host_services.host_refresh_request(host=host, actor=SYSTEM, enqueue=False)
    refresh_host_job(job.pk, host.pk)
    job.refresh_from_db()
    return job


@pytest.fixture
def dead(fleet):
    """kvm-a ran db-1 (disk on shared storage) and hb-1 (a local read-only disk), then died; kvm-b is fine."""
    fleet.add("kvm-a", address="192.0.2.21")
    fleet.add("kvm-b", address="192.0.2.22")
    a, b = fleet.host_row("kvm-a"), fleet.host_row("kvm-b")
    del fleet.hosts["kvm-a"], fleet.hosts["kvm-b"]
    db = make_domain("db-1", disks=[DiskInfo(target="vda", device="disk", source_type="file", source=DISK,
                                             protocol="", format="qcow2", readonly=False, shareable=False)])
    fa = fleet.adopt(a, db, make_domain("hb-1"))
    fb = fleet.adopt(b)
    fleet.hosts["nas"].write(DISK, "image of db-1")
    assert refresh(a).status == JobStatusChoices.SUCCEEDED and refresh(b).status == JobStatusChoices.SUCCEEDED
    fa.reachable = False  # the host and its QEMUs are gone
    del fa.domains[db.uuid]
    assert refresh(a).status == JobStatusChoices.FAILED
    a.refresh_from_db()
    assert a.status == HostStatusChoices.UNREACHABLE
    return {"a": a, "b": b, "fa": fa, "fb": fb, "db": db}


def test_the_refresh_keeps_each_guests_definition_encrypted(dead):
    vm = VirtualMachine.objects.get(host=dead["a"], name="db-1")
    assert "<domain" not in vm.definition_encrypted and vm.definition_at
    assert dead["db"].uuid in decrypt_secret(vm.definition_encrypted)


def test_a_definition_over_the_bound_is_not_stored(fleet, dead, monkeypatch):
    monkeypatch.setattr(VirtualMachine, "MAX_DEFINITION_CHARS", 100)
    info = make_domain("big", definition_xml="<domain>" + "x" * 200 + "</domain>")
    assert host_services._definition_fields(info) == {"definition_encrypted": "", "definition_at": None}


def test_dead_host_guest_is_started_elsewhere_and_the_old_row_marked(dead):
    a, fb, db = dead["a"], dead["fb"], dead["db"]
    plan = services.plan_for(a)
    assert [(m.name, m.destination) for m in plan.moves] == [("db-1", "kvm-b")]
    assert [x.name for x in plan.left] == ["hb-1"] and "not on shared storage" in plan.left[0].reason
    recovery = services.recovery_request(host=a, fencing_confirmed=True, actor=SYSTEM, enqueue=False)
    assert GuestLease.objects.get(guest_uuid=db.uuid).kind == "recovery"
    recovery = jobs.run_inline(recovery)
    assert recovery.status == RS.SUCCEEDED, (recovery.error, list(recovery.items.values("error")))
    assert fb.domains[db.uuid].state == "running" and ("define", db.uuid) in fb.calls
    assert not GuestLease.objects.exists()
    old = VirtualMachine.objects.get(host=a, uuid=db.uuid)
    assert old.superseded_at and f"recovered to kvm-b by recovery #{recovery.pk}" in old.superseded_note
    assert VirtualMachine.objects.get(host=dead["b"], uuid=db.uuid).state == "running"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"recovery.requested", "recovery.checked", "recovery.item_outcome", "recovery.outcome"} <= actions
    # Not twice: the plan now says it was replaced.
    assert "Already replaced" in services.plan_for(a).left[0].reason


@pytest.mark.parametrize("change, words", [
    (lambda d: setattr(d["a"], "status", HostStatusChoices.REACHABLE), "not unreachable"),
    (lambda d: None, "powered off"),
])
def test_refusals_are_audited_and_claim_nothing(dead, change, words):
    change(dead)
    with pytest.raises(ServiceRefused, match=words):
        services.recovery_request(host=dead["a"], fencing_confirmed=words != "powered off", actor=SYSTEM, enqueue=False)
    assert AuditEvent.objects.filter(action="recovery.requested", result="refused").exists()
    assert not GuestLease.objects.exists() and not RecoveryItem.objects.exists()


def test_a_host_that_still_answers_is_not_recovered(dead):
    dead["fa"].reachable = True  # marked unreachable, but it answers now
    recovery = jobs.run_inline(services.recovery_request(host=dead["a"], fencing_confirmed=True, actor=SYSTEM,
                                                         enqueue=False))
    assert recovery.status == RS.REFUSED and "answered over SSH" in recovery.error
    assert set(recovery.items.values_list("status", flat=True)) == {IS.SKIPPED}
    assert dead["db"].uuid not in dead["fb"].domains and not GuestLease.objects.exists()


def test_a_disk_locked_by_a_running_qemu_stops_that_guest(dead):
    dead["fb"].script(f"qemu-img info --output=json -- {DISK}",
                      fail([], 'qemu-img: Could not open: Failed to get shared "write" lock'))
    recovery = jobs.run_inline(services.recovery_request(host=dead["a"], fencing_confirmed=True, actor=SYSTEM,
                                                         enqueue=False))
    item = recovery.items.get()
    assert recovery.status == RS.FAILED and item.status == IS.FAILED and "locked by a running QEMU" in item.error
    assert dead["db"].uuid not in dead["fb"].domains


def test_the_old_hosts_stale_copy_is_noted_then_removed(dead):
    a, fa, db = dead["a"], dead["fa"], dead["db"]
    jobs.run_inline(services.recovery_request(host=a, fencing_confirmed=True, actor=SYSTEM, enqueue=False))
    # It comes back with the guest defined and shut off (its QEMU died with it, no autostart).
    fa.reachable = True
    fa.domains[db.uuid] = make_domain("db-1", uuid=db.uuid, state="shutoff", reason="crashed", disks=db.disks)
    refresh(a)
    assert sweep.recovery_sweep()["stale_noted"] == 1 and sweep.recovery_sweep()["stale_noted"] == 0
    item = RecoveryItem.objects.get()
    assert item.stale_state == "shutoff" and AuditEvent.objects.filter(action="recovery.stale_copy").count() == 1
    job = services.stale_remove_request(item=item, actor=SYSTEM, enqueue=False)
    jobs.stale_remove_job(job.pk, item.pk)
    item.refresh_from_db()
    assert item.stale_removed_at and db.uuid not in fa.domains
    assert not VirtualMachine.objects.filter(host=a, uuid=db.uuid).exists() and not GuestLease.objects.exists()


def test_a_stale_copy_that_runs_is_flagged_and_not_removed(dead):
    a, fa, db = dead["a"], dead["fa"], dead["db"]
    jobs.run_inline(services.recovery_request(host=a, fencing_confirmed=True, actor=SYSTEM, enqueue=False))
    fa.reachable = True
    fa.domains[db.uuid] = make_domain("db-1", uuid=db.uuid, disks=db.disks)  # running there too
    refresh(a)
    sweep.recovery_sweep()
    assert AuditEvent.objects.filter(action="recovery.stale_copy", result="failed").exists()
    with pytest.raises(ServiceRefused, match="runs twice"):
        services.stale_remove_request(item=RecoveryItem.objects.get(), actor=SYSTEM, enqueue=False)


def test_a_check_the_portal_could_not_make_is_no_proof(dead):
    dead["a"].auth_method = "portal_key"  # and the portal has no key pair: it cannot even try
    dead["a"].save()
    recovery = jobs.run_inline(services.recovery_request(host=dead["a"], fencing_confirmed=True, actor=SYSTEM,
                                                         enqueue=False))
    assert recovery.status == RS.REFUSED and "could not check kvm-a over SSH" in recovery.error


def test_the_plan_keeps_the_destination_within_its_budget(dead):
    from hosts.models import HostBudget

    VirtualMachine.objects.filter(host=dead["a"], name="db-1").update(memory_kib=1024 * 1024)
    HostBudget.objects.create(host=dead["b"], guest_memory_mib=64)  # less than db-1 has
    plan = services.plan_for(dead["a"])
    assert not plan.moves
    left = {x.name: x.reason for x in plan.left}
    assert "kvm-b's memory budget for guests (0.1 GiB)" in left["db-1"], left
    assert "python manage.py host_capacity kvm-b" in left["db-1"]
    HostBudget.objects.filter(host=dead["b"]).update(guest_memory_mib=None)  # back to the default: room again
    assert [(m.name, m.destination) for m in services.plan_for(dead["a"]).moves] == [("db-1", "kvm-b")]


def test_a_host_that_answers_again_before_a_guest_starts_stops_that_start(dead, monkeypatch):
    """The check proved kvm-a gone; it answers again before db-1's start: db-1 is not started."""
    from recovery import runner

    real_check = runner.run_check

    def check_then_host_returns(**kwargs):
        result = real_check(**kwargs)
        dead["fa"].reachable = True  # power came back between the check and the item
        return result

    monkeypatch.setattr(runner, "run_check", check_then_host_returns)
    recovery = jobs.run_inline(services.recovery_request(host=dead["a"], fencing_confirmed=True, actor=SYSTEM,
                                                         enqueue=False))
    item = recovery.items.get()
    assert recovery.status == RS.FAILED and item.status == IS.FAILED
    assert "kvm-a answered again before db-1 was started" in item.error, item.error
    assert dead["db"].uuid not in dead["fb"].domains and ("define", dead["db"].uuid) not in dead["fb"].calls
    assert not GuestLease.objects.exists()
