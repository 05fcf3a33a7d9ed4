"""Gather what the preflight checks read, from the two hosts of a migration.

``gather_pair(source=…, destination=…, guest_uuid=…, options=…)`` opens a session to
each inventory host (``hosts.access``) and returns the ``PairFacts`` and ``GuestSide``
that ``preflight.run_preflight`` judges. ``gather`` itself takes plain inputs
(``Endpoint``: a name and an open session) and does all I/O through the adapters
(``hosts.adapters.libvirt``, ``migration``, ``probes``).

Each session's libvirt connection and SSH are opened in parallel; the probes run in
four short rounds, both hosts at once:

1. Connect; libvirt host facts and guest lists of both hosts.
2. The guest's CPU compared on the destination (``compareHypervisorCPU``);
   each host resolves the other's hostname (``getent ahosts``); a marker file
   holding a random token is written next to each file disk on the source; the
   destination's qemu.conf is read; a one-shot TCP listener starts on a free
   port in 49152–49215 on the destination.
3. The source connects to that listener at the destination's migration
   address; the destination reads each marker at the same path and tests
   whether QEMU's user can open each disk (and, for copy-storage, the free
   space in its directory).
4. The markers are removed; read-only disks that are not shared are compared
   by content; if the port timed out, the SSH port tells whether the address
   answers at all.

What a result means:

- ``None`` in a fact is "could not verify" (the probe failed or could not run);
  one failing probe never stops the others nor raises.
- A host whose libvirt or SSH does not answer is ``reachable=False``; the
  reason is logged (PairFacts has no field for it).
- ``same_file_on_destination``: the destination read the marker the source
  wrote next to the disk, so both see one directory. Block devices cannot be
  proven that way (None). A read-only disk that is *not* shared still counts
  as the same when the destination holds a byte-identical copy (checked by
  SHA-256 up to 64 MiB, else None): libvirt only needs the same content there.
- ``destination_can_open``: ``runuser -u <qemu user> -- test -r/-w`` on the
  destination, the user being the first ``user =`` of its qemu.conf, else the
  build default commented there, else the distro's (libvirt-qemu on
  Debian/Ubuntu, qemu elsewhere). With ``dynamic_ownership`` on (libvirt's
  default) libvirt hands the image to that user when the guest starts, so it
  also counts when root can open the file and QEMU's user can reach its directory.
- Name resolution that could not be probed is ``None``; note that the
  name-resolution check treats that as "cannot resolve".

Raises DomainNotFound when the source answers but has no such guest.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.adapters import probes
from hosts.adapters.errors import AdapterError, DomainNotFound
from hosts.adapters.probes import (
    DiskProbe,
    can_open,
    content_digest,
    probe_disk,
    qemu_identity,
    remove_markers,
    resolve,
    start_listener,
    try_connect,
    write_marker,
)
from hosts.adapters.ssh import SSHSession

from .facts import DiskFact, GuestSide, HostSide, PairFacts
from .options import MigrationOptions

if TYPE_CHECKING:
    from hosts.models import Host

log = logging.getLogger(__name__)


_ACTIVE_STATES = frozenset({"running", "blocked", "paused"})


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


def _probe(what: str, fn: Callable, *args, **kwargs):
    """Run one probe; its failure is logged and becomes None (\"could not verify\")."""
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


@dataclass
class _Host:
    endpoint: Endpoint
    conn: object | None = None
    ssh: SSHSession | None = None
    facts: lv.HostFacts | None = None
    domains: list[lv.DomainInfo] | None = None
    pool_targets: frozenset[str] | None = None

    def open(self) -> None:
        """Connect libvirt (facts, guests) and SSH; a failure leaves that part None."""
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
            self.ssh = ep.session.ssh
        except AdapterError as exc:
            log.warning("preflight: SSH to %s failed: %s", ep.name, exc)
            self.ssh = None

    @property
    def reachable(self) -> bool:
        return self.facts is not None and self.domains is not None and self.ssh is not None

    def side(self) -> HostSide:
        ep, f = self.endpoint, self.facts
        running_vcpus = sum(d.vcpus for d in self.domains or () if d.state in _ACTIVE_STATES)
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
# The guest's disks


@dataclass(frozen=True)
class _DiskPlan:
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


def _plan(disk: lv.DiskInfo) -> _DiskPlan:
    network = disk.source_type == "network"
    local = disk.source_type in ("file", "block") and disk.source.startswith("/")
    return _DiskPlan(info=disk, network=network, path=disk.source if local else None, is_file=disk.source_type == "file")


def _same_content(src: tuple[int, str] | None, dst: tuple[int, str] | None) -> bool | None:
    """Do two (size, sha256) digests prove the same bytes? None when one is missing or too large."""
    if src is None or dst is None:
        return None
    if src[0] != dst[0]:
        return False
    if src[1] == "-" or dst[1] == "-":
        return None  # too large to compare here
    return src[1] == dst[1]


# --------------------------------------------------------------------------
# Gather


def _unknown_guest(guest_uuid: str) -> GuestSide:
    return GuestSide(
        name="", uuid=guest_uuid, state="unknown", arch="", domain_type="", machine="", vcpus=0,
        memory_kib=0, cpu_mode=None, cpu_model=None, disks=(), active_operation=None,
    )


# A connection attempt to the listener → are the migration ports open?
_PORT_OPEN = {"open": True, "refused": False, "timeout": False, "unreachable": False}
# Any attempt → does the address answer? (A refusal is an answer.)
_ADDRESS_ANSWERS = {"open": True, "refused": True, "timeout": False, "unreachable": False}


def _address_answers(connect: str | None, fallback: str | None) -> bool | None:
    """migration_address_reachable from the attempt at the listener and, if that timed out, at the SSH port."""
    if connect == "timeout":
        return _ADDRESS_ANSWERS.get(fallback or "")
    return _ADDRESS_ANSWERS.get(connect or "")


def _marker_verdict(
    plan: _DiskPlan, markers: dict[str, str | None], probes: dict[str, DiskProbe | None], token: str
) -> bool | None:
    """same_file_on_destination from the marker: did the destination read our token at that path?"""
    probe = probes.get(plan.info.target)
    if plan.info.readonly and plan.is_file and probe is not None and not probe.exists:
        return False  # nothing at that path on the destination
    marker = markers.get(plan.directory) if plan.directory else None
    if probe is None or marker is None or probe.marker in (None, "?"):
        return None  # no marker, or the destination could not read it
    return probe.marker == token


def gather(
    *, source: Endpoint, destination: Endpoint, guest_uuid: str, options: MigrationOptions
) -> tuple[PairFacts, GuestSide]:
    """Probe both hosts for the preflight; see the module docstring for what each fact means.

    ``options`` only decides whether disk sizes and the destination's free
    space are measured (live copy-storage); every other fact is the same for
    any options.
    """
    started = time.monotonic()
    src, dst = _Host(source), _Host(destination)
    for endpoint in (source, destination):
        # The login details come from the database: read them here, not in the pool's threads.
        endpoint.session.ssh_target  # noqa: B018
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="preflight") as pool:
        for future in [pool.submit(src.open), pool.submit(dst.open)]:
            future.result()
        pair, guest = _gather_open(pool, src, dst, guest_uuid, options)
    log.info("preflight facts for %s from %s to %s in %.2f s", guest_uuid, source.name, destination.name,
             time.monotonic() - started)
    return pair, guest


