"""Talk to libvirt on a hypervisor host; return plain dataclasses.

- ``open_connection(uri, ssh_target=…)`` is the only way in; it always closes.
  For ``qemu+ssh://`` URIs libvirt runs OpenSSH through a temporary wrapper
  that allows exactly the pinned host key (its own known_hosts file, strict
  checking, HostKeyAlgorithms limited to the pinned key's type) and logs in
  with the portal's key, so libvirt checks the same host key as our paramiko
  sessions. Plain ``qemu+ssh`` would trust the portal user's
  ~/.ssh/known_hosts instead. libvirt's in-process transports were tried and
  rejected: with this libvirt (9.0) ``qemu+libssh`` fails on any reply larger
  than about 1 KiB, and ``qemu+libssh2`` picks the host key type itself
  (ECDSA before ed25519), so an ed25519 pin would not match a host that has
  both keys.
- ``get_host_facts`` / ``list_domains`` read; ``start_domain`` & co. act.
- ``EventWatcher`` delivers domain lifecycle events from libvirt's event loop.

``libvirt.libvirtError`` never leaves this module: it becomes LibvirtFailure,
DomainNotFound, HostUnreachable, HostAuthError or HostKeyMismatch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import libvirt

from .errors import (
    AdapterError,
    DomainNotFound,
    HostAuthError,
    HostKeyMismatch,
    HostUnreachable,
    LibvirtFailure,
    SnapshotNotFound,
)
from .ssh import HostKeyInfo, SSHTarget, check_host_key, fetch_host_key

log = logging.getLogger(__name__)

# Keepalive for long-lived (event) connections: a ping every 5 s, dead after
# 3 unanswered ones, so a vanished host is noticed within ~20 s.
EVENT_KEEPALIVE_INTERVAL_S = 5
EVENT_KEEPALIVE_COUNT = 3

_SSH_TRANSPORTS = {"ssh", "libssh", "libssh2"}
# URI parameters that choose keys or weaken host key checking; any the caller
# passed are dropped, the wrapper decides those.
_OWNED_URI_PARAMS = {"keyfile", "known_hosts", "known_hosts_verify", "sshauth", "no_verify", "command"}

_CONNECTION_LOST_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}
_CONNECTION_LOST_TEXT = re.compile(
    r"client socket is closed|connection (?:reset|refused|closed)|end of file|"
    r"broken pipe|no route to host|cannot recv data|cannot send data|keepalive timeout",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    host_uuid: str
    arch: str
    cpu_vendor: str
    cpu_model: str
    cpu_features: list[str]
    hypervisor: str
    hypervisor_version: str
    libvirt_version: str
    domain_types: list[str]
    machine_types: list[str]
    memory_total_kib: int
    memory_free_kib: int
    cpus: int


@dataclass(frozen=True)
class DiskInfo:
    target: str
    device: str
    source_type: str
    source: str
    protocol: str
    format: str
    readonly: bool
    shareable: bool


@dataclass(frozen=True)
class NicInfo:
    mac: str
    type: str
    source: str
    model: str


# The portal's placement tags in a guest's libvirt metadata, read by host maintenance:
#   <metadata><vmportal:placement xmlns:vmportal="urn:vmportal:placement:1"
#              pinned="yes" pin-to="kvm-b" anti-affinity="db,web"/></metadata>
# (set with `virsh metadata GUEST --uri urn:vmportal:placement:1 --key vmportal --set '<placement …/>'`).
PLACEMENT_NS = "urn:vmportal:placement:1"
_MAX_TAGS = 16


@dataclass(frozen=True)
class PlacementTags:
    pinned: bool = False  # must not leave its host
    pin_to: str = ""  # may only go to this host
    anti_affinity: tuple[str, ...] = ()  # groups whose members never share a host


def parse_placement_tags(root: ET.Element) -> PlacementTags:
    """The placement tags of a parsed domain XML; malformed values are ignored, names bounded."""
    tag = root.find(f"metadata/{{{PLACEMENT_NS}}}placement")
    if tag is None:
        return PlacementTags()
    groups = tuple(sorted({g.strip()[:63] for g in (tag.get("anti-affinity") or "").split(",") if g.strip()}))
    return PlacementTags(
        pinned=(tag.get("pinned") or "").strip().lower() in ("yes", "true", "1"),
        pin_to=(tag.get("pin-to") or "").strip()[:63],
        anti_affinity=groups[:_MAX_TAGS],
    )


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    reason: str
    vcpus: int
    memory_kib: int
    arch: str
    domain_type: str
    machine: str
    persistent: bool
    autostart: bool
    cpu_mode: str | None
    cpu_model: str | None
    disks: list[DiskInfo]
    nics: list[NicInfo]
    id: int | None
    max_memory_kib: int = 0
    placement: PlacementTags = PlacementTags()
    host_devices: int = 0  # <hostdev> passthrough devices: the guest cannot migrate live
    # The persistent definition (secrets included) as list_domains read it; "" when not read.
    definition_xml: str = ""
    managed_save: bool = False  # libvirt keeps a managed-save image: the next start resumes it


@dataclass(frozen=True)
class DomainEvent:
    domain_uuid: str
    domain_name: str
    event: str
    detail: str


# --------------------------------------------------------------------------
# State, reason and event names (pure)

# The binding only defines the constants of the libvirt it was built
# against, so these tables are indexed by the stable enum values themselves:
# state number -> (state name, reason names indexed by VIR_DOMAIN_<STATE>_*).
_STATES: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("nostate", ("unknown",)),
    1: (
        "running",
        (
            "unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
            "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
            "postcopy_failed",
        ),
    ),
    2: ("blocked", ("unknown",)),
    3: (
        "paused",
        (
            "unknown", "user", "migrating", "saving", "dumping", "io_error", "watchdog",
            "from_snapshot", "shutting_down", "snapshot", "crashed", "starting_up",
            "postcopy", "postcopy_failed", "api_error",
        ),
    ),
    4: ("shutdown", ("unknown", "user")),
    5: (
        "shutoff",
        (
            "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
            "from_snapshot", "daemon",
        ),
    ),
    6: ("crashed", ("unknown", "panicked")),
    7: ("pmsuspended", ("unknown",)),
}

DOMAIN_STATES = tuple(name for name, _ in _STATES.values())

# event number -> (event name, detail names indexed by VIR_DOMAIN_EVENT_<EVENT>_*)
_EVENTS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("defined", ("added", "updated", "renamed", "from_snapshot")),
    1: ("undefined", ("removed", "renamed")),
    2: ("started", ("booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated")),
    3: (
        "suspended",
        (
            "paused", "migrated", "io_error", "watchdog", "restored", "from_snapshot",
            "api_error", "postcopy", "postcopy_failed",
        ),
    ),
    4: ("resumed", ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed")),
    5: (
        "stopped",
        ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"),
    ),
    6: ("shutdown", ("finished", "guest", "host")),
    7: ("pmsuspended", ("memory", "disk")),
    8: ("crashed", ("panicked", "crashloaded")),
}

_CLOSE_REASONS = {0: "error", 1: "eof", 2: "keepalive", 3: "client"}


def state_name(state: int) -> str:
    """VIR_DOMAIN_<STATE> number → "running", "paused", "shutoff", …"""
    entry = _STATES.get(state)
    return entry[0] if entry else "nostate"


def reason_name(state: int, reason: int) -> str:
    """Reason number (its meaning depends on the state) → "booted", "migrating", …"""
    reasons = _STATES.get(state, ("", ()))[1]
    return reasons[reason] if 0 <= reason < len(reasons) else "unknown"


def event_names(event: int, detail: int) -> tuple[str, str]:
    """Lifecycle event and detail numbers → ("suspended", "paused"), …"""
    name, details = _EVENTS.get(event, ("unknown", ()))
    return name, details[detail] if 0 <= detail < len(details) else "unknown"


def format_version(number: int) -> str:
    """libvirt's packed version (major*1e6 + minor*1e3 + micro) → "9.0.0"."""
    major, rest = divmod(int(number), 1_000_000)
    minor, micro = divmod(rest, 1_000)
    return f"{major}.{minor}.{micro}"


