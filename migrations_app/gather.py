"""Gather what the preflight checks read, from the two hosts of a migration.

``gather(source=…, destination=…, guest_uuid=…, options=…)`` returns the
``PairFacts`` and ``GuestSide`` that ``preflight.run_preflight`` judges. No
Django: plain inputs (``Endpoint``), the adapters for all I/O.

One libvirt connection and one SSH session per host, opened in parallel and
always closed; the probes run in four short rounds, both hosts at once:

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
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from hosts.adapters import facts as host_facts
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.adapters.errors import AdapterError, CommandFailed, DomainNotFound
from hosts.adapters.ssh import SSHSession, SSHTarget

from .facts import DiskFact, GuestSide, HostSide, PairFacts
from .options import MigrationOptions

log = logging.getLogger(__name__)

MIGRATION_PORT_MIN = 49152
MIGRATION_PORT_MAX = 49215
PROBE_TIMEOUT_S = 10.0  # any one remote command
LISTENER_LIFETIME_S = 5  # the destination's one-shot listener gives up after this
CONNECT_TIMEOUT_S = 3  # the source's connection attempt
CONTENT_COMPARE_MAX_BYTES = 64 * 1024 * 1024
MARKER_PREFIX = ".vmportal-probe."

_ACTIVE_STATES = frozenset({"running", "blocked", "paused"})
_DEBIAN_LIKE = frozenset({"debian", "ubuntu"})


@dataclass(frozen=True)
class Endpoint:
    """One host of the migration, as VMPortal knows it."""

    name: str  # inventory name, used in the verdicts
    libvirt_uri: str
    ssh: SSHTarget
    in_maintenance: bool = False
    migration_address: str | None = None  # where QEMU's data goes; defaults to ssh.address

    @property
    def migration_host(self) -> str:
        return self.migration_address or self.ssh.address


# --------------------------------------------------------------------------
# Remote scripts. Fixed text; every value reaches them as a positional
# argument ("$1"…), never spliced into the script.

# One-shot listener: binds a free port of the range, prints it, and leaves a
# detached child that accepts one connection (or gives up after the lifetime).
LISTENER_PY = r"""
import os, random, socket, sys
low, high, lifetime = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ports = list(range(low, high + 1))
random.shuffle(ports)
sock = None
for port in ports:
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((address, port))
            s.listen(1)
        except OSError:
            s.close()
            continue
        sock = s
        break
    if sock is not None:
        break
if sock is None:
    sys.exit(3)
sys.stdout.write("%d\n" % port)
sys.stdout.flush()
if os.fork():
    os._exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
sock.settimeout(lifetime)
try:
    conn, _ = sock.accept()
    conn.close()
except OSError:
    pass
"""

# The same with socat, for hosts without python3: $1-$2 port range, $3 lifetime, $4 extra socat options.
LISTENER_SOCAT_SH = r"""
command -v socat >/dev/null 2>&1 || exit 127
for p in $(seq "$1" "$2" | shuf); do
  if [ -z "$(ss -Htln "sport = :$p")" ]; then
    setsid timeout "$3" socat -u "TCP-LISTEN:$p,reuseaddr$4" OPEN:/dev/null </dev/null >/dev/null 2>&1 &
    i=0
    while [ "$i" -lt 20 ]; do
      if [ -n "$(ss -Htln "sport = :$p")" ]; then echo "$p"; exit 0; fi
      sleep 0.05
      i=$((i + 1))
    done
    exit 4
  fi
done
exit 3
"""

CONNECT_SH = 'exec 3<>/dev/tcp/"$1"/"$2"'

# $1 directory; stdin: the token. Prints the marker's path.
MARKER_SH = (
    'f=$(mktemp -p "$1" "$2XXXXXXXXXX") || exit 1; '
    'tee -- "$f" >/dev/null || { rm -f -- "$f"; exit 1; }; '
    'printf "%s" "$f"'
)

# $1 marker ("" = none), $2 disk path, $3 "1" = test writing too, $4 "1" = report free space
# in the disk's directory; the rest: the command prefix that runs as QEMU's user.
DISK_PROBE_SH = r"""
marker=$1 path=$2 write=$3 room=$4
shift 4
if [ -n "$marker" ]; then
  if m=$(cat -- "$marker" 2>/dev/null); then printf 'marker=%s\n' "$m"
  elif [ -e "$marker" ]; then echo 'marker=?'
  else echo 'marker=-'; fi
