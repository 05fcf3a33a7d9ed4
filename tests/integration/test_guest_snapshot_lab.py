"""Snapshots through the portal against the real lab.

A Linux guest whose heartbeat counter is in memory (and every 10 beats on its qcow2 disk) gets a
snapshot with memory (`vm_snapshot --name`); the counter runs on; `--revert` brings it back to
the snapshot's value within moments (its memory came back: no boot, which would take ~10 s and
restart from the disk). A snapshot deleted with virsh behind the portal's back shows as gone in
`--list`; `--delete` removes the other and libvirt lists none. A heartbeat guest on a writable
raw disk is refused, naming the disk, and libvirt itself refuses it too.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from io import StringIO

import pytest
from django.core.management import call_command

from core.errors import ServiceRefused
from guest_state import jobs, snapshot_services as services
from hosts.adapters import libvirt as lv
from hosts.adapters.errors import LibvirtFailure
from lab import config, guests, recorder
from lab import hosts as lab_hosts
from lab.heartbeat import read_beats, report
from lab_support import SYSTEM, onboarded, run_knob, unique, vm_row, wait_counter  # noqa: F401 - fixtures by name
from tests.waiting import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


def snapshot_cli(*argv: str) -> dict | list:
    out = StringIO()
    call_command("vm_snapshot", *argv, "--json", stdout=out)
    return json.loads(out.getvalue())


def libvirt_snapshots(uri: str, uuid: str) -> list[str]:
    with lv.open_connection(uri) as conn:
        return sorted(conn.lookupByUUIDString(uuid).snapshotListNames(0))


def drop_snapshots(uri: str, uuid: str) -> None:
    """However the test ended: libvirt will not undefine a guest that still has snapshots."""
    try:
        with lv.open_connection(uri) as conn:
            for snap in conn.lookupByUUIDString(uuid).listAllSnapshots(0):
                snap.delete(0)
    except Exception:  # noqa: BLE001 - the guest may be gone already
        pass


def first_after_drop(beats: list[tuple[float, int]]) -> tuple[float, int] | None:
    """The first beat whose counter went down (the first one after the revert), with 3 beats after it."""
    for i in range(1, len(beats) - 3):
        if beats[i][1] < beats[i - 1][1]:
            return beats[i]
    return None


def paused_at(beats: list[tuple[float, int]]) -> int:
    """The counter just before the longest gap between beats: where savevm paused the guest."""
    gaps = [(b[0] - a[0], a[1]) for a, b in zip(beats, beats[1:])]
    return max(gaps)[1]


def boots_since(name: str, since: float) -> int:
    """How many times the guest printed its boot line (read from its heartbeat log) since ``since``."""
    path = config.paths().heartbeats / f"{name}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if " BOOT " in f" {line} " and float(line.split(" ", 1)[0]) >= since)


def test_snapshot_with_memory_revert_brings_the_counter_back_then_delete(lab, onboarded):
    lab_host = lab["hosts"][0]
    host = onboarded[lab_host["name"]]
    name = unique("snap")
    uri = lab_host["libvirt_uri"]
    made = None
    try:
        made = run_knob("linux-guest", lab_host["name"], guest=name, disk="shared")
        uuid = made["uuid"]
        before = wait_counter(name, at_least=15)
        vm = vm_row(host, uuid)
        assert [d.format for d in vm.disks.all() if not d.readonly] == ["qcow2"]

        started = time.time()
        snap = snapshot_cli(uuid, "--name", "clean", "--note", "before the next user")
        assert (snap["status"], snap["with_memory"], snap["kind"], snap["job_status"]) == (
            "present", True, "internal", "succeeded"), snap
        assert libvirt_snapshots(uri, uuid) == ["clean"]
        ran_on = wait_counter(name, at_least=before + 25, since=started)
        # savevm paused the guest (the longest gap between its beats): the snapshot holds the
        # counter of the beat just before that gap.
        at_snapshot = paused_at(read_beats(name, since=started - 0.5))
        assert before <= at_snapshot <= ran_on - 15, (before, at_snapshot, ran_on)

        since = time.time()
        reverted = snapshot_cli(uuid, "--revert", "clean")
        returned = time.time()
        assert (reverted["job_status"], reverted["revert_count"]) == ("succeeded", 1), reverted
        beat_at, first = wait_until(lambda: first_after_drop(read_beats(name, since=since - 0.5)), timeout=30,
                                    what=f"{name}'s counter to go back", interval=0.3)
        # Back to the snapshot's value, not on from where it ran to, and not a boot from the disk.
        assert first in (at_snapshot + 1, at_snapshot + 2), (first, at_snapshot, ran_on)
        assert ran_on - first >= 15
        assert beat_at - returned < 5, "the counter took as long as a boot to come back"
        assert boots_since(name, since) == 0, "the guest booted: its memory did not come back"
        with lv.open_connection(uri) as conn:
            assert lv.get_domain(conn, uuid).state == "running"

        # A second snapshot, deleted with virsh behind the portal's back: --list shows libvirt's truth.
        second = services.snapshot_request(vm=vm_row(host, uuid), name="second", actor=SYSTEM, enqueue=False)
        jobs.snapshot_create_job(second.job_id, second.pk)
        second.refresh_from_db()
        assert second.status == "present", second.error
        subprocess.run(["virsh", "-q", "-c", uri, "snapshot-delete", name, "second"], check=True, capture_output=True)
        listed = {s["name"]: s["status"] for s in snapshot_cli(uuid, "--list")}
        assert listed == {"clean": "present", "second": "missing"}, listed

        deleted = snapshot_cli(uuid, "--delete", "clean")
        assert (deleted["status"], deleted["job_status"]) == ("deleted", "succeeded"), deleted
        assert libvirt_snapshots(uri, uuid) == []
    finally:
        if made:
            drop_snapshots(uri, made["uuid"])
        lab_hosts.remove_guest(name, delete_disks=True)


def test_a_guest_on_a_writable_raw_disk_is_refused_naming_the_disk(lab, onboarded):
    lab_host = lab["hosts"][0]
    host = onboarded[lab_host["name"]]
    spec = guests.GuestSpec(name=unique("rawsnap")).with_uuid()
    uri = lab_host["libvirt_uri"]
    try:
        recorder.ensure_socket(spec.name)
        disk = guests.prepare_disk(spec)  # the heartbeat boot image, a raw file; writable here
        xml = guests.domain_xml(spec, disk).replace("<readonly/>", "")
        with lv.open_connection(uri) as conn:
            lv.define_domain(conn, xml)
            lv.start_domain(conn, spec.uuid)
        wait_until(lambda: read_beats(spec.name, since=time.time() - 5), timeout=20, what="the raw-disk guest's heartbeat")
        vm = vm_row(host, spec.uuid)
        with pytest.raises(ServiceRefused, match=rf"Disk vda \({re.escape(str(disk))}\) is raw.*qemu-img convert -O qcow2"):
            services.snapshot_request(vm=vm, name="clean", actor=SYSTEM, enqueue=False)
        # libvirt agrees: asked directly, it refuses too, and keeps nothing.
        with lv.open_connection(uri) as conn:
            with pytest.raises(LibvirtFailure) as refused:
                lv.create_snapshot(conn, spec.uuid, name="probe", memory=True)
        print(f"libvirt on a raw disk: {refused.value}")
        assert libvirt_snapshots(uri, spec.uuid) == []
        assert report(spec.name).last_counter is not None  # still running, untouched
    finally:
        drop_snapshots(uri, spec.uuid)
        lab_hosts.remove_guest(spec.name, delete_disks=True)
