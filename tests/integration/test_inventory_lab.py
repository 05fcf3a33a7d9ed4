"""The inventory against the real lab: onboarding, facts, guests, actions, events, key pinning.

Django side for real down to libvirtd/sshd in the lab's namespaces; jobs run in-process
(test settings) right after each commit, as a worker would run them.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import pytest
from django.core.management import call_command

from core.actors import Actor
from core.choices import AuditResultChoices, JobStatusChoices
from core.models import AuditEvent
from hosts import access, inventory, services
from hosts.adapters import libvirt as libvirt_adapter
from hosts.adapters.ssh import HostKeyInfo, generate_keypair
from hosts.choices import HostAuthMethodChoices, HostStatusChoices, VMStateChoices
from hosts.management.commands.lab_onboard import onboard_lab_host
from hosts.models import Host, VirtualMachine
from hosts.services import HostConnection
from hosts.inventory_page import duplicate_flags
from hosts.watcher import HostEventWatch
from lab_support import refresh, sh

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def wait_for(predicate, *, timeout: float, what: str, step=None):
    """Poll predicate (running step() between polls, if given) until true or the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        value = predicate()
        if value:
            return value
        if not step:
            threading.Event().wait(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def onboarded(lab):
    """Every lab host in the inventory (trusted, refreshed once)."""
    hosts = {}
    for entry in lab["hosts"]:
        host, created = onboard_lab_host(entry, actor=Actor.system())
        assert created
        host.refresh_from_db()
        hosts[entry["name"]] = host
    return hosts


def running_guest(lab_now, prefer: str) -> tuple[str, str]:
    """(host, guest) of a running heartbeat guest, on ``prefer`` if it has one: earlier modules
    (maintenance, balancing, decommissioning) move the lab's guests between hosts."""
    for entry in sorted(lab_now["hosts"], key=lambda h: h["name"] != prefer):
        running = sorted(name for name, state in entry["guest_states"].items() if state == "running")
        if running:
            return entry["name"], running[0]
    pytest.fail("no heartbeat guest runs on any lab host")


@contextlib.contextmanager
def direct(host: Host):
    """A libvirt connection of our own (a session of its own), to act behind the portal's back."""
    with access.open_session(host) as session:
        yield session.libvirt


def test_onboarding_gathers_facts_and_guests(lab_now, onboarded):
    for entry in lab_now["hosts"]:  # where the guests are now, not when the lab came up
        host = onboarded[entry["name"]]
        assert host.status == HostStatusChoices.REACHABLE, host.last_error
        assert host.last_seen is not None
        facts = host.facts
        assert facts.hostname == entry["name"]
        assert facts.host_uuid == entry["host_uuid"]
        assert facts.os_pretty_name  # read over SSH from os-release
        assert facts.arch == "x86_64" and facts.cpus >= 1
        assert "qemu" in facts.domain_types
        assert facts.hypervisor == "QEMU" and facts.libvirt_version.count(".") == 2
        assert 0 < facts.memory_free_kib <= facts.memory_total_kib
        assert set(entry["guests"]) <= set(host.vms.values_list("name", flat=True))
    # Distinct lab hosts: nothing flagged as a duplicate identity.
    assert duplicate_flags(Host.objects.all()) == {}

    guest = VirtualMachine.objects.filter(name__startswith="hb-").select_related("host").first()
    assert guest.domain_type == "qemu" and guest.memory_kib == 64 * 1024 and guest.persistent
    disk = guest.disks.get(device="disk")
    assert disk.readonly and disk.format == "raw" and disk.source
    assert disk.storage in ("local", "shared") and disk.storage_fstype  # placed by findmnt over SSH


def _domblkinfo(entry: dict, uuid: str, target: str) -> dict[str, int]:
    """``virsh domblkinfo`` on the host itself: {"Capacity": …, "Allocation": …, "Physical": …} in bytes."""
    out = sh(entry, ["virsh", "-c", "qemu:///system", "domblkinfo", uuid, target], check=True).stdout
    return {k.strip(): int(v) for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def _image_info(entry: dict, path: str) -> dict:
    # -U: the image is open in a running QEMU, which holds its lock.
    return json.loads(sh(entry, ["qemu-img", "info", "-U", "--output=json", path], check=True).stdout)


def _assert_sizes_as_the_host_reports(entry: dict, vm: VirtualMachine) -> int:
    checked = 0
    for disk in vm.disks.all():
        if disk.device != "disk" or disk.source_type != "file" or not disk.source:
            continue
        image, blk = _image_info(entry, disk.source), _domblkinfo(entry, str(vm.uuid), disk.target)
        size = int(sh(entry, ["stat", "-c", "%s", disk.source], check=True).stdout)
        assert disk.capacity_bytes == image["virtual-size"] == blk["Capacity"], (vm.name, disk.target, image, blk)
        assert disk.physical_bytes == blk["Physical"] == size, (vm.name, disk.target, blk, size)
        assert disk.allocation_bytes is not None and 0 <= disk.allocation_bytes <= max(size, disk.capacity_bytes)
        checked += 1
    return checked


def test_refresh_records_each_disks_size_as_the_host_reports_it(lab_now, onboarded):
    """Capacity and file size from the one bulk stats call equal qemu-img's and virsh domblkinfo's,
    for a running guest and, after it is forced off, a shut-off one."""
    checked = 0
    for entry in lab_now["hosts"]:
        host = onboarded[entry["name"]]
        refresh(host)
        for vm in VirtualMachine.objects.filter(host=host).prefetch_related("disks"):
            checked += _assert_sizes_as_the_host_reports(entry, vm)
    assert checked, "no file-backed disk on any lab guest"
    host_name, name = running_guest(lab_now, "labh1")
    entry = next(h for h in lab_now["hosts"] if h["name"] == host_name)
    vm = VirtualMachine.objects.get(host=onboarded[host_name], name=name)
    with direct(vm.host) as conn:
        libvirt_adapter.destroy_domain(conn, str(vm.uuid))
    try:
        refresh(vm.host)
        vm = VirtualMachine.objects.prefetch_related("disks").get(pk=vm.pk)
        assert vm.state == VMStateChoices.SHUTOFF
        assert _assert_sizes_as_the_host_reports(entry, vm)
    finally:
        with direct(vm.host) as conn:
            if libvirt_adapter.get_domain(conn, str(vm.uuid)).state != "running":
                libvirt_adapter.start_domain(conn, str(vm.uuid))


def test_commands_against_the_lab(onboarded):
    out = io.StringIO()
    call_command("inventory_refresh", "--wait", stdout=out)
    for name in onboarded:
        assert f"{name}: ok" in out.getvalue()
    out = io.StringIO()
    call_command("vm_list", "--json", stdout=out)
    listed = {(row["host"], row["name"]) for row in json.loads(out.getvalue())}
    assert {(vm.host.name, vm.name) for vm in VirtualMachine.objects.select_related("host")} == listed


def test_force_off_and_start_a_heartbeat_guest(lab_now, onboarded):
    host_name, name = running_guest(lab_now, "labh1")
    vm = VirtualMachine.objects.get(host=onboarded[host_name], name=name)
    try:
        job = services.vm_action_request(vm=vm, action="destroy", actor=Actor.system())
        job.refresh_from_db()
        vm.refresh_from_db()
        assert job.status == JobStatusChoices.SUCCEEDED, job.error
        assert (vm.state, vm.state_reason) == (VMStateChoices.SHUTOFF, "destroyed")
        with direct(vm.host) as conn:
            assert libvirt_adapter.get_domain(conn, str(vm.uuid)).state == "shutoff"
    finally:
        job = services.vm_action_request(vm=vm, action="start", actor=Actor.system())
    job.refresh_from_db()
    vm.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED, job.error
    assert vm.state == VMStateChoices.RUNNING
    results = list(AuditEvent.objects.filter(target_id=str(vm.pk)).values_list("action", "result"))
    assert results.count(("vm.destroy", "ok")) == 2 and results.count(("vm.start", "ok")) == 2


def test_shutdown_of_a_guest_that_ignores_acpi_is_reported(lab_now, onboarded, monkeypatch):
    # The heartbeat guest is a boot sector: it never answers ACPI power-off.
    monkeypatch.setattr(inventory, "SHUTDOWN_WAIT_S", 3.0)
    host_name, name = running_guest(lab_now, "labh2")
    vm = VirtualMachine.objects.get(host=onboarded[host_name], name=name)
    job = services.vm_action_request(vm=vm, action="shutdown", actor=Actor.system())
    job.refresh_from_db()
    vm.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED
    assert "still running" in job.error and "Force off" in job.error_hint
    assert vm.state == VMStateChoices.RUNNING


def test_lifecycle_event_reaches_the_database_through_the_watcher(lab_now, onboarded):
    host_name, name = running_guest(lab_now, "labh3")
    host = onboarded[host_name]
    vm = VirtualMachine.objects.get(host=host, name=name)
    watch = HostEventWatch(debounce_s=0.3)
    try:
        wait_for(lambda: watch.peers and all(p.connected for p in watch.peers.values()), timeout=30,
                 what="event connections to every lab host", step=lambda: watch.step(0.1))
        wait_for(lambda: not watch.pending, timeout=30, what="the catch-up refreshes", step=lambda: watch.step(0.1))
        with direct(host) as conn:
            libvirt_adapter.destroy_domain(conn, str(vm.uuid))
        # The change is only known through the event: nothing else refreshes the host here.
        wait_for(lambda: host.pk in watch.pending, timeout=15, what="the lifecycle event", step=lambda: watch.step(0.05))
        wait_for(lambda: VirtualMachine.objects.get(pk=vm.pk).state == VMStateChoices.SHUTOFF, timeout=30,
                 what=f"{name} to show as shut off", step=lambda: watch.step(0.1))
        with direct(host) as conn:
            libvirt_adapter.start_domain(conn, str(vm.uuid))
        wait_for(lambda: VirtualMachine.objects.get(pk=vm.pk).state == VMStateChoices.RUNNING, timeout=30,
                 what=f"{name} to show as running again", step=lambda: watch.step(0.1))
    finally:
        watch.watcher.close()
        with direct(host) as conn:
            if libvirt_adapter.get_domain(conn, str(vm.uuid)).state != "running":
                libvirt_adapter.start_domain(conn, str(vm.uuid))


def test_changed_host_key_is_refused_and_audited(onboarded):
    host = onboarded["labh1"]
    _, other_public = generate_keypair()
    other = HostKeyInfo.from_openssh(other_public)
    Host.objects.filter(pk=host.pk).update(host_key=other.openssh, host_key_fingerprint=other.fingerprint)
    host.refresh_from_db()
    job = services.host_refresh_request(host=host, actor=Actor.system())
    job.refresh_from_db()
    host.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED
    assert "does not match the pinned key" in job.error and other.fingerprint in job.error
    assert host.status == HostStatusChoices.KEY_MISMATCH
    event = AuditEvent.objects.get(action="host.key_mismatch", target_id=str(host.pk))
    assert event.result == AuditResultChoices.REFUSED and event.job_id == job.pk


def test_default_qemu_ssh_uri_and_duplicate_identity(lab, onboarded):
    """A second inventory entry for labh1 over the default qemu+ssh URI: it works, and the
    inventory flags the two entries as the same machine."""
    entry = lab["hosts"][0]
    key = HostKeyInfo.from_openssh(onboarded[entry["name"]].host_key)
    with open(entry["ssh_key"]) as handle:
        pem = handle.read()
    twin, _job = services.host_create(
        name="labh1-over-ssh",
        connection=HostConnection(address=entry["address"], ssh_port=entry["ssh_port"], ssh_user=entry["ssh_user"],
                                  auth_method=HostAuthMethodChoices.PRIVATE_KEY, private_key_pem=pem),
        actor=Actor.system(),
        trusted_host_key=key,
    )
    twin.refresh_from_db()
    assert twin.effective_libvirt_uri.startswith("qemu+ssh://root@")
    assert twin.status == HostStatusChoices.REACHABLE, twin.last_error
    assert twin.facts.host_uuid == entry["host_uuid"]
    flags = duplicate_flags(Host.objects.all())
    assert flags[twin.pk].same_uuid_as == [entry["name"]] and flags[twin.pk].same_hostname_as == [entry["name"]]
