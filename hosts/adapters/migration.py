"""Live migration through libvirt: start it, read its job, steer it, abort it.

Plain Python, no Django. Every function takes an open connection (from
``hosts.adapters.libvirt.open_connection``) and a guest UUID.
``libvirt.libvirtError`` never leaves this module: an aborted job becomes
MigrationAborted, the rest what ``libvirt.translate_error`` makes of it
(DomainNotFound, HostUnreachable, LibvirtFailure).

Which host keeps what, as measured in the lab (libvirt 9.0, QEMU 7.2):

- During a migration the *source* reports the job (``job_stats``): memory and
  disk progress, dirty rate, iteration. The destination's copy refuses job
  statistics while the migration comes in ("migration statistics are
  available only on the source host"); ``domain_presence`` counts that refusal
  as an active job.
- After a successful peer-to-peer migration the finished job's statistics
  (``completed_job_stats``: downtime, setup time, total time, bytes moved;
  operation "incoming migration") are kept by the *destination*; the source's
  copy is gone (undefine-source). After an aborted migration the source keeps
  none (type "none"): the outcome is the MigrationAborted that ``migrate``
  raised.
- ``migrate`` blocks until the end; job stats, downtime, speed and abort
  answer at once meanwhile, from the same connection or a second one (the lab
  tests use a second, as a progress loop in another thread would).
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import libvirt

from .errors import AdapterError, HostUnreachable, LibvirtFailure, MigrationAborted
from .libvirt import reason_name, state_name, translate_error

log = logging.getLogger(__name__)

# virDomainJobType values meaning "a job is running".
_ACTIVE_JOB_TYPES = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)

# virDomainJobOperation (the "operation" field of job stats), libvirt-domain.h.
JOB_OPERATIONS = {
    0: "unknown job",
    1: "start",
    2: "save",
    3: "restore",
    4: "incoming migration",
    5: "outgoing migration",
    6: "snapshot",
    7: "snapshot revert",
    8: "memory dump",
    9: "backup",
    10: "snapshot delete",
}

# virDomainBlockJobType, libvirt-domain.h.
BLOCK_JOB_TYPES = {
    0: "block job",
    1: "block pull",
    2: "block copy",
    3: "block commit",
    4: "block commit",
    5: "backup",
}

# CPU modes libvirt does not compare: host-passthrough (and "maximum") hand the
# guest whatever the host has, so there is no model to check.
_UNCOMPARABLE_CPU_MODES = {"host-passthrough", "maximum"}


@dataclass(frozen=True)
class BlockSize:
    """One disk's sizes in bytes, as ``virDomainGetBlockInfo`` reports them."""

    capacity: int  # what the guest sees
    allocation: int  # what the image really uses on its storage (less for sparse/qcow2 images)
    physical: int  # the file's or device's size on the host


@dataclass(frozen=True)
class PresenceInfo:
    """A guest as one host shows it now; ``state``/``reason`` are libvirt's names."""

    exists: bool
    state: str | None
    reason: str | None
    job_active: bool
    persistent: bool


# --------------------------------------------------------------------------
# Errors and lookup


def _translate(exc: libvirt.libvirtError, *, action: str) -> AdapterError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_OPERATION_ABORTED:
        return MigrationAborted(f"{action}: {message}", code=code)
    if code == libvirt.VIR_ERR_OPERATION_FAILED:
        # The operation itself failed ("job 'migration out' failed: Unable to write
        # to socket: Broken pipe"): words about sockets here are QEMU's migration
        # stream, not our connection to libvirtd.
        return LibvirtFailure(f"{action}: {message}", code=code)
    return translate_error(exc, action=action)


# Guests whose job this process asked libvirt to abort, while a migrate() of
# theirs runs. QEMU 7.2 sometimes reports a cancelled migration as failed
# ("Unable to write to socket: Broken pipe": its stream broke before it saw the
# cancel; about one abort in five in the lab), so migrate() consults this to
# still raise MigrationAborted. An abort requested by another process is not
# seen here; its caller knows it asked.
_abort_lock = threading.Lock()
_migrating: dict[str, bool] = {}  # uuid -> abort requested


def _note_abort(domain_uuid: str, requested: bool) -> None:
    with _abort_lock:
        if domain_uuid.lower() in _migrating:
            _migrating[domain_uuid.lower()] = requested


def _domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        raise _translate(exc, action=f"looking up guest {uuid}") from exc


def _redact(uri: str) -> str:
    return uri.split("?", 1)[0]


# --------------------------------------------------------------------------
# Migrating