# --------------------------------------------------------------------------
# XML parsing (pure)

_UNIT_TO_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024,
    "k": 1, "kib": 1, "kb": 1000 / 1024,
    "m": 1024, "mib": 1024, "mb": 1000**2 / 1024,
    "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024,
    "t": 1024**3, "tib": 1024**3, "tb": 1000**4 / 1024,
}


def _memory_kib(element: ET.Element | None) -> int:
    if element is None or not (element.text or "").strip():
        return 0
    factor = _UNIT_TO_KIB.get((element.get("unit") or "KiB").lower(), 1)
    try:
        return int(int(element.text.strip()) * factor)
    except ValueError:
        return 0


def _text(element: ET.Element | None, default: str = "") -> str:
    if element is None or element.text is None:
        return default
    return element.text.strip()


def parse_capabilities(caps_xml: str) -> dict:
    """Host facts from ``getCapabilities()`` XML.

    Returns host_uuid, arch, cpu_vendor, cpu_model, cpu_features, domain_types
    and machine_types (those of guests with the host's architecture, or of
    all guests if none matches).
    """
    root = ET.fromstring(caps_xml)
    cpu = root.find("host/cpu")
    arch = _text(cpu.find("arch") if cpu is not None else None)
    features = [f.get("name") for f in cpu.findall("feature")] if cpu is not None else []

    arch_elements = root.findall("guest/arch")
    same_arch = [a for a in arch_elements if a.get("name") == arch]
    chosen = same_arch or arch_elements
    domain_types: list[str] = []
    machine_types: list[str] = []
    for arch_el in chosen:
        for dom in arch_el.findall("domain"):
            if dom.get("type") and dom.get("type") not in domain_types:
                domain_types.append(dom.get("type"))
        for machine in arch_el.findall("machine") + arch_el.findall("domain/machine"):
            name = _text(machine)
            if name and name not in machine_types:
                machine_types.append(name)

    return {
        "host_uuid": _text(root.find("host/uuid")),
        "arch": arch,
        "cpu_vendor": _text(cpu.find("vendor") if cpu is not None else None),
        "cpu_model": _text(cpu.find("model") if cpu is not None else None),
        "cpu_features": [f for f in features if f],
        "domain_types": domain_types,
        "machine_types": machine_types,
    }


