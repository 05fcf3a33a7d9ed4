"""Recovery of a dead host's guest through the portal against the real lab.

A Linux guest whose heartbeat counter is in memory and (every 10 beats) on its disk on shared
storage runs on one lab host. Recovery is refused while that host still answers. Then the host
dies (knob host-down: sshd and libvirtd stop, the guest's QEMU is killed with SIGKILL), the
refresh marks it unreachable, and the recovery defines the guest on another host from the
definition the inventory kept and boots it from its shared disk: the counter resumes from what
the disk held. When the host comes back its copy is shut off there (not autostarted), so the
guest runs on exactly one host; the sweep notes the stale copy and the portal removes it.
"""

from __future__ import annotations

import time

import pytest

from core.choices import JobStatusChoices
from hosts import services as host_services
from hosts.choices import HostStatusChoices
from hosts.jobs import refresh_host_job
from hosts.models import VirtualMachine
from lab import hosts as lab_hosts
from lab.heartbeat import report
from recovery import jobs, services, sweep
from recovery.choices import RecoveryItemStatusChoices as IS, RecoveryStatusChoices as RS
from lab_support import SYSTEM, onboarded, refresh, run_knob, unique, vm_row, wait_counter, where  # noqa: F401 - fixtures by name

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]



def refresh_fails(host) -> None:
    job = host_services.host_refresh_request(host=host, actor=SYSTEM, enqueue=False)
    refresh_host_job(job.pk, host.pk)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED


def test_a_dead_hosts_shared_disk_guest_is_recovered_and_runs_on_exactly_one_host(lab, onboarded):
    lab_list = lab["hosts"]
    dying_lab = lab_list[1] if len(lab_list) > 1 else lab_list[0]
    others = [h for h in lab_list if h["name"] != dying_lab["name"]]
    dying = onboarded[dying_lab["name"]]
    name = unique("recover")
    down = False
    try:
        made = run_knob("linux-guest", dying_lab["name"], guest=name, disk="shared")
        wait_counter(name, at_least=25)
        vm = vm_row(dying, made["uuid"])  # this refresh keeps its definition
        assert vm.definition_encrypted and vm.disks.get(device="disk").storage == "shared"

        # Marked unreachable while it still answers: the check refuses and nothing starts.
        host_services.host_contact_failed(host=dying, error="missed keepalives (test)", hint="", actor=SYSTEM)
        dying.refresh_from_db()
        refused = jobs.run_inline(services.recovery_request(host=dying, fencing_confirmed=True, actor=SYSTEM,
                                                            enqueue=False))
        assert refused.status == RS.REFUSED and "answered over SSH" in refused.error, refused.error
        assert where(lab_list, made["uuid"]) == {dying_lab["name"]: "running"}
        refresh(dying)  # reachable again in the inventory

        killed = run_knob("host-down", dying_lab["name"])
        down = True
        assert name in killed["guests_killed"] and killed["qemu_pids_killed"]
        # Read after the kill: the guest beats until its QEMU is gone, and a beat between a read
        # before the knob and the kill may be the one that reached the disk.
        at_death = report(name).last_counter
        refresh_fails(dying)
        dying.refresh_from_db()
        assert dying.status == HostStatusChoices.UNREACHABLE

        plan = services.plan_for(dying)
        move = next(m for m in plan.moves if m.name == name)
        assert move.destination in {h["name"] for h in others}
        since = time.time()
        recovery = jobs.run_inline(services.recovery_request(host=dying, fencing_confirmed=True, actor=SYSTEM,
                                                             enqueue=False))
        item = recovery.items.get(vm_name=name)
        assert item.status == IS.SUCCEEDED, (item.error, recovery.error)
        assert where(others, made["uuid"]) == {move.destination: "running"}
        # Booted afresh from its shared disk: the counter goes on from the disk's value, not from 0.
        wait_counter(name, at_least=1, since=since)
        first = report(name, since=since).first_counter
        assert 10 <= first <= at_death + 1, (first, at_death)
        old = VirtualMachine.objects.get(host=dying, uuid=made["uuid"])
        assert old.superseded_at and move.destination in old.superseded_note

        back = run_knob("host-down", dying_lab["name"], undo=True)
        down = False
        assert name in back["left_shut_off"] and name not in back["restarted"]
        refresh(dying)
        # Exactly one host runs it: the returning host has it shut off and not autostarted.
        assert where(lab_list, made["uuid"]) == {dying_lab["name"]: "shutoff", move.destination: "running"}
        assert not VirtualMachine.objects.get(host=dying, uuid=made["uuid"]).autostart
        sweep.recovery_sweep()
        item.refresh_from_db()
        assert item.stale_state == "shutoff" and item.stale_seen_at
        job = services.stale_remove_request(item=item, actor=SYSTEM, enqueue=False)
        jobs.stale_remove_job(job.pk, item.pk)
        item.refresh_from_db()
        assert item.stale_removed_at, job
        assert where(lab_list, made["uuid"]) == {move.destination: "running"}
    finally:
        if down:
            run_knob("host-down", dying_lab["name"], undo=True)
        lab_hosts.remove_guest(name, delete_disks=True)
    # The lab is usable again: the host answers and is back in the inventory.
    refresh(dying)