def migrate(
    src_conn: libvirt.virConnect,
    *,
    domain_uuid: str,
    dest_uri: str,
    flags: int,
    params: Mapping[str, object],
    dest_conn: libvirt.virConnect | None = None,
) -> None:
    """Migrate the guest and block until libvirt says the migration ended.

    Peer-to-peer (``flags`` has VIR_MIGRATE_PEER2PEER): the *source libvirtd*
    connects to ``dest_uri`` itself, so the URI must work from the source host
    (its own credentials, its own known_hosts for qemu+ssh). Managed (no
    PEER2PEER): this process drives both daemons and ``dest_conn`` is required.

    ``flags``/``params`` come from ``migrations_app.options.libvirt_flags`` /
    ``libvirt_params``. Raises MigrationAborted when the job was aborted
    (also when QEMU reported the cancelled job as failed, if the abort came
    through ``abort_job`` in this process), otherwise LibvirtFailure & co.
    with libvirt's message.
    """
    peer_to_peer = bool(flags & libvirt.VIR_MIGRATE_PEER2PEER)
    if not peer_to_peer and dest_conn is None:
        raise ValueError("a managed (non peer-to-peer) migration needs dest_conn")
    dom = _domain(src_conn, domain_uuid)
    key = domain_uuid.lower()
    with _abort_lock:
        _migrating[key] = False
    try:
        if peer_to_peer:
            dom.migrateToURI3(dest_uri, dict(params), flags)
        else:
            dom.migrate3(dest_conn, dict(params), flags)
    except libvirt.libvirtError as exc:
        error = _translate(exc, action=f"migrating guest {domain_uuid} to {_redact(dest_uri)}")
        with _abort_lock:
            aborted = _migrating.get(key, False)
        if aborted and not isinstance(error, MigrationAborted):
            error = MigrationAborted(f"{error.message} (after the job was aborted)", code=exc.get_error_code())
        raise error from exc
    finally:
        with _abort_lock:
            _migrating.pop(key, None)


def job_stats(conn: libvirt.virConnect, domain_uuid: str) -> dict:
    """The running job's raw statistics (``virDomainGetJobStats``); ``{}`` when no job runs.

    Ask the source host: the destination refuses while a migration comes in.
    Normalise with ``migrations_app.policy.JobInfo.from_stats``.
    """
    dom = _domain(conn, domain_uuid)
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return {}  # "domain is not running": it has no job (it may just have left)
        raise _translate(exc, action=f"reading the job of guest {domain_uuid}") from exc
    return dict(stats) if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE else {}


def completed_job_stats(conn: libvirt.virConnect, domain_uuid: str) -> dict:
    """The last finished job's statistics (VIR_DOMAIN_JOB_STATS_COMPLETED); ``{}`` if none kept.

    After a successful migration ask the *destination*: it holds downtime,
    setup time, total time and bytes moved (type 3, "completed"). After an
    abort the source has none. libvirt forgets them when the daemon restarts.
    """
    dom = _domain(conn, domain_uuid)
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError as exc:
        raise _translate(exc, action=f"reading the last job of guest {domain_uuid}") from exc
    return dict(stats) if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE else {}


def _act(conn: libvirt.virConnect, domain_uuid: str, verb: str, call) -> None:
    dom = _domain(conn, domain_uuid)
    try:
        call(dom)
    except libvirt.libvirtError as exc:
        raise _translate(exc, action=f"{verb} guest {domain_uuid}") from exc


def abort_job(conn: libvirt.virConnect, domain_uuid: str) -> None:
    """Cancel the guest's running job (on the source); its ``migrate`` call then raises MigrationAborted."""
    _note_abort(domain_uuid, True)
    try:
        _act(conn, domain_uuid, "aborting the job of", lambda dom: dom.abortJob())
    except AdapterError:
        _note_abort(domain_uuid, False)
        raise


def set_max_downtime(conn: libvirt.virConnect, domain_uuid: str, ms: int) -> None:
    """Allow the final pause of a running live migration to last up to ``ms`` milliseconds."""
    _act(conn, domain_uuid, "setting the maximum downtime of", lambda dom: dom.migrateSetMaxDowntime(int(ms), 0))


def set_max_speed(conn: libvirt.virConnect, domain_uuid: str, mibps: int) -> None:
    """Limit the migration's bandwidth to ``mibps`` MiB/s (also works while it runs)."""
    _act(conn, domain_uuid, "setting the migration bandwidth of", lambda dom: dom.migrateSetMaxSpeed(int(mibps), 0))


def start_postcopy(conn: libvirt.virConnect, domain_uuid: str) -> None:
    """Switch a running migration started with VIR_MIGRATE_POSTCOPY to post-copy now."""
    _act(conn, domain_uuid, "switching to post-copy", lambda dom: dom.migrateStartPostCopy(0))