def _disk_from_xml(disk: ET.Element) -> DiskInfo:
    source_type = disk.get("type", "")
    source_el = disk.find("source")
    source = ""
    protocol = ""
    if source_el is not None:
        if source_type == "network":
            protocol = source_el.get("protocol", "")
            source = source_el.get("name", "")
            hosts = [h.get("name", "") for h in source_el.findall("host") if h.get("name")]
            if hosts and protocol != "rbd":
                source = f"{hosts[0]}/{source}" if source else hosts[0]
        elif source_type == "volume":
            pool, volume = source_el.get("pool", ""), source_el.get("volume", "")
            source = f"{pool}/{volume}" if pool or volume else ""
        else:
            source = next(
                (source_el.get(attr) for attr in ("file", "dev", "dir", "name") if source_el.get(attr)), ""
            )
    driver = disk.find("driver")
    target = disk.find("target")
    return DiskInfo(
        target=target.get("dev", "") if target is not None else "",
        device=disk.get("device", "disk"),
        source_type=source_type,
        source=source,
        protocol=protocol,
        format=driver.get("type", "") if driver is not None else "",
        readonly=disk.find("readonly") is not None,
        shareable=disk.find("shareable") is not None,
    )


def _nic_from_xml(iface: ET.Element) -> NicInfo:
    mac = iface.find("mac")
    source_el = iface.find("source")
    source = ""
    if source_el is not None:
        source = (
            source_el.get("network")
            or source_el.get("bridge")
            or source_el.get("dev")
            or source_el.get("path")
            or ""
        )
    model = iface.find("model")
    return NicInfo(
        mac=mac.get("address", "") if mac is not None else "",
        type=iface.get("type", ""),
        source=source,
        model=model.get("type", "") if model is not None else "",
    )


def parse_domain_xml(
    domain_xml: str,
    *,
    state: int = 0,
    reason: int = 0,
    persistent: bool = True,
    autostart: bool = False,
    id: int | None = None,  # noqa: A002 - mirrors libvirt's domain ID
) -> DomainInfo:
    """Build a DomainInfo from ``XMLDesc()`` text plus the live bits XML lacks.

    Missing elements give empty strings / zeros rather than errors: guests
    defined by hand or by old tools often omit them.
    """
    root = ET.fromstring(domain_xml)
    os_type = root.find("os/type")
    vcpu = root.find("vcpu")
    vcpus = 0
    if vcpu is not None:
        try:
            vcpus = int(vcpu.get("current") or _text(vcpu) or 0)
        except ValueError:
            vcpus = 0
    max_memory = _memory_kib(root.find("memory"))
    current_memory = _memory_kib(root.find("currentMemory")) or max_memory

    cpu = root.find("cpu")
    cpu_mode = cpu_model = None
    if cpu is not None:
        cpu_model = _text(cpu.find("model")) or None
        # libvirt's default mode is "custom" when a model is given
        cpu_mode = cpu.get("mode") or ("custom" if cpu_model else None)

    if id is None:
        raw_id = root.get("id")
        id = int(raw_id) if raw_id and raw_id.lstrip("-").isdigit() and int(raw_id) >= 0 else None

    return DomainInfo(
        name=_text(root.find("name")),
        uuid=_text(root.find("uuid")),
        state=state_name(state),
        reason=reason_name(state, reason),
        vcpus=vcpus,
        memory_kib=current_memory,
        arch=os_type.get("arch", "") if os_type is not None else "",
        domain_type=root.get("type", ""),
        machine=os_type.get("machine", "") if os_type is not None else "",
        persistent=persistent,
        autostart=autostart,
        cpu_mode=cpu_mode,
        cpu_model=cpu_model,
        disks=[_disk_from_xml(d) for d in root.findall("devices/disk")],
        nics=[_nic_from_xml(i) for i in root.findall("devices/interface")],
        id=id,
        max_memory_kib=max_memory,
        placement=parse_placement_tags(root),
        host_devices=len(root.findall("devices/hostdev")),
    )


# --------------------------------------------------------------------------
# Errors

_error_handler_lock = threading.Lock()
_error_handler_registered = False


def _silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr unless a handler is registered."""
    global _error_handler_registered
    with _error_handler_lock:
        if not _error_handler_registered:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _error_handler_registered = True


def _is_connection_lost(exc: libvirt.libvirtError) -> bool:
    if exc.get_error_code() in _CONNECTION_LOST_CODES:
        return True
    return bool(_CONNECTION_LOST_TEXT.search(exc.get_error_message() or str(exc)))


def translate_error(exc: libvirt.libvirtError, *, action: str = "") -> AdapterError:
    """libvirtError → DomainNotFound / HostUnreachable / LibvirtFailure."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    text = f"{action}: {message}" if action else message
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(text, code=code)
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotNotFound(text, code=code)
    if _is_connection_lost(exc):
        return HostUnreachable(f"Lost the libvirt connection ({text})", code=code)
    return LibvirtFailure(text, code=code)


# --------------------------------------------------------------------------
# Connections


