"""Save and restore through the portal against the real lab: a Linux guest whose heartbeat
counter is in memory and (every 10 beats) on its disk.

Saved to a directory on labh1, the guest is gone and the file has the recorded checksum;
restored on labh1 the counter goes on from its value at save time, not from the disk's older
one — the memory came back. A second save is refused a restore once the disk changed, and
deleting it removes its file on the host.
"""

from __future__ import annotations

import time

import pytest

from guest_state import jobs, services
from guest_state.choices import RestoreStatusChoices as RS, SavedStateStatusChoices as SS
from hosts.adapters import libvirt as lv
from hosts.models import VirtualMachine
from lab import hosts as lab_hosts
from lab.heartbeat import report
from lab_support import SYSTEM, lab_share, onboarded, ready_share, run_knob, sh, unique, vm_row, wait_counter  # noqa: F401 - fixtures by name

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]
SAVE_DIR = "/var/lib/libvirt/vmportal-save"



def save(vm, note: str):
    state = services.save_request(vm=vm, directory=SAVE_DIR, note=note, actor=SYSTEM, enqueue=False)
    jobs.save_job(state.job_id, state.pk)
    state.refresh_from_db()
    assert state.status == SS.SAVED, state.error
    return state


def restore(state, **kwargs):
    record = services.restore_request(state=state, actor=SYSTEM, enqueue=False, **kwargs)
    jobs.restore_job(record.job_id, record.pk)
    record.refresh_from_db()
    return record


def test_save_restore_same_host_continues_the_counter_and_refuses_a_changed_disk(lab, onboarded):
    lab_host = lab["hosts"][0]
    host = onboarded[lab_host["name"]]
    name = unique("save")
    try:
        made = run_knob("linux-guest", lab_host["name"], guest=name, disk="shared")
        # Past a multiple of 10 so the disk's value lags the memory's.
        wait_counter(name, at_least=25)
        vm = vm_row(host, made["uuid"])
        state = save(vm, "before upgrading postgres 15 -> 16")
        at_save = report(name).last_counter
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            assert lv.get_domain(conn, made["uuid"]).state == "shutoff"
        assert sh(lab_host, ["sha256sum", state.path], check=True).stdout.split()[0] == state.sha256
        assert state.size > 0 and state.disks and state.qemu_version and state.machine_type

        since = time.time()
        record = restore(state)
        assert record.status == RS.SUCCEEDED, record.error
        wait_counter(name, at_least=at_save + 3, since=since)
        first = report(name, since=since).first_counter
        assert first in (at_save + 1, at_save + 2), (first, at_save)  # from memory, not the disk's ≤ at_save - 5

        vm = vm_row(host, made["uuid"])
        second = save(vm, "second")
        sh(lab_host, ["touch", "-d", "tomorrow", second.disks[0]["path"]], check=True)
        refused = restore(second)
        assert refused.status == RS.FAILED and "changed since the save" in refused.error, refused.error
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            assert lv.get_domain(conn, made["uuid"]).state == "shutoff"

        # Deleting the refused state removes its file on the host through the host session.
        job = services.state_delete_request(state=second, confirmed=True, actor=SYSTEM, enqueue=False)
        jobs.state_delete_job(job.pk, second.pk)
        second.refresh_from_db()
        assert second.status == SS.DELETED
        assert sh(lab_host, ["test", "-e", second.path]).returncode == 1, "the state file is still on the host"
        assert sh(lab_host, ["test", "-e", state.path]).returncode == 0  # the other state is untouched
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)
        sh(lab_host, ["rm", "-rf", SAVE_DIR])


def test_restore_on_another_host_from_an_nfs_share(lab, lab_share):
    """Saved onto a share the wizard set up (labh1 and labh2 mount it), restored on labh2."""
    src_lab, dst_lab = lab_share["clients"][0], lab_share["clients"][1]
    share = ready_share(lab_share)
    src, dst = lab_share["hosts"][src_lab["name"]], lab_share["hosts"][dst_lab["name"]]
    name = unique("save")
    try:
        made = run_knob("linux-guest", src_lab["name"], guest=name, disk="shared")
        wait_counter(name, at_least=15)
        vm = vm_row(src, made["uuid"])
        state = services.save_request(vm=vm, share=share, note="to labh2", actor=SYSTEM, enqueue=False)
        jobs.save_job(state.job_id, state.pk)
        state.refresh_from_db()
        assert state.status == SS.SAVED, state.error
        at_save = report(name).last_counter
        assert state.disks and all(d["storage"] == "shared" for d in state.disks), state.disks
        # Started again where it was saved, the guest must not get a second copy on labh2.
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            lv.start_domain(conn, made["uuid"])
        refused = restore(state, host=dst)
        assert refused.status == RS.FAILED and f"is running on {src_lab['name']} now" in refused.error, refused.error
        with lv.open_connection(dst_lab["libvirt_uri"]) as conn:
            assert made["uuid"] not in {d.uuid for d in lv.list_domains(conn)}
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            lv.destroy_domain(conn, made["uuid"])
        # Its boot wrote the disk: the restore asks for that to be confirmed, then goes on from memory.
        since = time.time()
        record = restore(state, host=dst, changed_disks_confirmed=True)
        assert record.status == RS.SUCCEEDED, record.error
        wait_counter(name, at_least=at_save + 3, since=since)
        assert report(name, since=since).first_counter in (at_save + 1, at_save + 2)
        # One home: running and defined on labh2, the shut-off definition on labh1 removed.
        with lv.open_connection(dst_lab["libvirt_uri"]) as conn:
            there = lv.get_domain(conn, made["uuid"])
            assert (there.state, there.persistent) == ("running", True)
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            assert made["uuid"] not in {d.uuid for d in lv.list_domains(conn)}
        assert VirtualMachine.objects.get(uuid=made["uuid"]).host == dst
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)


def test_managed_save_then_start_resumes_where_it_stopped(lab, onboarded):
    lab_host = lab["hosts"][0]
    host = onboarded[lab_host["name"]]
    name = unique("msave")
    try:
        made = run_knob("linux-guest", lab_host["name"], guest=name, disk="shared")
        wait_counter(name, at_least=25)
        vm = vm_row(host, made["uuid"])
        job = services.managed_save_request(vm=vm, actor=SYSTEM, enqueue=False)
        jobs.managed_save_job(job.pk, vm.pk, False)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        at_save = report(name).last_counter
        vm.refresh_from_db()
        assert vm.managed_save and vm.state == "shutoff"
        assert vm_row(host, made["uuid"]).managed_save  # the refresh reads it from libvirt too
        since = time.time()
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            lv.start_domain(conn, made["uuid"])  # an ordinary start resumes the managed save
        wait_counter(name, at_least=at_save + 3, since=since)
        assert report(name, since=since).first_counter in (at_save + 1, at_save + 2)
        assert not vm_row(host, made["uuid"]).managed_save

        # Save again, then discard it (confirmed): libvirt no longer holds a managed save image.
        job = services.managed_save_request(vm=vm_row(host, made["uuid"]), actor=SYSTEM, enqueue=False)
        jobs.managed_save_job(job.pk, vm.pk, False)
        assert vm_row(host, made["uuid"]).managed_save
        job = services.managed_save_request(vm=vm_row(host, made["uuid"]), remove=True, confirmed=True,
                                            actor=SYSTEM, enqueue=False)
        jobs.managed_save_job(job.pk, vm.pk, True)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            assert conn.lookupByUUIDString(made["uuid"]).hasManagedSaveImage(0) == 0
        assert not vm_row(host, made["uuid"]).managed_save
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)