def _gather_open(
    pool: ThreadPoolExecutor, src: _Host, dst: _Host, guest_uuid: str, options: MigrationOptions
) -> tuple[PairFacts, GuestSide]:
    def submit(what: str, fn: Callable, *args, **kwargs) -> Future:
        return pool.submit(_probe, what, fn, *args, **kwargs)

    def done(future: Future | None):
        return future.result() if future is not None else None

    # --- the guest, as the source describes it
    info = None
    if src.domains is not None:
        wanted = guest_uuid.strip().lower()
        info = next((d for d in src.domains if d.uuid.lower() == wanted), None)
        if info is None:
            raise DomainNotFound(f"{src.endpoint.name} has no guest with UUID {guest_uuid}.")
    plans = [_plan(d) for d in info.disks] if info else []
    copying = options.copy_storage and options.live
    both_ssh = src.ssh is not None and dst.ssh is not None

    # --- round 2: what needs only the connections and round 1's facts
    f_compare = f_operation = f_res_src = f_res_dst = f_identity = f_listener = None
    f_sizes: dict[str, Future] = {}
    if info is not None and src.conn is not None and dst.conn is not None:
        f_compare = submit("cpu compare", _compare_cpu, src.conn, dst.conn, info)
    if info is not None and info.state in _ACTIVE_STATES:
        targets = [p.info.target for p in plans if p.info.source]
        f_operation = submit("guest jobs", mg.current_operation, src.conn, info.uuid, disk_targets=targets)
    if info is not None and copying:
        for p in plans:
            if p.copy_candidate and p.path:
                f_sizes[p.info.target] = submit("disk size", mg.block_size, src.conn, info.uuid, p.info.target)
    if src.ssh is not None and dst.facts is not None:
        f_res_src = submit("source resolves destination", resolve, src.ssh, dst.facts.hostname)
    if dst.ssh is not None and src.facts is not None:
        f_res_dst = submit("destination resolves source", resolve, dst.ssh, src.facts.hostname)
    if dst.ssh is not None:
        f_identity = submit("qemu user", qemu_identity, dst.ssh)
    if both_ssh:
        ipv6 = ":" in dst.endpoint.migration_host
        f_listener = submit("listener", start_listener, dst.ssh, ipv6=ipv6)
    token = secrets.token_hex(16)
    f_markers = {
        directory: submit("marker", write_marker, src.ssh, directory, token)
        for directory in sorted({p.directory for p in plans if p.directory})
        if both_ssh
    }
    markers: dict[str, str | None] = {}
    try:
        markers = {d: f.result() for d, f in f_markers.items()}
        identity = done(f_identity)
        port = done(f_listener)

        # --- round 3: the source connects to the listener; the destination checks each disk
        address = dst.endpoint.migration_host
        f_connect = None
        if both_ssh:
            # No listener: at least learn whether the address answers, on the SSH port.
            f_connect = submit("connect from source", try_connect, src.ssh, address,
                               port if port is not None else dst.endpoint.ssh_port)
        f_disks = {
            p.info.target: submit(
                "disk on destination", probe_disk, dst.ssh, path=p.path,
                marker=markers.get(p.directory) if p.directory else None,
                writable=p.writable, room=copying and p.copy_candidate, identity=identity,
            )
            for p in plans
            if p.path and dst.ssh is not None
        }
        disk_probes: dict[str, DiskProbe | None] = {t: f.result() for t, f in f_disks.items()}
        connect = done(f_connect)
    finally:
        placed = [m for m in markers.values() if m]
        f_cleanup = submit("marker cleanup", remove_markers, src.ssh, placed) if placed else None

    # --- round 4: read-only disks that are not shared may still be identical copies;
    # a port that timed out: does the address answer at all (SSH port)?
    same_file = {p.info.target: _marker_verdict(p, markers, disk_probes, token) for p in plans}
    f_digests = {
        p.info.target: (
            submit("disk content on source", content_digest, src.ssh, p.path),
            submit("disk content on destination", content_digest, dst.ssh, p.path),
        )
        for p in plans
        if p.info.readonly and p.is_file and same_file[p.info.target] is not True
        and (disk_probes.get(p.info.target) or probes.NO_PROBE).exists
    }
    f_fallback = None
    if port is not None and connect == "timeout":
        f_fallback = submit("connect to migration address", try_connect, src.ssh, address, dst.endpoint.ssh_port)
    for target, (f_src, f_dst) in f_digests.items():
        same_file[target] = _same_content(f_src.result(), f_dst.result())
    fallback = done(f_fallback)
    done(f_cleanup)

    # --- assemble
    disks = []
    for p in plans:
        probe = disk_probes.get(p.info.target)
        opened, perm = None, ""
        if probe is not None:
            opened, perm = can_open(probe, writable=p.writable, identity=identity) if identity else (None, probe.perm)
        size = done(f_sizes.get(p.info.target))
        disks.append(DiskFact(
            target=p.info.target,
            source=p.info.source,
            readonly=p.info.readonly,
            shareable=p.info.shareable,
            network=p.network,
            same_file_on_destination=same_file[p.info.target],
            destination_can_open=opened,
            perm_detail=perm,
            size_kib=size.allocation // 1024 if size is not None else None,
        ))
    guest = _unknown_guest(guest_uuid) if info is None else GuestSide(
        name=info.name,
        uuid=info.uuid,
        state=info.state,
        arch=info.arch,
        domain_type=info.domain_type,
        machine=info.machine,
        vcpus=info.vcpus,
        memory_kib=info.memory_kib,
        cpu_mode=info.cpu_mode,
        cpu_model=info.cpu_model,
        disks=tuple(disks),
        active_operation=done(f_operation),
        persistent=info.persistent,
    )
    room = None
    if copying:
        rooms = [
            (disk_probes.get(p.info.target) or probes.NO_PROBE).room_kib
            for p in plans
            if p.copy_candidate and same_file[p.info.target] is not True
        ]
        # Several directories: the smallest free space (the check compares it with the sum of all copies).
        room = min(rooms) if rooms and all(r is not None for r in rooms) else None

    names = {d.name for d in dst.domains or ()}
    uuids = {d.uuid.lower() for d in dst.domains or ()}
    if port is None:  # no listener: the attempt went to the SSH port
        address_ok, ports_ok = _ADDRESS_ANSWERS.get(connect or ""), None
    else:
        address_ok, ports_ok = _address_answers(connect, fallback), _PORT_OPEN.get(connect or "")
    pair = PairFacts(
        source=src.side(),
        destination=dst.side(),
        source_resolves_destination=done(f_res_src),
        destination_resolves_source=done(f_res_dst),
        migration_address_reachable=address_ok,
        ports_reachable=ports_ok,
        destination_has_domain_name=bool(info and dst.domains is not None and info.name in names),
        destination_has_domain_uuid=bool(info and dst.domains is not None and info.uuid.lower() in uuids),
        cpu_compare=done(f_compare) or "unknown",
        destination_pool_room_kib=room,
        destination_pool_targets=dst.pool_targets,
    )
    return pair, guest


def _compare_cpu(src_conn, dst_conn, info: lv.DomainInfo) -> str:
    xml = mg.domain_xml(src_conn, info.uuid, migratable=True)
    return mg.compare_guest_cpu(dst_conn, guest_xml=xml, arch=info.arch, domain_type=info.domain_type,
                                machine=info.machine)


def gather_pair(*, source: Host, destination: Host, guest_uuid: str, options: MigrationOptions):
    """Facts for the preflight of moving a guest between two inventory hosts: (PairFacts, GuestSide).

    Opens a session to each host for the length of the probes. Adapter errors propagate.
    """
    from hosts import access  # needs Django; gather() itself does not (bench/ runs it without)

    with access.open_session(source) as src, access.open_session(destination) as dst:
        return gather(
            source=Endpoint(name=source.name, session=src, in_maintenance=source.in_maintenance),
            destination=Endpoint(name=destination.name, session=dst, in_maintenance=destination.in_maintenance),
            guest_uuid=guest_uuid,
            options=options,
        )