def is_ssh_uri(uri: str) -> bool:
    """Does libvirt reach this URI's daemon over SSH (qemu+ssh, +libssh, +libssh2)?"""
    scheme = uri.split(":", 1)[0]
    return "+" in scheme and scheme.rsplit("+", 1)[1] in _SSH_TRANSPORTS


@dataclass
class _PreparedURI:
    uri: str
    workdir: str | None = None
    host: str = ""
    port: int = 22
    pinned: HostKeyInfo | None = None


# Name under which the pinned key is stored in the temporary known_hosts;
# HostKeyAlias makes ssh look it up by this name whatever the address form.
PINNED_HOST_ALIAS = "vmportal-pinned-host"

_HOST_KEY_ALGORITHMS = {"ssh-rsa": "rsa-sha2-512,rsa-sha2-256"}


def ssh_wrapper_script(
    *, ssh_binary: str, known_hosts: str, keyfile: str, key_type: str, connect_timeout: float, log_file: str
) -> str:
    """The shell script libvirt runs instead of ``ssh`` (see the module docstring)."""
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": PINNED_HOST_ALIAS,
        "HostKeyAlgorithms": _HOST_KEY_ALGORITHMS.get(key_type, key_type),
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "IdentitiesOnly": "yes",
        "IdentityFile": keyfile,
        "IdentityAgent": "none",
        "ConnectTimeout": str(max(1, round(connect_timeout))),
    }
    argv = [ssh_binary, "-F", "/dev/null"]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    # ssh keeps the first value it sees for an option, so ours win over
    # anything libvirt adds after them. Its messages go to a file: libvirt
    # reads them through a small buffer and reports only "Value too large"
    # when they overflow it, as a host key warning does.
    command = " ".join(shlex.quote(a) for a in argv)
    return f'#!/bin/sh\nexec {command} "$@" 2>>{shlex.quote(log_file)}\n'


def _prepare_uri(uri: str, ssh_target: SSHTarget | None, known_hosts_dir: str | None) -> _PreparedURI:
    """Point SSH URIs at a wrapper that only accepts the pinned key; others pass through."""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if transport not in _SSH_TRANSPORTS:
        return _PreparedURI(uri=uri)
    if ssh_target is None:
        raise AdapterError(
            f"Refusing to open {_redact(uri)} without the host's SSH settings.",
            hint="Pass the host's SSHTarget (key and pinned host key) so the host key is verified.",
        )
    host = parts.hostname or ssh_target.address
    port = parts.port or ssh_target.port
    if not ssh_target.pinned_host_key:
        # Raises HostKeyUnknown carrying the key the host presents.
        check_host_key(
            fetch_host_key(host, port, timeout=ssh_target.connect_timeout), None, address=host, port=port
        )
    if not ssh_target.private_key_pem:
        raise HostAuthError(
            f"libvirt over SSH to {host} needs the portal's private key; a password alone is not supported.",
            hint="Install the portal's public key for that user on the host.",
        )
    ssh_binary = shutil.which("ssh")
    if ssh_binary is None:
        raise AdapterError(
            "The OpenSSH client (ssh) is not installed on the portal machine.",
            hint="Install the openssh-client package; libvirt uses it for qemu+ssh:// connections.",
        )
    pinned = HostKeyInfo.from_openssh(ssh_target.pinned_host_key)
    user = parts.username or ssh_target.user

    workdir = tempfile.mkdtemp(prefix="vmportal-libvirt-", dir=known_hosts_dir)
    try:
        keyfile = os.path.join(workdir, "id_portal")
        known_hosts = os.path.join(workdir, "known_hosts")
        wrapper = os.path.join(workdir, "ssh")
        _write_private(keyfile, ssh_target.private_key_pem.rstrip("\n") + "\n")
        _write_private(known_hosts, f"{PINNED_HOST_ALIAS} {pinned.openssh}\n")
        _write_private(
            wrapper,
            ssh_wrapper_script(
                ssh_binary=ssh_binary,
                known_hosts=known_hosts,
                keyfile=keyfile,
                key_type=pinned.key_type,
                connect_timeout=ssh_target.connect_timeout,
                log_file=os.path.join(workdir, "ssh.log"),
            ),
            mode=0o700,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise

    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _OWNED_URI_PARAMS]
    params.append(("command", wrapper))
    netloc_host = f"[{host}]" if ":" in host else host
    netloc = f"{quote(user, safe='')}@{netloc_host}:{port}"
    new_uri = urlunsplit(
        (f"{driver}+ssh", netloc, parts.path or "/system", urlencode(params, quote_via=quote, safe="/"), "")
    )
    return _PreparedURI(uri=new_uri, workdir=workdir, host=host, port=port, pinned=pinned)


def _write_private(path: str, content: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)


def _read_ssh_log(prepared: _PreparedURI) -> str:
    if not prepared.workdir:
        return ""
    try:
        with open(os.path.join(prepared.workdir, "ssh.log"), errors="replace") as f:
            return f.read(65536)
    except OSError:
        return ""


