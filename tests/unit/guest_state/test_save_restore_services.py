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
    VirtualDisk.objects.create(vm=vm, target="vda", source_type="file", source=DISK, storage="shared")
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
    assert state.disks == [{"path": DISK, "size": 16777216, "mtime_ns": 1700000000 * 10**9, "storage": "shared"}]
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


# --- Restore on another host: the guest must run nowhere, its disks must have been shared -----

@pytest.fixture
def onto_share(guest, fleet):
    """web-1 saved onto a share kvm-a exports and kvm-b mounts; kvm-b sees the file and the disk."""
    from storage.choices import ShareStatusChoices
    from storage.models import Share

    host, vm, fake = guest
    other = make_host("kvm-b")
    HostFacts.objects.create(host=other, hypervisor_version="8.0.0", machine_types=["pc-i440fx-7.2"])
    fake_b = fleet.adopt(other)
    share = Share.objects.create(server=host, export_path="/srv/states", mount_path="/mnt/states",
                                 status=ShareStatusChoices.READY)
    share.clients.add(other)
    state = services.save_request(vm=vm, share=share, actor=SYSTEM, enqueue=False)
    name = state.path.rsplit("/", 1)[1]
    fake.script(f"stat -L -c '%s %Y' -- {state.path}", ok([], "4096 1700000000\n"))
    fake.script(f"sha256sum -- {state.path}", ok([], f"{SHA}  file\n"))
    runner.run_save(state_id=state.pk, ctx=ctx_of(state))
    state.refresh_from_db()
    assert state.status == SS.SAVED, state.error
    seen_at = f"/mnt/states/{name}"
    fake_b.state_files[seen_at] = fake.state_files[state.path]
    fake_b.script(f"stat -L -c '%s %Y' -- {seen_at}", ok([], "4096 1700000000\n"))
    fake_b.script(f"sha256sum -- {seen_at}", ok([], f"{SHA}  file\n"))
    fake_b.script(f"stat -L -c '%s %Y' -- {DISK}", ok([], "16777216 1700000000\n"))
    return state, other, fake, fake_b


def restored(state, host):
    restore = services.restore_request(state=state, host=host, actor=SYSTEM, enqueue=False)
    runner.run_restore(restore_id=restore.pk, ctx=ctx_of(restore))
    restore.refresh_from_db()
    return restore


def test_restore_on_another_host_makes_it_the_guest_s_only_home(onto_share):
    state, other, fake, fake_b = onto_share
    uuid = str(state.vm_uuid)
    assert fake.domains[uuid].state == "shutoff" and fake.domains[uuid].persistent
    restore = restored(state, other)
    assert restore.status == RS.SUCCEEDED, restore.error
    assert restore.error == ""
    # Running and defined on kvm-b; the shut-off definition on kvm-a is gone: one home, as a migration leaves it.
    assert (fake_b.domains[uuid].state, fake_b.domains[uuid].persistent) == ("running", True)
    assert uuid not in fake.domains
    # The inventory row followed it (what points at it keeps pointing at the guest).
    assert state.vm.__class__.objects.get(uuid=uuid).host == other
    assert not GuestLease.objects.exists()


def test_restore_elsewhere_is_refused_while_the_guest_runs_where_it_was_saved(onto_share):
    state, other, fake, fake_b = onto_share
    uuid = str(state.vm_uuid)
    fake.set_state(uuid, "running", "booted")  # started again from its disk after the save
    restore = restored(state, other)
    assert restore.status == RS.FAILED
    assert "web-1 is running on kvm-a now" in restore.error and "second copy" in restore.error
    assert ("restore", f"/mnt/states/{state.path.rsplit('/', 1)[1]}") not in fake_b.calls
    assert uuid not in fake_b.domains


def test_restore_elsewhere_is_refused_while_the_saving_host_does_not_answer(onto_share):
    state, other, fake, fake_b = onto_share
    fake.reachable = False
    restore = restored(state, other)
    assert restore.status == RS.FAILED
    assert "kvm-a did not answer" in restore.error and "recover its guests" in restore.error
    assert str(state.vm_uuid) not in fake_b.domains


def test_restore_elsewhere_is_refused_for_a_disk_that_was_local_at_the_save(onto_share):
    state, other, fake, fake_b = onto_share
    state.disks = [{**state.disks[0], "storage": "local"}]
    state.save(update_fields=["disks"])
    restore = restored(state, other)
    assert restore.status == RS.FAILED
    assert f"Disk {DISK} was on kvm-a's local storage" in restore.error
    assert str(state.vm_uuid) not in fake_b.domains
