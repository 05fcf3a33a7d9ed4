"""Fake adapter modules (ssh, libvirt, facts) over a set of fake hypervisors.

They keep the adapters' contract: same dataclasses, same errors (HostKeyMismatch when the
pinned key differs, HostUnreachable, DomainNotFound), so everything above the adapters runs
for real in unit tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from types import SimpleNamespace

from hosts.adapters.errors import DomainNotFound, HostKeyMismatch, HostKeyUnknown, HostUnreachable
from hosts.adapters.facts import OsRelease, StorageLocation
from hosts.adapters.libvirt import DiskInfo, DomainInfo, HostFacts, NicInfo
from hosts.adapters.ssh import HostKeyInfo, SSHTarget, generate_keypair


def make_host_key() -> HostKeyInfo:
    _, public = generate_keypair()
    return HostKeyInfo.from_openssh(public)


def make_domain(name: str, **overrides) -> DomainInfo:
    fields = dict(
        name=name,
        uuid=str(uuid.uuid4()),
        state="running",
        reason="booted",
        vcpus=1,
        memory_kib=65536,
        arch="x86_64",
        domain_type="qemu",
        machine="pc-i440fx-7.2",
        persistent=True,
        autostart=False,
        cpu_mode=None,
        cpu_model=None,
        disks=[
            DiskInfo(
                target="vda", device="disk", source_type="file", source=f"/var/lib/libvirt/images/{name}.img",
                protocol="", format="raw", readonly=True, shareable=False,
            )
        ],
        nics=[NicInfo(mac="52:54:00:00:00:01", type="network", source="default", model="virtio")],
        id=1,
    )
    fields.update(overrides)
    return DomainInfo(**fields)


@dataclasses.dataclass
class FakeHypervisor:
    """One fake host as the adapters would see it."""

    address: str
    hostname: str
    host_uuid: str
    host_key: HostKeyInfo
    domains: dict[str, DomainInfo]
    reachable: bool = True
    shutdown_ignored: bool = False
    calls: list = dataclasses.field(default_factory=list)

    def facts(self) -> HostFacts:
        return HostFacts(
            hostname=self.hostname, host_uuid=self.host_uuid, arch="x86_64", cpu_vendor="Intel",
            cpu_model="Skylake-Client", cpu_features=["vmx", "sse4.2"], hypervisor="QEMU",
            hypervisor_version="7.2.0", libvirt_version="9.0.0", domain_types=["qemu", "kvm"],
            machine_types=["pc"], memory_total_kib=8 * 1024 * 1024, memory_free_kib=6 * 1024 * 1024, cpus=4,
        )

    def set_state(self, domain_uuid: str, state: str, reason: str) -> None:
        self.domains[domain_uuid] = dataclasses.replace(self.domains[domain_uuid], state=state, reason=reason)


class FakeFleet:
    """Fake ssh/libvirt/facts adapter modules over a set of FakeHypervisors keyed by address."""

    def __init__(self):
        self.hosts: dict[str, FakeHypervisor] = {}

    def add(self, address: str, *, hostname: str | None = None, host_uuid: str | None = None, domains=()) -> FakeHypervisor:
        hv = FakeHypervisor(
            address=address,
            hostname=hostname or f"host-{address}",
            host_uuid=host_uuid or str(uuid.uuid4()),
            host_key=make_host_key(),
            domains={d.uuid: d for d in domains},
        )
        self.hosts[address] = hv
        return hv

    def _reach(self, address: str) -> FakeHypervisor:
        hv = self.hosts.get(address)
        if hv is None or not hv.reachable:
            raise HostUnreachable(f"{address}:22 refused the connection", address=address)
        return hv

    def _check_pin(self, target: SSHTarget) -> FakeHypervisor:
        hv = self._reach(target.address)
        if not target.pinned_host_key:
            k = hv.host_key
            raise HostKeyUnknown(fingerprint=k.fingerprint, key_type=k.key_type, key_b64=k.key_b64)
        if target.pinned_host_key != hv.host_key.openssh:
            raise HostKeyMismatch(
                expected_fingerprint=HostKeyInfo.from_openssh(target.pinned_host_key).fingerprint,
                actual_fingerprint=hv.host_key.fingerprint,
                address=target.address,
            )
        return hv

    # --- ssh module
    def fetch_host_key(self, address, port=22, *, timeout=10.0):
        return self._reach(address).host_key

    def ssh_session(self, target):
        fleet = self

        class Session:
            def __enter__(self):
                self.hv = fleet._check_pin(target)
                return self

            def __exit__(self, *exc):
                return False

        return Session()

    # --- libvirt module
    @contextlib.contextmanager
    def open_connection(self, uri, *, ssh_target=None):
        hv = self._check_pin(ssh_target)
        yield hv

    def get_domain(self, hv, domain_uuid):
        try:
            return hv.domains[domain_uuid]
        except KeyError:
            raise DomainNotFound(f"Domain not found: no domain with matching uuid '{domain_uuid}'") from None

    def _act(self, name, new_state, reason):
        def act(hv, domain_uuid):
            self.get_domain(hv, domain_uuid)
            hv.calls.append((name, domain_uuid))
            if name == "shutdown" and hv.shutdown_ignored:
                return
            hv.set_state(domain_uuid, new_state, reason)

        return act

    def modules(self):
        ssh = SimpleNamespace(
            SSHTarget=SSHTarget, SSHSession=self.ssh_session, fetch_host_key=self.fetch_host_key
        )
        libvirt = SimpleNamespace(
            open_connection=self.open_connection,
            get_host_facts=lambda hv: hv.facts(),
            list_domains=lambda hv: sorted(hv.domains.values(), key=lambda d: d.name),
            get_domain=self.get_domain,
            start_domain=self._act("start", "running", "booted"),
            shutdown_domain=self._act("shutdown", "shutoff", "shutdown"),
            destroy_domain=self._act("destroy", "shutoff", "destroyed"),
        )
        facts = SimpleNamespace(
            read_os_release=lambda session: OsRelease(
                id="debian", id_like="", version_id="12", pretty_name="Debian GNU/Linux 12 (bookworm)"
            ),
            storage_kind=lambda session, paths: {
                p: StorageLocation(fstype="ext4", mountpoint="/", shared=False) for p in paths
            },
        )
        return ssh, libvirt, facts
