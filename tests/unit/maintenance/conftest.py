"""A small fleet for evacuations: kvm-a holds the guests, kvm-b and kvm-c take them.

The real services, queue, migration runner and adapters run on the fake fleet
(tests/fakes/fleet.py); jobs run in-process on commit (test settings).
"""

from __future__ import annotations

import pytest

from hosts.choices import DiskStorageChoices, VMStateChoices
from hosts.models import HostFacts, VirtualDisk
from tests.fakes.fleet import make_host, make_vm

GIB = 1024 * 1024  # KiB


def _check_hosts_for_run(ev) -> None:
    from maintenance.jobs import run_facts_job

    ev.refresh_from_db()
    if ev.facts_job_id is not None:
        run_facts_job(ev.facts_job_id, ev.pk)


@pytest.fixture
def check_hosts_for_run():
    """Runs a run's one check of the hosts: its job is queued on commit, which tests that commit nothing skip."""
    return _check_hosts_for_run

def _facts(host, *, free_gib: float):
    HostFacts.objects.update_or_create(host=host, defaults=dict(
        hostname=host.name, arch="x86_64", domain_types=["qemu", "kvm"], memory_total_kib=16 * GIB,
        memory_free_kib=int(free_gib * GIB), cpus=8, hypervisor_version="7.2.0", libvirt_version="9.0.0",
    ))


def _disk(vm, *, storage: str, source: str):
    VirtualDisk.objects.create(vm=vm, target="vda", device="disk", source_type="file", source=source,
                               format="qcow2", storage=storage)


@pytest.fixture
def evac(db, world):
    """kvm-a: web-1, web-2 (running, shared disks), cold-1 (shut off, shared), local-1 (running, local disk)."""
    from migrations_app import runner  # noqa: F401  (world patched it)

    a, b, c = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    for host, free in ((a, 10), (b, 6), (c, 4)):
        _facts(host, free_gib=free)
    guests = {}
    for name, state, storage in (
        ("web-1", VMStateChoices.RUNNING, DiskStorageChoices.SHARED),
        ("web-2", VMStateChoices.RUNNING, DiskStorageChoices.SHARED),
        ("cold-1", VMStateChoices.SHUTOFF, DiskStorageChoices.SHARED),
        ("local-1", VMStateChoices.RUNNING, DiskStorageChoices.LOCAL),
    ):
        vm = make_vm(a, name, state=state, memory_kib=GIB)
        _disk(vm, storage=storage, source=f"/shared/images/{name}.qcow2" if storage == "shared" else f"/var/lib/libvirt/images/{name}.qcow2")
        guests[name] = vm
    domains = [world.guest_of(vm) for vm in guests.values()]
    world.adopt(a, *domains)
    world.adopt(b)
    world.adopt(c)
    return {"a": a, "b": b, "c": c, **guests}