def _translate_connect_error(
    exc: libvirt.libvirtError, uri: str, prepared: _PreparedURI, ssh_log: str = ""
) -> AdapterError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if prepared.pinned is not None:
        if "Host key verification failed" in ssh_log or "HOST IDENTIFICATION HAS CHANGED" in ssh_log:
            # Ask for the pinned type, as ssh did, to report the key it refused.
            try:
                actual = fetch_host_key(
                    prepared.host, prepared.port, key_type=prepared.pinned.key_type
                ).fingerprint
            except AdapterError:
                actual = "unknown"
            return HostKeyMismatch(
                expected_fingerprint=prepared.pinned.fingerprint,
                actual_fingerprint=actual,
                address=prepared.host,
                port=prepared.port,
            )
        if "Permission denied" in ssh_log:
            return HostAuthError(f"libvirt could not log in to {_redact(uri)}: {_last_line(ssh_log)}")
        if ssh_log.strip():
            message = _last_line(ssh_log)
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE):
        return HostAuthError(f"libvirt could not log in to {_redact(uri)}: {_last_line(message)}")
    return HostUnreachable(
        f"Cannot connect to libvirt at {_redact(uri)}: {_last_line(message)}",
        address=prepared.host or urlsplit(uri).hostname,
        code=code,
    )


def _last_line(message: str) -> str:
    """The last non-empty line: where ssh and libvirt put the actual error."""
    lines = [line.strip() for line in message.replace("\r", "").splitlines() if line.strip()]
    return lines[-1] if lines else message


def _redact(uri: str) -> str:
    """The URI without its query (which may name temporary key files)."""
    return uri.split("?", 1)[0]


def connect(
    uri: str, *, ssh_target: SSHTarget | None = None, known_hosts_dir: str | None = None
) -> libvirt.virConnect:
    """Open a libvirt connection; the caller must close it. Prefer open_connection."""
    _silence_libvirt_stderr()
    prepared = _prepare_uri(uri, ssh_target, known_hosts_dir)
    try:
        return libvirt.open(prepared.uri)
    except libvirt.libvirtError as exc:
        raise _translate_connect_error(exc, uri, prepared, _read_ssh_log(prepared)) from exc
    finally:
        # ssh has read the key and known_hosts by the time open() returns:
        # libvirt has already talked to the daemon through it.
        if prepared.workdir:
            shutil.rmtree(prepared.workdir, ignore_errors=True)


@contextmanager
def open_connection(
    uri: str, *, ssh_target: SSHTarget | None = None, known_hosts_dir: str | None = None
) -> Iterator[libvirt.virConnect]:
    """Yield a libvirt connection to ``uri`` and always close it.

    For ``qemu+ssh://`` (and ``+libssh``/``+libssh2``) URIs ``ssh_target`` is
    required: the host must present ``ssh_target.pinned_host_key``
    (HostKeyMismatch otherwise; HostKeyUnknown when nothing is pinned) and we
    log in with ``ssh_target.private_key_pem``. Temporary key files live in
    ``known_hosts_dir`` (default: the system temp dir) only while connecting.
    """
    conn = connect(uri, ssh_target=ssh_target, known_hosts_dir=known_hosts_dir)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            log.debug("closing libvirt connection to %s failed", _redact(uri), exc_info=True)


# --------------------------------------------------------------------------
# Reads


def get_host_facts(conn: libvirt.virConnect) -> HostFacts:
    """Identity, CPU, hypervisor and memory facts of the connected host."""
    try:
        caps = parse_capabilities(conn.getCapabilities())
        hostname = conn.getHostname()
        info = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
        try:
            memory_total_kib = int(conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)["total"])
        except (libvirt.libvirtError, KeyError):
            memory_total_kib = int(info[1]) * 1024
        memory_free_kib = int(conn.getFreeMemory()) // 1024
        hypervisor = conn.getType()
        hypervisor_version = format_version(conn.getVersion())
        libvirt_version = format_version(conn.getLibVersion())
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="reading host facts") from exc
    return HostFacts(
        hostname=hostname,
        host_uuid=caps["host_uuid"],
        arch=caps["arch"] or str(info[0]),
        cpu_vendor=caps["cpu_vendor"],
        cpu_model=caps["cpu_model"],
        cpu_features=caps["cpu_features"],
        hypervisor=hypervisor,
        hypervisor_version=hypervisor_version,
        libvirt_version=libvirt_version,
        domain_types=caps["domain_types"],
        machine_types=caps["machine_types"],
        memory_total_kib=memory_total_kib,
        memory_free_kib=memory_free_kib,
        cpus=int(info[2]),
    )


def domain_info(dom: libvirt.virDomain) -> DomainInfo:
    """DomainInfo of one libvirt domain object (raises libvirtError)."""
    state, reason = dom.state()
    active = dom.isActive()
    return parse_domain_xml(
        dom.XMLDesc(0),
        state=state,
        reason=reason,
        persistent=bool(dom.isPersistent()),
        autostart=bool(dom.autostart()) if dom.isPersistent() else False,
        id=dom.ID() if active else None,
    )


# listAllDomains filters (virConnectListAllDomainsFlags), asked of the host once per listing.
_LIST_PERSISTENT = 4
_LIST_MANAGEDSAVE = 256
_LIST_AUTOSTART = 1024
_STATS_STATE = 1  # VIR_DOMAIN_STATS_STATE


