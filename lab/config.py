"""Where the lab keeps its state and how its hosts are numbered.

Everything the lab creates lives under one directory: ``$VMPORTAL_LAB_DIR``,
by default ``var/lab`` inside the project (git-ignored).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

BRIDGE = "vmplab0"
SUBNET_PREFIX = "10.77.0"
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"
NETMASK_BITS = 24
SUBNET = f"{SUBNET_PREFIX}.0/{NETMASK_BITS}"
# With the lab down its subnet has no route of its own, and a connection to a lab address
# would follow the default route off this machine. An unreachable route with a high metric
# stays in place for good: the bridge's own route (metric 0) wins while the lab is up.
GUARD_ROUTE_METRIC = 4242
MAX_HOSTS = 9
# Stable namespace for host UUIDs, so a host keeps its identity across up/down.
_UUID_NAMESPACE = uuid.UUID("5f0c1d2e-7a4b-4c6d-9e8f-0a1b2c3d4e5f")

HEARTBEAT_MEMORY_MIB = 64
DIRTY_MEMORY_MIB = 128


def state_dir() -> Path:
    return Path(os.environ.get("VMPORTAL_LAB_DIR", PROJECT_DIR / "var" / "lab")).resolve()


@dataclass(frozen=True)
class HostSpec:
    index: int

    @property
    def name(self) -> str:
        return f"labh{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        return f"vl-{self.name}"

    @property
    def host_uuid(self) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, self.name))

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"


def host_specs(count: int) -> list[HostSpec]:
    return [HostSpec(i) for i in range(1, count + 1)]


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def host_keys_dir(self) -> Path:
        return self.root / "hostkeys"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def serial(self) -> Path:
        return self.root / "serial"

    @property
    def heartbeats(self) -> Path:
        return self.root / "hb"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def shared_backing(self) -> Path:
        return self.root / "shared-backing"

    @property
    def shared(self) -> Path:
        """The shared storage mount point, the same path on every host."""
        return self.root / "shared"

    @property
    def capabilities_cache(self) -> Path:
        return self.root / "capcache"

    @property
    def recorder_pid(self) -> Path:
        return self.root / "recorder.pid"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    def host_dir(self, name: str) -> Path:
        return self.hosts / name


def paths() -> Paths:
    return Paths(state_dir())
