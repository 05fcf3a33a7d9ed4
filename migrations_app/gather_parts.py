"""The pieces the preflight gatherers share: endpoints, one host's connections, disk plans, verdicts.

``gather`` (one guest, one pair) and ``gather_fleet`` (every guest of a host against every
candidate destination) both open hosts with ``HostProbe``, plan each disk with ``plan_disk``
and turn the probes' raw answers into facts with the pure helpers here, so a fact means the
same whichever gatherer found it. No Django here.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.adapters.errors import AdapterError
from hosts.adapters.probes import DiskProbe

from .facts import GuestSide, HostSide

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset({"running", "blocked", "paused"})
# sshd refuses more than MaxSessions (10 by default) channels at once on one connection;
# stay below it so a burst of probes waits for a slot instead of failing.
SSH_CHANNELS_PER_HOST = 8


@dataclass(frozen=True)
class Endpoint:
    """One host of the migration: its inventory name and an open session to it.

    ``session`` is a ``hosts.access.HostSession`` (``.ssh``, ``.libvirt``, ``.ssh_target``);
    its owner opens and closes it.
    """

    name: str  # inventory name, used in the verdicts
    session: Any
    in_maintenance: bool = False
    migration_address: str | None = None  # where QEMU's data goes; defaults to the SSH address

    @property
    def address(self) -> str:
        return self.session.ssh_target.address

    @property
    def ssh_port(self) -> int:
        return self.session.ssh_target.port

    @property
    def migration_host(self) -> str:
        return self.migration_address or self.address


# --------------------------------------------------------------------------
# Parsing (pure)


def parse_version(text: str) -> tuple[int, int, int]:
    """ "9.0.0" → (9, 0, 0); missing or odd parts become 0."""
    parts = [int(p) if p.isdigit() else 0 for p in (text or "").split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


# --------------------------------------------------------------------------
# One host


def run_probe(what: str, fn: Callable, *args, **kwargs):
    """Run one probe; its failure is logged and becomes None ("could not verify")."""
    started = time.monotonic()
    try:
        return fn(*args, **kwargs)
    except AdapterError as exc:
        log.info("preflight probe %s failed: %s", what, exc)
    except Exception:  # one broken probe must not hide the others' answers
        log.warning("preflight probe %s failed unexpectedly", what, exc_info=True)
    finally:
        log.debug("preflight probe %s took %.3f s", what, time.monotonic() - started)
    return None


class ChannelLimit:
    """An SSH session that runs at most ``limit`` commands at once; the probes see ``run`` and ``target``."""

    def __init__(self, session, limit: int = SSH_CHANNELS_PER_HOST):
        self._session = session
        self._slots = threading.BoundedSemaphore(limit)

    @property
    def target(self):
        return self._session.target

    def run(self, argv: list[str], **kwargs):
        # The command's own timeout starts once it has a channel, not while it waits for one.
        with self._slots:
            return self._session.run(argv, **kwargs)


@dataclass
class HostProbe:
    """One host's connections and what it said when opened (None where it did not answer)."""

    endpoint: Endpoint
    conn: object | None = None
    ssh: ChannelLimit | None = None
    facts: lv.HostFacts | None = None
    domains: list[lv.DomainInfo] | None = None
    pool_targets: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    def open(self) -> None:
        """Connect libvirt (facts, guests, pools) and SSH; a failure leaves that part None."""
        ep = self.endpoint
        try:
            self.conn = ep.session.libvirt
            self.facts = lv.get_host_facts(self.conn)
            self.domains = lv.list_domains(self.conn)
        except AdapterError as exc:
            log.warning("preflight: libvirt on %s did not answer: %s", ep.name, exc)
            self.facts = self.domains = None
        else:
            try:
                self.pool_targets = frozenset(mg.active_pool_targets(self.conn))
            except AdapterError as exc:
                log.warning("preflight: storage pools on %s unknown: %s", ep.name, exc)
        try:
            self.ssh = ChannelLimit(ep.session.ssh)
        except AdapterError as exc:
            log.warning("preflight: SSH to %s failed: %s", ep.name, exc)
            self.ssh = None

    @property
    def reachable(self) -> bool:
        return self.facts is not None and self.domains is not None and self.ssh is not None

    def side(self) -> HostSide:
        ep, f = self.endpoint, self.facts
        running_vcpus = sum(d.vcpus for d in self.domains or () if d.state in ACTIVE_STATES)
        if f is None:
            return HostSide(
                name=ep.name, hostname="", host_uuid="", arch="", hypervisor="",
                hypervisor_version=(0, 0, 0), libvirt_version=(0, 0, 0),
                domain_types=frozenset(), machine_types=frozenset(),
                memory_free_kib=0, memory_total_kib=0, cpus=0, running_vcpus=0,
                in_maintenance=ep.in_maintenance, reachable=False, address=ep.address,
            )
        return HostSide(
            name=ep.name,
            hostname=f.hostname,
            host_uuid=f.host_uuid,
            arch=f.arch,
            hypervisor=f.hypervisor,
            hypervisor_version=parse_version(f.hypervisor_version),
            libvirt_version=parse_version(f.libvirt_version),
            domain_types=frozenset(f.domain_types),
            machine_types=frozenset(f.machine_types),
            memory_free_kib=f.memory_free_kib,
            memory_total_kib=f.memory_total_kib,
            cpus=f.cpus,
            running_vcpus=running_vcpus,
            in_maintenance=ep.in_maintenance,
            reachable=self.reachable,
            address=ep.address,
        )