def list_domains(conn: libvirt.virConnect, *, definitions: bool = False) -> list[DomainInfo]:
    """All guests on the host, running or not, sorted by name.

    The host is asked a fixed number of times for what every guest shares (which are
    persistent, autostarted or have a managed-save image, and every guest's state in one bulk
    stats call), then once per guest for its definition. ``definitions`` also reads each
    persistent guest's inactive definition (secrets included): one more call per guest, made
    by the inventory refresh only.
    """
    try:
        domains = conn.listAllDomains(0)
        persistent = {dom.UUIDString() for dom in conn.listAllDomains(_LIST_PERSISTENT)}
        autostart = {dom.UUIDString() for dom in conn.listAllDomains(_LIST_AUTOSTART)}
        managed = ({dom.UUIDString() for dom in conn.listAllDomains(_LIST_MANAGEDSAVE)} if definitions else set())
        states = {dom.UUIDString(): values for dom, values in conn.getAllDomainStats(_STATS_STATE, 0)}
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="listing guests") from exc
    result = []
    for dom in domains:
        uuid = dom.UUIDString()
        try:
            state = states.get(uuid)
            if state is None:  # defined while we were listing: ask it alone
                info = domain_info(dom)
            else:
                domain_id = dom.ID()  # kept by the domain object: no call to the host
                info = parse_domain_xml(
                    dom.XMLDesc(0), state=int(state.get("state.state", 0)), reason=int(state.get("state.reason", 0)),
                    persistent=uuid in persistent, autostart=uuid in autostart,
                    id=domain_id if domain_id >= 0 else None,
                )
            if definitions and info.persistent:
                # Kept by the inventory so a guest of a host that died can be defined elsewhere.
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
                info = dataclasses.replace(info, definition_xml=xml, managed_save=uuid in managed)
            result.append(info)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we were listing
            raise translate_error(exc, action="reading guest") from exc
    return sorted(result, key=lambda d: d.name)


def get_domain(conn: libvirt.virConnect, uuid: str) -> DomainInfo:
    """One guest by UUID; DomainNotFound when absent."""
    dom = _lookup(conn, uuid)
    try:
        return domain_info(dom)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading guest {uuid}") from exc


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"looking up guest {uuid}") from exc


# --------------------------------------------------------------------------
# Actions


def _act(conn: libvirt.virConnect, uuid: str, verb: str, call: Callable[[libvirt.virDomain], object]) -> None:
    dom = _lookup(conn, uuid)
    try:
        call(dom)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"{verb} guest {uuid}") from exc


def start_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Boot a defined, shut-off guest."""
    _act(conn, uuid, "starting", lambda dom: dom.create())


def shutdown_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Ask the guest OS to shut down (ACPI); returns before it has stopped."""
    _act(conn, uuid, "shutting down", lambda dom: dom.shutdown())


def destroy_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Power the guest off immediately (like pulling the plug)."""
    _act(conn, uuid, "destroying", lambda dom: dom.destroy())


def suspend_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Pause the guest's vCPUs (it stays in memory)."""
    _act(conn, uuid, "suspending", lambda dom: dom.suspend())


def resume_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Resume a paused guest."""
    _act(conn, uuid, "resuming", lambda dom: dom.resume())


def inactive_xml(conn: libvirt.virConnect, uuid: str) -> str:
    """The guest's persistent definition, secrets included (what ``virsh dumpxml --inactive --security-info`` shows)."""
    dom = _lookup(conn, uuid)
    try:
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading the definition of guest {uuid}") from exc


@dataclass(frozen=True)
class SavedState:
    """State a guest keeps on its host besides its definition: a managed-save image, snapshots."""

    managed_save: bool
    snapshots: int


def saved_state(conn: libvirt.virConnect, uuid: str) -> SavedState:
    dom = _lookup(conn, uuid)
    try:
        return SavedState(managed_save=bool(dom.hasManagedSaveImage(0)), snapshots=int(dom.snapshotNum(0)))
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading the saved state of guest {uuid}") from exc


def save_domain(conn: libvirt.virConnect, uuid: str, path: str, *, bypass_cache: bool = False) -> None:
    """Stop the guest, writing its memory and device state to ``path`` on the host (virDomainSaveFlags).

    ``bypass_cache`` writes past the host's page cache (slower, leaves the cache to others).
    """
    flags = libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE if bypass_cache else 0
    _act(conn, uuid, "saving", lambda dom: dom.saveFlags(path, None, flags))


def restore_domain(conn: libvirt.virConnect, path: str, *, paused: bool = False, bypass_cache: bool = False) -> None:
    """Bring a guest back from the state file ``path`` on this host, running or paused."""
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    if bypass_cache:
        flags |= libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE
    try:
        conn.restoreFlags(path, None, flags)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"restoring the state in {path}") from exc


def saved_state_xml(conn: libvirt.virConnect, path: str) -> str:
    """The guest definition recorded inside a state file (machine type, disks) without restoring it."""
    try:
        return conn.saveImageGetXMLDesc(path, 0)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading the state file {path}") from exc


def managed_save(conn: libvirt.virConnect, uuid: str) -> None:
    """Stop the guest now; libvirt keeps its state and the next start resumes exactly there."""
    _act(conn, uuid, "saving (managed)", lambda dom: dom.managedSave(0))