# --------------------------------------------------------------------------
# Where the guest is, and what it is doing


def _job_active(dom: libvirt.virDomain) -> bool:
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
            # The destination of a migration in progress answers only this.
            return True
        if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_SUPPORT):
            # "domain is not running", or a driver without jobs (test:///): no job to wait for.
            return False
        raise
    return stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in _ACTIVE_JOB_TYPES


def domain_presence(conn: libvirt.virConnect, domain_uuid: str) -> PresenceInfo:
    """Whether the host has the guest, its state and reason, and whether a job runs on it.

    An absent guest is ``exists=False`` (not an error). A host that does not
    answer raises HostUnreachable, which the caller records as "not reachable".
    """
    absent = PresenceInfo(exists=False, state=None, reason=None, job_active=False, persistent=False)
    try:
        dom = conn.lookupByUUIDString(domain_uuid)
        state, reason = dom.state()
        persistent = bool(dom.isPersistent())
        job_active = _job_active(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return absent  # never there, or gone between the calls
        raise _translate(exc, action=f"looking for guest {domain_uuid}") from exc
    return PresenceInfo(
        exists=True,
        state=state_name(state),
        reason=reason_name(state, reason),
        job_active=job_active,
        persistent=persistent,
    )


def domain_xml(conn: libvirt.virConnect, domain_uuid: str, *, secure: bool = False, migratable: bool = True) -> str:
    """The guest's XML. ``migratable`` gives the form libvirt sends to a destination;
    ``secure`` includes passwords (VNC, …) and needs a read-write connection."""
    flags = (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0) | (
        libvirt.VIR_DOMAIN_XML_MIGRATABLE if migratable else 0
    )
    dom = _domain(conn, domain_uuid)
    try:
        return dom.XMLDesc(flags)
    except libvirt.libvirtError as exc:
        raise _translate(exc, action=f"reading the XML of guest {domain_uuid}") from exc


def block_size(conn: libvirt.virConnect, domain_uuid: str, target: str) -> BlockSize:
    """Sizes of the guest's disk ``target`` ("vda"), e.g. the room a storage copy needs."""
    dom = _domain(conn, domain_uuid)
    try:
        capacity, allocation, physical = dom.blockInfo(target, 0)
    except libvirt.libvirtError as exc:
        raise _translate(exc, action=f"reading the size of disk {target} of guest {domain_uuid}") from exc
    return BlockSize(capacity=int(capacity), allocation=int(allocation), physical=int(physical))


def job_operation(stats: Mapping[str, object]) -> str | None:
    """What a running job (raw ``job_stats``) is doing, in words; None when no job runs."""
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in _ACTIVE_JOB_TYPES:
        return None
    operation = stats.get("operation", 0)
    return JOB_OPERATIONS.get(operation if isinstance(operation, int) else 0, "unknown job")


def current_operation(
    conn: libvirt.virConnect, domain_uuid: str, *, disk_targets: Sequence[str] = ()
) -> str | None:
    """Another job on a running guest, in words ("outgoing migration", "block copy on vda"…); None = idle.

    Covers the domain job (migration, save, dump, snapshot, backup) and block
    jobs on ``disk_targets`` (copy, commit, pull), which libvirt reports apart.
    """
    dom = _domain(conn, domain_uuid)
    try:
        found = job_operation(dom.jobStats(0))
        if found:
            return found
        for target in disk_targets:
            info = dom.blockJobInfo(target, 0)
            if info:
                return f"{BLOCK_JOB_TYPES.get(info.get('type', 0), 'block job')} on {target}"
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
            return "incoming migration"
        raise _translate(exc, action=f"reading the jobs of guest {domain_uuid}") from exc
    return None


@dataclass(frozen=True)
class GuestNow:
    """The source's guest right now: what a re-check of fresh preflight facts reads again."""

    exists: bool
    state: str | None  # libvirt's state name
    active_operation: str | None  # as current_operation says; None = idle


@dataclass(frozen=True)
class HostNow:
    """A destination right now: free memory and the guests it holds (what may have changed)."""

    memory_free_kib: int
    domain_names: frozenset[str]
    domain_uuids: frozenset[str]  # lowercased
    running_vcpus: int  # vCPUs of its active guests


def guest_now(conn: libvirt.virConnect, domain_uuid: str, *, disk_targets: Sequence[str] = ()) -> GuestNow:
    """The guest's state and any job on it, on an open connection (a few calls, no XML)."""
    try:
        dom = conn.lookupByUUIDString(domain_uuid)
        state, _reason = dom.state()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return GuestNow(exists=False, state=None, active_operation=None)
        raise _translate(exc, action=f"reading the state of guest {domain_uuid}") from exc
    name = state_name(state)
    busy = current_operation(conn, domain_uuid, disk_targets=disk_targets) if name in ("running", "paused",
                                                                                         "blocked") else None
    return GuestNow(exists=True, state=name, active_operation=busy)


def host_now(conn: libvirt.virConnect) -> HostNow:
    """Free memory and every guest (name, UUID, running vCPUs) in two calls: the domain stats and free memory."""
    try:
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU, 0)
        free_kib = int(conn.getFreeMemory()) // 1024
    except libvirt.libvirtError as exc:
        raise _translate(exc, action="reading free memory and guests") from exc
    names, uuids, vcpus = set(), set(), 0
    for dom, values in stats:
        names.add(dom.name())
        uuids.add(dom.UUIDString().lower())
        if state_name(int(values.get("state.state", 0))) in ("running", "paused", "blocked"):
            vcpus += int(values.get("vcpu.current", 0) or 0)
    return HostNow(memory_free_kib=free_kib, domain_names=frozenset(names), domain_uuids=frozenset(uuids),
                   running_vcpus=vcpus)