fi
dir=$(dirname -- "$path")
if [ -e "$path" ]; then
  echo 'exists=1'
  printf 'stat=%s\n' "$(stat -L -c '%U:%G %a' -- "$path" 2>/dev/null)"
  for mode in r w; do
    if [ "$mode" = w ] && [ "$write" != 1 ]; then continue; fi
    err=$("$@" test -"$mode" "$path" 2>&1); rc=$?
    if [ -n "$err" ]; then
      echo "qemu_$mode=error"
      printf 'qemu_error=%s\n' "$(printf '%s' "$err" | head -n 1)"
    else echo "qemu_$mode=$rc"; fi
    test -"$mode" "$path"; echo "root_$mode=$?"
  done
  err=$("$@" test -x "$dir" 2>&1); rc=$?
  if [ -n "$err" ]; then
    echo 'qemu_dir=error'
    printf 'qemu_error=%s\n' "$(printf '%s' "$err" | head -n 1)"
  else echo "qemu_dir=$rc"; fi
else
  echo 'exists=0'
fi
if [ "$room" = 1 ]; then
  printf 'room=%s\n' "$(df --output=avail -k -- "$dir" 2>/dev/null | tail -n 1 | tr -d ' ')"
fi
"""

# $1 path, $2 size limit: prints "SIZE SHA256", or "SIZE -" above the limit.
DIGEST_SH = (
    's=$(stat -L -c %s -- "$1") || exit 1; '
    'if [ "$s" -gt "$2" ]; then echo "$s -"; exit 0; fi; '
    'h=$(sha256sum -- "$1") || exit 1; echo "$s ${h%% *}"'
)


# --------------------------------------------------------------------------
# Parsing (pure)


def parse_version(text: str) -> tuple[int, int, int]:
    """ "9.0.0" → (9, 0, 0); missing or odd parts become 0."""
    parts = [int(p) if p.isdigit() else 0 for p in (text or "").split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


QEMU_CONF_PATTERN = r"^[[:space:]]*#?[[:space:]]*(user|group|dynamic_ownership)[[:space:]]*="
# "user = …" sets it; "#user = …" (no space after "#") is the build default the
# package ships commented out; "#       user = …" lines are examples.
_CONF_LINE = re.compile(r"^\s*(#?)(user|group|dynamic_ownership)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class QemuIdentity:
    """Who QEMU runs as on a host, from its qemu.conf."""

    user: str
    group: str | None
    dynamic_ownership: bool

    def runas_argv(self) -> list[str]:
        """The prefix that runs a command as QEMU's user ("+107" is a numeric id)."""
        if self.user.startswith("+"):
            group = (self.group or self.user).lstrip("+")
            return ["setpriv", f"--reuid={self.user[1:]}", f"--regid={group}", "--clear-groups", "--"]
        return ["runuser", "-u", self.user, "--"]


def _conf_value(raw: str) -> str:
    raw = raw.split("#", 1)[0].strip() if not raw.startswith('"') else raw
    if raw.startswith('"'):
        end = raw.find('"', 1)
        return raw[1:end] if end > 0 else raw[1:]
    return raw


def parse_qemu_conf(text: str, *, distro_default_user: str | None = None) -> QemuIdentity:
    """``user``, ``group`` and ``dynamic_ownership`` as libvirt reads them (its first setting wins).

    Unset: the value the package ships commented out (libvirt writes its build
    default there), else ``distro_default_user``, else "qemu"; dynamic_ownership
    defaults to on.
    """
    set_values: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in text.splitlines():
        match = _CONF_LINE.match(line)
        if not match:
            continue
        hashed, key, raw = match.groups()
        target = commented if hashed else set_values
        target.setdefault(key, _conf_value(raw))
    user = set_values.get("user") or commented.get("user") or distro_default_user or "qemu"
    group = set_values.get("group") or commented.get("group")
    ownership = set_values.get("dynamic_ownership", "1").strip()
    return QemuIdentity(user=user, group=group or None, dynamic_ownership=ownership != "0")


def distro_qemu_user(os_release: host_facts.OsRelease) -> str:
    """QEMU's default user for a distribution: libvirt-qemu on Debian/Ubuntu, qemu elsewhere."""
    family = {os_release.id.lower(), *os_release.id_like.lower().split()}
    return "libvirt-qemu" if family & _DEBIAN_LIKE else "qemu"


def parse_key_values(output: str) -> dict[str, str]:
    """``key=value`` lines (the disk probe's output); later keys win."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value
    return values


def classify_connect(exit_status: int, stderr: str) -> str | None:
    """The source's connection attempt → "open" | "refused" | "timeout" | "unreachable" | None (could not run)."""
    text = stderr.lower()
    if exit_status == 0:
        return "open"
    if exit_status == 124:
        return "timeout"
    if exit_status in (126, 127):
        return None  # no bash or no timeout on that host
    if "refused" in text:
        return "refused"
    if any(s in text for s in ("no route", "unreachable", "not known", "name resolution", "invalid argument")):
        return "unreachable"
    return None