def managed_save_remove(conn: libvirt.virConnect, uuid: str) -> None:
    """Throw away the guest's managed-save image: the next start boots it afresh."""
    _act(conn, uuid, "removing the managed save of", lambda dom: dom.managedSaveRemove(0))


# --------------------------------------------------------------------------
# Snapshots (libvirt's own: internal ones live inside the guest's qcow2 images)


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot as libvirt describes it (``virsh snapshot-dumpxml``)."""

    name: str
    description: str
    state: str  # the guest's state when taken: running, paused, shutoff, disk-snapshot
    created: int  # seconds since the epoch (libvirt's creationTime)
    memory: str  # where its memory is: internal, external, no
    disks: tuple[tuple[str, str], ...]  # (target, internal|external|no)
    current: bool = False
    parent: str = ""

    @property
    def with_memory(self) -> bool:
        return self.memory in ("internal", "external")

    @property
    def kind(self) -> str:
        """internal, external or mixed: what libvirt can revert to depends on it."""
        kinds = {k for _t, k in self.disks if k in ("internal", "external")}
        if self.memory in ("internal", "external"):
            kinds.add(self.memory)
        if len(kinds) > 1:
            return "mixed"
        return kinds.pop() if kinds else "internal"


@dataclass(frozen=True)
class SnapshotFacts:
    """What decides whether libvirt can snapshot a guest, read from libvirt itself."""

    domain: DomainInfo
    managed_save: bool
    pflash: bool  # boots UEFI firmware from a pflash device
    libvirt_version: str


def parse_snapshot_xml(xml: str, *, current: bool = False) -> SnapshotInfo:
    """A SnapshotInfo from ``virDomainSnapshotGetXMLDesc`` text (missing parts: empty, zero)."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    try:
        created = int(_text(root.find("creationTime"), "0"))
    except ValueError:
        created = 0
    disks = tuple((d.get("name", ""), d.get("snapshot", "")) for d in root.findall("disks/disk"))
    return SnapshotInfo(
        name=_text(root.find("name")), description=_text(root.find("description")),
        state=_text(root.find("state")), created=created,
        memory=memory.get("snapshot", "no") if memory is not None else "no",
        disks=disks, current=current, parent=_text(root.find("parent/name")),
    )


def snapshot_xml(*, name: str, description: str, memory: bool, disks: list[DiskInfo]) -> str:
    """The <domainsnapshot> asking for an internal snapshot: with memory (a running guest's
    full checkpoint, QEMU's savevm) or of the disks only (a shut-off guest, qemu-img).

    Read-only, CD-ROM, floppy and empty disks are left out (``snapshot='no'``): nothing in
    them changes, and libvirt refuses a raw read-only image in an internal snapshot."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        skip = disk.readonly or disk.device in ("cdrom", "floppy") or not disk.source
        ET.SubElement(listed, "disk", name=disk.target, snapshot="no" if skip else "internal")
    return ET.tostring(root, encoding="unicode")


def snapshot_facts(conn: libvirt.virConnect, uuid: str) -> SnapshotFacts:
    """The guest's disks, state, managed save and firmware, and this libvirt's version."""
    dom = _lookup(conn, uuid)
    try:
        xml = dom.XMLDesc(0)
        state, reason = dom.state()
        info = parse_domain_xml(xml, state=state, reason=reason, persistent=bool(dom.isPersistent()))
        loader = ET.fromstring(xml).find("os/loader")
        return SnapshotFacts(
            domain=info, managed_save=bool(dom.hasManagedSaveImage(0)),
            pflash=loader is not None and loader.get("type") == "pflash",
            libvirt_version=format_version(conn.getLibVersion()),
        )
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading guest {uuid}") from exc


def create_snapshot(conn: libvirt.virConnect, uuid: str, *, name: str, description: str = "",
                    memory: bool) -> SnapshotInfo:
    """Take an internal snapshot (virDomainSnapshotCreateXML, atomic): with ``memory`` of a
    running or paused guest, else of a shut-off guest's disks. Returns it as libvirt keeps it."""
    dom = _lookup(conn, uuid)
    try:
        disks = parse_domain_xml(dom.XMLDesc(0)).disks
        xml = snapshot_xml(name=name, description=description, memory=memory, disks=disks)
        snap = dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        return parse_snapshot_xml(snap.getXMLDesc(0), current=bool(snap.isCurrent(0)))
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"taking snapshot {name} of guest {uuid}") from exc


def list_snapshots(conn: libvirt.virConnect, uuid: str) -> list[SnapshotInfo]:
    """Every snapshot libvirt keeps for the guest, oldest first."""
    dom = _lookup(conn, uuid)
    try:
        found = [parse_snapshot_xml(s.getXMLDesc(0), current=bool(s.isCurrent(0))) for s in dom.listAllSnapshots(0)]
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"listing the snapshots of guest {uuid}") from exc
    return sorted(found, key=lambda s: (s.created, s.name))


def _snapshot(dom: libvirt.virDomain, uuid: str, name: str):
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"looking up snapshot {name} of guest {uuid}") from exc


def revert_snapshot(conn: libvirt.virConnect, uuid: str, name: str) -> None:
    """Bring the guest back to the snapshot (virDomainRevertToSnapshot): its disks, and with a
    memory snapshot its memory and running or paused state. The current state is lost."""
    dom = _lookup(conn, uuid)
    snap = _snapshot(dom, uuid, name)
    try:
        dom.revertToSnapshot(snap, 0)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reverting guest {uuid} to snapshot {name}") from exc