# --------------------------------------------------------------------------
# CPU


def guest_cpu_xml(guest_xml: str) -> tuple[str | None, str | None]:
    """(the guest's ``<cpu>`` element as XML, its mode) from domain XML; (None, None) without one."""
    root = ET.fromstring(guest_xml)
    cpu = root.find("cpu") if root.tag == "domain" else (root if root.tag == "cpu" else None)
    if cpu is None:
        return None, None
    model = (cpu.findtext("model") or "").strip()
    mode = cpu.get("mode") or ("custom" if model else None)
    return ET.tostring(cpu, encoding="unicode"), mode


def compare_guest_cpu(
    dest_conn: libvirt.virConnect, *, guest_xml: str, arch: str, domain_type: str, machine: str | None
) -> str:
    """Can the destination run the guest's CPU? ("identical" | "superset" | "incompatible" | "error: …" | "unknown").

    Asks the destination's libvirt (``virConnectCompareHypervisorCPU``) about
    the guest's ``<cpu>`` for that arch, domain type and machine type, which is
    what libvirt checks when the guest arrives. "error: <libvirt's message>"
    when libvirt cannot compare (e.g. "Unknown CPU model EPYC-Milan" on a
    destination whose CPU map lacks the model).

    "unknown" means there is nothing libvirt would compare: the guest has no
    ``<cpu>`` element (it gets QEMU's default model, which runs anywhere the
    arch does) or uses host-passthrough/maximum (it sees the host's exact CPU;
    only identical hosts are safe, and libvirt does not check that).
    HostUnreachable if the destination does not answer.

    Note: with domain type "qemu" (TCG), libvirt reports named models whose
    features TCG cannot emulate (e.g. EPYC-Milan) as incompatible.
    """
    cpu_xml, mode = guest_cpu_xml(guest_xml)
    if cpu_xml is None or mode in _UNCOMPARABLE_CPU_MODES:
        return "unknown"
    if mode == "host-model" and not (ET.fromstring(cpu_xml).findtext("model") or "").strip():
        # Not expanded yet (an inactive definition): libvirt derives it from the
        # destination's CPU when the guest starts there.
        return "unknown"
    try:
        result = dest_conn.compareHypervisorCPU(None, arch or None, machine or None, domain_type or None, cpu_xml, 0)
    except libvirt.libvirtError as exc:
        error = translate_error(exc, action="comparing the guest CPU")
        if isinstance(error, HostUnreachable):
            raise error from exc
        return f"error: {exc.get_error_message() or exc}"
    return {
        libvirt.VIR_CPU_COMPARE_IDENTICAL: "identical",
        libvirt.VIR_CPU_COMPARE_SUPERSET: "superset",
        libvirt.VIR_CPU_COMPARE_INCOMPATIBLE: "incompatible",
    }.get(result, "error: unexpected comparison result")


def active_pool_targets(conn: libvirt.virConnect) -> list[str]:
    """Target paths of the host's active storage pools.

    With copy-storage, the destination's libvirt creates each copied disk
    inside an active pool whose target path is the disk's directory; without
    one it fails with "Storage pool not found: no storage pool with matching
    target path".
    """
    try:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        targets = []
        for pool in pools:
            path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            if path:
                targets.append(path.rstrip("/") or "/")
        return targets
    except libvirt.libvirtError as exc:
        raise _translate(exc, action="list storage pools") from exc
