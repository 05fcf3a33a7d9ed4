"""Save and restore over the fake fleet: refusals audited, the lease held from request to end,
the runner's record of size, checksum and disks, and a restore refused when a disk changed."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.errors import ServiceRefused
from core.jobs import JobContext
from core.models import AuditEvent
from hosts.choices import GuestLeaseKindChoices, VMStateChoices
from hosts.models import GuestLease, HostFacts, VirtualDisk
from guest_state import runner, services
from guest_state.choices import RestoreStatusChoices as RS, SavedStateStatusChoices as SS
from tests.fakes.fleet import make_host, make_vm
from tests.fakes.shell import ok

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()
DISK = "/shared/web-1.qcow2"
SHA = "ab" * 32


@pytest.fixture
def guest(fleet):
    host = make_host("kvm-a")
    HostFacts.objects.create(host=host, hypervisor_version="7.2.0", machine_types=["pc", "pc-i440fx-7.2"])
    vm = make_vm(host, "web-1")
    VirtualDisk.objects.create(vm=vm, target="vda", source_type="file", source=DISK)
    fake = fleet.adopt(host, fleet.guest_of(vm))
    fake.script("stat -L -c '%s %Y' -- /var/lib/vmportal-save/web-1", ok([], "4096 1700000000\n"))
    fake.script(f"stat -L -c '%s %Y' -- {DISK}", ok([], "16777216 1700000000\n"))
    fake.script("sha256sum -- /var/lib/vmportal-save/web-1", ok([], f"{SHA}  file\n"))
    return host, vm, fake


def ctx_of(state_or_restore):
    return JobContext(state_or_restore.job)


def test_save_request_claims_the_lease_and_audits(guest):
    _host, vm, _fake = guest
    state = services.save_request(vm=vm, directory="/var/lib/vmportal-save", note="before pg 16", actor=SYSTEM,
                                  enqueue=False)
    assert state.path.startswith("/var/lib/vmportal-save/web-1-")
    assert GuestLease.objects.get(guest_uuid=vm.uuid).kind == GuestLeaseKindChoices.SAVE
    assert AuditEvent.objects.filter(action="guest.save_requested", result="ok").exists()
    with pytest.raises(ServiceRefused, match="busy"):
        services.save_request(vm=vm, directory="/var/lib/vmportal-save", actor=SYSTEM, enqueue=False)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"directory": "/etc"}, "system directory"),
        ({"directory": "relative/dir"}, "absolute path"),
        ({"directory": "/srv/../etc"}, "'..'"),
        ({"directory": "/srv/" + "x" * 300}, "longer than"),
        ({"directory": ""}, "exactly one place"),
        ({"directory": "/srv/save", "note": "n" * 501}, "note is longer"),
    ],
)
def test_save_request_refusals_are_audited(guest, kwargs, words):
    _host, vm, _fake = guest
    with pytest.raises(ServiceRefused, match=words):
        services.save_request(vm=vm, actor=SYSTEM, enqueue=False, **kwargs)
    assert AuditEvent.objects.filter(action="guest.save_requested", result="refused").exists()
    assert not GuestLease.objects.exists()


def test_a_shut_off_guest_has_no_state_to_save(guest):
    _host, vm, _fake = guest
    vm.state = VMStateChoices.SHUTOFF
    vm.save()
    with pytest.raises(ServiceRefused, match="only a running or paused guest"):
        services.save_request(vm=vm, directory="/srv/save", actor=SYSTEM, enqueue=False)


def saved(guest):
    _host, vm, fake = guest
    state = services.save_request(vm=vm, directory="/var/lib/vmportal-save", actor=SYSTEM, enqueue=False)
    runner.run_save(state_id=state.pk, ctx=ctx_of(state))
    state.refresh_from_db()
    return state


def test_save_then_restore_on_the_same_host(guest):
    _host, vm, fake = guest
    state = saved(guest)
    assert (state.status, state.size, state.sha256, state.qemu_version) == (SS.SAVED, 4096, SHA, "7.2.0")
    assert state.disks == [{"path": DISK, "size": 16777216, "mtime_ns": 1700000000 * 10**9}]
    assert fake.domains[str(vm.uuid)].state == "shutoff"
    assert not GuestLease.objects.exists()
    restore = services.restore_request(state=state, paused=True, actor=SYSTEM, enqueue=False)
    assert GuestLease.objects.get().kind == GuestLeaseKindChoices.RESTORE
    runner.run_restore(restore_id=restore.pk, ctx=ctx_of(restore))
    restore.refresh_from_db()
    assert restore.status == RS.SUCCEEDED, restore.error
    assert fake.domains[str(vm.uuid)].state == "paused"
    assert not GuestLease.objects.exists()


def test_restore_refused_when_the_disk_changed(guest):
    _host, vm, fake = guest
    state = saved(guest)
    fake.script(f"stat -L -c '%s %Y' -- {DISK}", ok([], "16777216 1800000000\n"))
    restore = services.restore_request(state=state, actor=SYSTEM, enqueue=False)
    runner.run_restore(restore_id=restore.pk, ctx=ctx_of(restore))
    restore.refresh_from_db()
    assert restore.status == RS.FAILED
    assert "changed since the save" in restore.error
    assert ("restore", state.path) not in fake.calls
    assert AuditEvent.objects.filter(action="guest.restore_outcome", result="failed").exists()


def test_restore_elsewhere_without_a_share_is_refused(guest):
    state = saved(guest)
    other = make_host("kvm-b")
    with pytest.raises(ServiceRefused, match="does not see the state file"):
        services.restore_request(state=state, host=other, actor=SYSTEM, enqueue=False)


def test_cli_save_and_restore_wait(guest):
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from io import StringIO

    _host, vm, fake = guest
    out = StringIO()
    call_command("vm_save", "web-1", "--to", "/var/lib/vmportal-save", "--note", "before pg 16", "--wait", "--json",
                 stdout=out)
    saved_state = json.loads(out.getvalue())
    assert (saved_state["status"], saved_state["note"], saved_state["sha256"]) == ("saved", "before pg 16", SHA)
    out = StringIO()
    call_command("vm_restore", str(saved_state["id"]), "--wait", stdout=out)
    assert "Restored" in out.getvalue()
    assert fake.domains[str(vm.uuid)].state == "running"
    with pytest.raises(CommandError, match="No saved state"):
        call_command("vm_restore", "999999")
