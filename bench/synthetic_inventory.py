"""Synthetic inventory rows for benchmarks and browser tests: hosts and guests, nothing else.

    DATABASE_URL=sqlite:///… .venv/bin/python bench/synthetic_inventory.py --hosts 500 --guests-per-host 40

Hosts get loopback addresses (127.x.y.z) and are never contacted: no job is enqueued and no
worker is started; the rows are written with bulk inserts, as a refresh would leave them
(facts, guests in a mix of states, one disk each, a few local).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
STATES = ["running"] * 7 + ["shutoff"] * 2 + ["paused"]


def loopback(n: int) -> str:
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{(n & 255) or 1}"


def make_fleet(hosts: int, guests_per_host: int, *, prefix: str = "syn", start: int = 0) -> tuple[int, int]:
    """Add ``hosts`` hosts (named prefix-0000…) with ``guests_per_host`` guests each; returns the counts."""
    from django.utils import timezone

    from hosts.models import Host, HostFacts, VirtualDisk, VirtualMachine

    now = timezone.now()
    new_hosts = Host.objects.bulk_create(
        Host(name=f"{prefix}-{start + i:04d}", address=loopback(start + i + 1), auth_method="portal_key",
             status="reachable", host_key="ssh-ed25519 AAAA", host_key_fingerprint="SHA256:synthetic",
             last_seen=now, last_checked=now, tags=["gpu"] if i % 10 == 0 else [])
        for i in range(hosts))
    HostFacts.objects.bulk_create(
        HostFacts(host=host, hostname=host.name, host_uuid=str(uuid.uuid4()), os_pretty_name="Debian GNU/Linux 12",
                  arch="x86_64", hypervisor="QEMU", hypervisor_version="7.2.0", libvirt_version="9.0.0",
                  cpus=64, memory_total_kib=512 * 1024 * 1024, memory_free_kib=200 * 1024 * 1024)
        for host in new_hosts)
    vms = []
    for h, host in enumerate(new_hosts):
        for g in range(guests_per_host):
            n = (start + h) * guests_per_host + g
            vms.append(VirtualMachine(host=host, uuid=uuid.uuid4(), name=f"vm-{n:05d}", state=STATES[n % len(STATES)],
                                      vcpus=1 + n % 8, memory_kib=(1 + n % 16) * 1024 * 1024, arch="x86_64",
                                      domain_type="kvm", machine="pc-q35-7.2"))
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)
    VirtualDisk.objects.bulk_create(
        (VirtualDisk(vm=vm, target="vda", device="disk", source_type="file", source=f"/var/lib/libvirt/images/{vm.name}.qcow2",
                     format="qcow2", storage="local" if i % 20 == 0 else "shared")
         for i, vm in enumerate(vms)), batch_size=2000)
    return len(new_hosts), len(vms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--guests-per-host", type=int, default=40)
    parser.add_argument("--prefix", default="syn")
    args = parser.parse_args()
    sys.path.insert(0, str(BASE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
    import django

    django.setup()
    hosts, guests = make_fleet(args.hosts, args.guests_per_host, prefix=args.prefix)
    print(f"added {hosts} hosts and {guests} guests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