def delete_snapshot(conn: libvirt.virConnect, uuid: str, name: str) -> None:
    """Delete one snapshot (virDomainSnapshotDelete); its children stay, re-parented."""
    dom = _lookup(conn, uuid)
    snap = _snapshot(dom, uuid, name)
    try:
        snap.delete(0)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"deleting snapshot {name} of guest {uuid}") from exc


def define_domain(conn: libvirt.virConnect, xml: str) -> DomainInfo:
    """Define (or redefine, same UUID) a persistent guest from its XML; returns it as libvirt now has it."""
    try:
        dom = conn.defineXML(xml)
        return domain_info(dom)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="defining a guest") from exc


def undefine_domain(conn: libvirt.virConnect, uuid: str, *, keep_nvram: bool = True) -> None:
    """Remove a shut-off guest's definition; its disks stay. ``keep_nvram`` keeps its UEFI variables file."""
    flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if keep_nvram else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    _act(conn, uuid, "undefining", lambda dom: dom.undefineFlags(flags))


def network_names(conn: libvirt.virConnect) -> set[str]:
    """Names of the libvirt networks defined on the host (active or not)."""
    try:
        return set(conn.listNetworks()) | set(conn.listDefinedNetworks())
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="listing networks") from exc


# --------------------------------------------------------------------------
# Events

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Start libvirt's default event loop in a daemon thread, once per process.

    Must run before opening connections that deliver events or keepalives.
    """
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        _silence_libvirt_stderr()
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _event_loop_thread = thread


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # keep the loop alive whatever one iteration does
            log.exception("libvirt event loop iteration failed")


@dataclass
class _Watch:
    conn: libvirt.virConnect
    callback_id: int


class EventWatcher:
    """Deliver guest lifecycle events from one or more hosts.

    ``on_event(uri, DomainEvent)`` and ``on_disconnect(uri, reason)`` run in
    libvirt's event loop thread: keep them short, and do not call ``unwatch``
    or ``close`` from inside them (hand reconnects to another thread). After a
    disconnect, call ``unwatch(uri)`` then ``watch(uri, …)`` again to reconnect.
    """

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> EventWatcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def watch(
        self,
        uri: str,
        on_event: Callable[[str, DomainEvent], None],
        on_disconnect: Callable[[str, str], None],
        *,
        ssh_target: SSHTarget | None = None,
        known_hosts_dir: str | None = None,
    ) -> None:
        """Connect to ``uri`` and start delivering its lifecycle events."""
        ensure_event_loop()
        self.unwatch(uri)
        conn = connect(uri, ssh_target=ssh_target, known_hosts_dir=known_hosts_dir)
        try:
            try:
                conn.setKeepAlive(EVENT_KEEPALIVE_INTERVAL_S, EVENT_KEEPALIVE_COUNT)
            except libvirt.libvirtError as exc:
                # Local drivers (qemu:///system, test:///) have no keepalive and need none.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
            callback_id = conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                _lifecycle_callback,
                (uri, on_event),
            )
            conn.registerCloseCallback(_close_callback, (uri, on_disconnect))
        except libvirt.libvirtError as exc:
            _quiet_close(conn)
            raise translate_error(exc, action=f"subscribing to events of {_redact(uri)}") from exc
        with self._lock:
            self._watches[uri] = _Watch(conn=conn, callback_id=callback_id)

    def watching(self) -> list[str]:
        with self._lock:
            return list(self._watches)

    def unwatch(self, uri: str) -> None:
        """Stop events from ``uri`` and close its connection (no-op if not watched)."""
        with self._lock:
            watch = self._watches.pop(uri, None)
        if watch is None:
            return
        for undo in (
            lambda: watch.conn.domainEventDeregisterAny(watch.callback_id),
            watch.conn.unregisterCloseCallback,
        ):
            try:
                undo()
            except libvirt.libvirtError:
                pass  # the connection is already dead; closing is all that is left
        _quiet_close(watch.conn)

    def close(self) -> None:
        """Stop watching every host.

        A qemu+ssh connection's ssh process is ended and reaped by libvirt itself, in its
        event loop thread once the closed connection's last reference goes: a moment after
        this returns (within ~20 ms in the lab), not before. Nothing is left behind.
        """
        for uri in self.watching():
            self.unwatch(uri)


def _lifecycle_callback(_conn, dom, event, detail, opaque) -> None:
    uri, on_event = opaque
    name, detail_name = event_names(event, detail)
    try:
        domain_event = DomainEvent(
            domain_uuid=dom.UUIDString(), domain_name=dom.name(), event=name, detail=detail_name
        )
        on_event(uri, domain_event)
    except Exception:
        log.exception("handling libvirt event from %s failed", _redact(uri))


def _close_callback(_conn, reason, opaque) -> None:
    uri, on_disconnect = opaque
    try:
        on_disconnect(uri, _CLOSE_REASONS.get(reason, "unknown"))
    except Exception:
        log.exception("handling libvirt disconnect from %s failed", _redact(uri))


def _quiet_close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