@dataclass(frozen=True)
class DiskProbe:
    """What the destination said about one disk path."""

    marker: str | None  # the marker's content; "-" = not there; "?" = there but unreadable; None = not asked
    exists: bool
    perm: str  # "user:group mode"
    qemu_read: bool | None
    qemu_write: bool | None
    root_read: bool | None
    root_write: bool | None
    qemu_reaches_dir: bool | None
    room_kib: int | None
    qemu_error: str = ""  # what running as QEMU's user complained, e.g. "runuser: user qemu does not exist"


def _flag(value: str | None) -> bool | None:
    if value is None or value == "error" or not value.strip().isdigit():
        return None
    return value.strip() == "0"


def parse_disk_probe(output: str) -> DiskProbe:
    values = parse_key_values(output)
    room = values.get("room", "").strip()
    return DiskProbe(
        marker=values.get("marker"),
        exists=values.get("exists") == "1",
        perm=values.get("stat", "").strip(),
        qemu_read=_flag(values.get("qemu_r")),
        qemu_write=_flag(values.get("qemu_w")),
        root_read=_flag(values.get("root_r")),
        root_write=_flag(values.get("root_w")),
        qemu_reaches_dir=_flag(values.get("qemu_dir")),
        room_kib=int(room) if room.isdigit() else None,
        qemu_error=values.get("qemu_error", "").strip(),
    )


_NO_PROBE = DiskProbe(None, False, "", None, None, None, None, None, None)


def can_open(probe: DiskProbe, *, writable: bool, identity: QemuIdentity) -> tuple[bool | None, str]:
    """(destination_can_open, perm_detail) from the destination's answers about one disk."""
    if not probe.exists:
        return False, "does not exist"
    wanted = [probe.qemu_read] + ([probe.qemu_write] if writable else [])
    if all(v is True for v in wanted):
        return True, probe.perm
    if any(v is None for v in wanted):
        return None, f"{probe.perm} ({probe.qemu_error})" if probe.qemu_error else probe.perm
    # QEMU's user cannot open it as it is; libvirt (root) relabels it at start
    # when dynamic_ownership is on, which works if root can open it and QEMU's
    # user can reach its directory.
    root = [probe.root_read] + ([probe.root_write] if writable else [])
    if identity.dynamic_ownership and all(v is True for v in root) and probe.qemu_reaches_dir:
        return True, f"{probe.perm} (libvirt gives it to {identity.user} at start: dynamic_ownership)"
    return False, f"{probe.perm}, as {identity.user}"


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
    stack: ExitStack = field(default_factory=ExitStack)
    conn: object | None = None
    ssh: SSHSession | None = None
    facts: lv.HostFacts | None = None
    domains: list[lv.DomainInfo] | None = None
    pool_targets: frozenset[str] | None = None

    def open(self) -> None:
        """Connect libvirt (facts, guests) and SSH; a failure leaves that part None."""
        ep = self.endpoint
        try:
            self.conn = self.stack.enter_context(lv.open_connection(ep.libvirt_uri, ssh_target=ep.ssh))
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
            self.ssh = self.stack.enter_context(SSHSession(ep.ssh))
        except AdapterError as exc:
            log.warning("preflight: SSH to %s failed: %s", ep.name, exc)
            self.ssh = None

    def close(self) -> None:
        self.stack.close()

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
                in_maintenance=ep.in_maintenance, reachable=False, address=ep.ssh.address,
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
            address=ep.ssh.address,
        )


# --------------------------------------------------------------------------
# Probes (each takes an open session or connection; the caller wraps it in _probe)


def resolve(session: SSHSession, name: str) -> list[str]:
    """Addresses ``name`` resolves to on that host."""
    return host_facts.resolve_names(session, [name])[name]


def qemu_identity(session: SSHSession) -> QemuIdentity:
    """Who QEMU runs as on that host (its /etc/libvirt/qemu.conf, else the distro default)."""
    # Only the lines that matter: the whole file is ~40 KiB, and SSHSession.run
    # has been seen to return such outputs cut at 32 KiB under load.
    conf = session.run(["grep", "-E", QEMU_CONF_PATTERN, "/etc/libvirt/qemu.conf"], check=False,
                       timeout=PROBE_TIMEOUT_S)
    if conf.exit_status not in (0, 1, 2):  # 1: no such lines, 2: no such file
        raise CommandFailed(conf.argv, conf.exit_status, conf.stdout, conf.stderr)
    text = conf.stdout if conf.exit_status == 0 else ""
    if re.search(r"^\s*#?\s*user\s*=", text, re.MULTILINE):
        return parse_qemu_conf(text)
    return parse_qemu_conf(text, distro_default_user=distro_qemu_user(host_facts.read_os_release(session)))