# --------------------------------------------------------------------------
# A guest's disks


@dataclass(frozen=True)
class DiskPlan:
    """One disk of the guest and how it is probed."""

    info: lv.DiskInfo
    network: bool
    path: str | None  # a local file or block device both hosts should see
    is_file: bool

    @property
    def writable(self) -> bool:
        return not self.info.readonly

    @property
    def directory(self) -> str | None:
        return posixpath.dirname(self.path) if self.path and self.is_file else None

    @property
    def copy_candidate(self) -> bool:
        """Would be copied by copy-storage unless proven shared (preflight.disks_to_copy)."""
        return bool(self.info.source) and not self.network and self.writable and not self.info.shareable


def plan_disk(disk: lv.DiskInfo) -> DiskPlan:
    network = disk.source_type == "network"
    local = disk.source_type in ("file", "block") and disk.source.startswith("/")
    return DiskPlan(info=disk, network=network, path=disk.source if local else None, is_file=disk.source_type == "file")


# --------------------------------------------------------------------------
# Verdicts from the probes' answers (pure)


def same_content(src: tuple[int, str] | None, dst: tuple[int, str] | None) -> bool | None:
    """Do two (size, sha256) digests prove the same bytes? None when one is missing or too large."""
    if src is None or dst is None:
        return None
    if src[0] != dst[0]:
        return False
    if src[1] == "-" or dst[1] == "-":
        return None  # too large to compare here
    return src[1] == dst[1]


def unknown_guest(guest_uuid: str) -> GuestSide:
    """The guest of a source that did not answer: only its UUID is known."""
    return GuestSide(
        name="", uuid=guest_uuid, state="unknown", arch="", domain_type="", machine="", vcpus=0,
        memory_kib=0, cpu_mode=None, cpu_model=None, disks=(), active_operation=None,
    )


# A connection attempt to the listener → are the migration ports open?
PORT_OPEN = {"open": True, "refused": False, "timeout": False, "unreachable": False}
# Any attempt → does the address answer? (A refusal is an answer.)
ADDRESS_ANSWERS = {"open": True, "refused": True, "timeout": False, "unreachable": False}


def reachability(port: int | None, connect: str | None, fallback: str | None) -> tuple[bool | None, bool | None]:
    """(migration_address_reachable, ports_reachable) from the listener's port and the connection attempts.

    No listener: the attempt went to the SSH port, which tells about the address only. A
    listener whose attempt timed out: the SSH-port attempt (``fallback``) tells whether the
    address answers at all.
    """
    if port is None:
        return ADDRESS_ANSWERS.get(connect or ""), None
    address = ADDRESS_ANSWERS.get(fallback or "") if connect == "timeout" else ADDRESS_ANSWERS.get(connect or "")
    return address, PORT_OPEN.get(connect or "")


def marker_verdict(plan: DiskPlan, marker: str | None, probe: DiskProbe | None, token: str) -> bool | None:
    """same_file_on_destination from the marker: did the destination read our token at that path?

    ``marker`` is the path of the marker written in the disk's directory (None: none was).
    """
    if plan.info.readonly and plan.is_file and probe is not None and not probe.exists:
        return False  # nothing at that path on the destination
    if probe is None or marker is None or probe.marker in (None, "?"):
        return None  # no marker, or the destination could not read it
    return probe.marker == token
