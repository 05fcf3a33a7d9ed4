"""Two hosts for the calendar: kvm-a holds two running guests on shared storage, kvm-b takes them.

The real services, tick, maintenance queue, migration runner and adapters run on the fake fleet
(tests/fakes/fleet.py); jobs run in-process on commit (test settings).
"""

from __future__ import annotations

import pytest

from hosts.choices import DiskStorageChoices, VMStateChoices
from hosts.models import HostFacts, VirtualDisk
from tests.fakes.fleet import make_host, make_vm

GIB = 1024 * 1024  # KiB


@pytest.fixture
def pair(db, world):
    """kvm-a: app-1, app-2 (running, 1 GiB, shared disks); kvm-b: empty, 8 GiB free."""
    from migrations_app import runner  # noqa: F401  (world patched it)

    a, b = make_host("kvm-a"), make_host("kvm-b")
    for host, free in ((a, 8), (b, 8)):
        HostFacts.objects.update_or_create(host=host, defaults=dict(
            hostname=host.name, arch="x86_64", domain_types=["qemu", "kvm"], memory_total_kib=16 * GIB,
            memory_free_kib=free * GIB, cpus=8, hypervisor_version="7.2.0", libvirt_version="9.0.0"))
    vms = {}
    for name in ("app-1", "app-2"):
        vm = make_vm(a, name, state=VMStateChoices.RUNNING, memory_kib=GIB)
        VirtualDisk.objects.create(vm=vm, target="vda", device="disk", source_type="file",
                                   source=f"/shared/images/{name}.qcow2", format="qcow2",
                                   storage=DiskStorageChoices.SHARED)
        vms[name] = vm
    world.adopt(a, *[world.guest_of(vm) for vm in vms.values()])
    world.adopt(b)
    return {"a": a, "b": b, **vms}