def start_listener(session: SSHSession, *, ipv6: bool = False) -> int | None:
    """Start a one-shot TCP listener on a free migration port; its port, or None if it could not."""
    low, high, life = str(MIGRATION_PORT_MIN), str(MIGRATION_PORT_MAX), str(LISTENER_LIFETIME_S)
    result = session.run(
        ["timeout", str(LISTENER_LIFETIME_S), "python3", "-c", LISTENER_PY, low, high, life],
        check=False,
        timeout=PROBE_TIMEOUT_S,
    )
    if result.exit_status == 127:  # no python3 there: try socat
        result = session.run(
            ["sh", "-c", LISTENER_SOCAT_SH, "listener", low, high, life, ",pf=ip6" if ipv6 else ""],
            check=False,
            timeout=PROBE_TIMEOUT_S,
        )
    text = result.stdout.strip()
    if result.exit_status != 0 or not text.isdigit():
        log.info("preflight: no listener on %s (exit %s): %s", session.target.address,
                 result.exit_status, result.stderr.strip()[-200:])
        return None
    return int(text)


def try_connect(session: SSHSession, address: str, port: int) -> str | None:
    """From that host, open a TCP connection to address:port; see classify_connect."""
    result = session.run(
        ["timeout", str(CONNECT_TIMEOUT_S), "bash", "-c", CONNECT_SH, "connect", address, str(port)],
        check=False,
        timeout=CONNECT_TIMEOUT_S + PROBE_TIMEOUT_S,
    )
    return classify_connect(result.exit_status, result.stderr)


def write_marker(session: SSHSession, directory: str, token: str) -> str | None:
    """Create a marker file holding ``token`` in ``directory``; its path, or None if it could not."""
    result = session.run(
        ["sh", "-c", MARKER_SH, "marker", directory, MARKER_PREFIX],
        check=False,
        stdin=token,
        timeout=PROBE_TIMEOUT_S,
    )
    path = result.stdout
    expected = posixpath.join(directory, MARKER_PREFIX)
    if result.exit_status != 0 or not path.startswith(expected) or "\n" in path[len(expected):]:
        log.info("preflight: no marker in %s on %s: %s", directory, session.target.address, result.stderr.strip())
        return None
    return path


def remove_markers(session: SSHSession, paths: list[str]) -> None:
    if paths:
        session.run(["rm", "-f", "--", *paths], check=False, timeout=PROBE_TIMEOUT_S)


def probe_disk(
    session: SSHSession, *, path: str, marker: str | None, writable: bool, room: bool, identity: QemuIdentity | None
) -> DiskProbe:
    """Ask the destination about one disk path (marker, existence, permissions, free space)."""
    runas = identity.runas_argv() if identity else ["false"]
    result = session.run(
        ["sh", "-c", DISK_PROBE_SH, "disk-probe", marker or "", path, "1" if writable else "0",
         "1" if room else "0", *runas],
        check=True,
        timeout=PROBE_TIMEOUT_S,
    )
    return parse_disk_probe(result.stdout)


def content_digest(session: SSHSession, path: str) -> tuple[int, str] | None:
    """(size, SHA-256) of a file, SHA "-" when larger than CONTENT_COMPARE_MAX_BYTES; None if unreadable."""
    result = session.run(
        ["sh", "-c", DIGEST_SH, "digest", path, str(CONTENT_COMPARE_MAX_BYTES)], check=False, timeout=30.0
    )
    fields = result.stdout.split()
    if result.exit_status != 0 or len(fields) != 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1]


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
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="preflight") as pool:
        try:
            for future in [pool.submit(src.open), pool.submit(dst.open)]:
                future.result()
            pair, guest = _gather_open(pool, src, dst, guest_uuid, options)
        finally:
            src.close()
            dst.close()
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
                               port if port is not None else dst.endpoint.ssh.port)
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
        and (disk_probes.get(p.info.target) or _NO_PROBE).exists
    }
    f_fallback = None
    if port is not None and connect == "timeout":
        f_fallback = submit("connect to migration address", try_connect, src.ssh, address, dst.endpoint.ssh.port)
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
            (disk_probes.get(p.info.target) or _NO_PROBE).room_kib
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
