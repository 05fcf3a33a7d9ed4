"""Probes over an SSH session to one host: who QEMU runs as, disks, markers, ports, names.

Each probe runs one fixed remote script or command (values reach the scripts as positional
arguments, never spliced into them) and returns a dataclass or plain value; the parsers are
pure. The preflight gathering (``migrations_app.gather``), cold migration and the image
permission repair use them. No Django here; errors are ours (``CommandFailed`` & co.).
"""

from __future__ import annotations

import logging
import posixpath
import re
import secrets
from dataclasses import dataclass

from . import facts as host_facts
from .batch import Step, run_step
from .errors import CommandFailed
from .ssh import CommandResult, SSHSession

log = logging.getLogger(__name__)

MIGRATION_PORT_MIN = 49152
MIGRATION_PORT_MAX = 49215
PROBE_TIMEOUT_S = 10.0  # any one remote command
LISTENER_LIFETIME_S = 5  # the destination's one-shot listener gives up after this
CONNECT_TIMEOUT_S = 3  # the source's connection attempt
CONTENT_COMPARE_MAX_BYTES = 64 * 1024 * 1024
MARKER_PREFIX = ".vmportal-probe."
_DEBIAN_LIKE = frozenset({"debian", "ubuntu"})


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

# Several connection attempts in one command, side by side (each as CONNECT_SH under timeout):
# $1 the timeout, then (address, port) pairs. One line per attempt, in the order asked:
# "INDEX STATUS" then its stderr on one line (newlines made spaces, at most 300 bytes).
CONNECTS_SH = r"""
t=$1
shift
d=$(mktemp -d) || exit 1
trap 'rm -rf -- "$d"' EXIT
n=0
while [ "$#" -ge 2 ]; do
  ( timeout "$t" bash -c 'exec 3<>/dev/tcp/"$1"/"$2"' connect "$1" "$2" 2> "$d/$n.err"; echo "$?" > "$d/$n.rc" ) &
  n=$((n + 1))
  shift 2
done
wait
i=0
while [ "$i" -lt "$n" ]; do
  printf '%s %s ' "$i" "$(cat "$d/$i.rc" 2>/dev/null || echo 255)"
  tr '\n' ' ' < "$d/$i.err" | head -c 300
  printf '\n'
  i=$((i + 1))
done
"""

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

# Many disks in one command (each command costs the host a login shell): $1 a nonce, $2 the
# length of the QEMU-user prefix, the prefix, then groups of four as for DISK_PROBE_SH. Each
# disk's answer follows an "item=NONCE:N" line, in DISK_PROBE_SH's format; the nonce keeps a
# file's content from posing as another disk's answer. Every test as QEMU's user runs in ONE
# session (runuser/setpriv start a PAM session each: per path they were most of the time),
# answering "N r|w|d STATUS" lines; its stderr (the prefix itself failing, e.g. an unknown
# user) counts as that error for every path, as in DISK_PROBE_SH. bash for its arrays.
DISK_PROBES_BASH = r"""
nonce=$1 n=$2
shift 2
runas=("${@:1:n}")
shift "$n"
items=("$@")
count=$(( ${#items[@]} / 4 ))
args=()
for ((i = 0; i < count; i++)); do
  path=${items[i*4+1]}
  if [ -e "$path" ]; then args+=("$i" "$path" "${items[i*4+2]}"); fi
done
declare -A q
qerr="" qrc=0
if [ "${#args[@]}" -gt 0 ]; then
  ef=$(mktemp)
  out=$("${runas[@]}" sh -c '
    while [ "$#" -ge 3 ]; do
      test -r "$2"; echo "$1 r $?"
      if [ "$3" = 1 ]; then test -w "$2"; echo "$1 w $?"; fi
      test -x "$(dirname -- "$2")"; echo "$1 d $?"
      shift 3
    done' qemu-tests "${args[@]}" 2>"$ef")
  qrc=$?
  qerr=$(head -n 1 "$ef")
  rm -f -- "$ef"
  while read -r idx mode rc; do q["$idx:$mode"]=$rc; done <<< "$out"
fi
qemu() {  # $1 index, $2 mode, $3 the key DISK_PROBE_SH prints
  if [ -n "$qerr" ]; then echo "$3=error"; printf 'qemu_error=%s\n' "$qerr"
  else echo "$3=${q[$1:$2]:-$qrc}"; fi
}
for ((i = 0; i < count; i++)); do
  marker=${items[i*4]} path=${items[i*4+1]} write=${items[i*4+2]} room=${items[i*4+3]}
  printf 'item=%s:%s\n' "$nonce" "$i"
  if [ -n "$marker" ]; then
    if m=$(cat -- "$marker" 2>/dev/null); then printf 'marker=%s\n' "$m"
    elif [ -e "$marker" ]; then echo 'marker=?'
    else echo 'marker=-'; fi
  fi
  dir=$(dirname -- "$path")
  if [ -e "$path" ]; then
    echo 'exists=1'
    printf 'stat=%s\n' "$(stat -L -c '%U:%G %a' -- "$path" 2>/dev/null)"
    qemu "$i" r qemu_r; test -r "$path"; echo "root_r=$?"
    if [ "$write" = 1 ]; then qemu "$i" w qemu_w; test -w "$path"; echo "root_w=$?"; fi
    qemu "$i" d qemu_dir
  else
    echo 'exists=0'
  fi
  if [ "$room" = 1 ]; then
    printf 'room=%s\n' "$(df --output=avail -k -- "$dir" 2>/dev/null | tail -n 1 | tr -d ' ')"
  fi
done
"""

# Markers in several directories in one command: $1 the prefix, the rest directories; stdin
# the token. Prints each marker's path (empty if it could not) followed by a NUL.
MARKERS_SH = (
    'token=$(cat); prefix=$1; shift; '
    'for d in "$@"; do '
    'if f=$(mktemp -p "$d" "${prefix}XXXXXXXXXX") && printf "%s" "$token" > "$f"; then printf "%s\\0" "$f"; '
    'else [ -n "$f" ] && rm -f -- "$f"; printf "\\0"; fi; '
    'done'
)

# $1 path, $2 size limit: prints "SIZE SHA256", or "SIZE -" above the limit.
DIGEST_SH = (
    's=$(stat -L -c %s -- "$1") || exit 1; '
    'if [ "$s" -gt "$2" ]; then echo "$s -"; exit 0; fi; '
    'h=$(sha256sum -- "$1") || exit 1; echo "$s ${h%% *}"'
)

# Who QEMU runs as: $1 the qemu.conf pattern, $2 a nonce. Prints the matching lines (only
# those: the whole file is ~40 KiB, and outputs that size were seen cut under load), a line
# "NONCE STATUS" with grep's status, then the host's os-release (the distro default's source).
QEMU_IDENTITY_SH = (
    'grep -E "$1" /etc/libvirt/qemu.conf; rc=$?; printf "\\n%s %s\\n" "$2" "$rc"; '
    'cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; exit 0'
)

# Many files' digests in one command: $1 the size limit, the rest paths. One line per path,
# "INDEX SIZE SHA256", "INDEX SIZE -" above the limit, "INDEX -" when it cannot be read. The
# content is read from stdin of sha256sum, so no file name reaches the output.
DIGESTS_SH = (
    'max=$1; shift; i=0; '
    'for p in "$@"; do '
    'if s=$(stat -L -c %s -- "$p" 2>/dev/null); then '
    'if [ "$s" -gt "$max" ]; then echo "$i $s -"; '
    'elif h=$(sha256sum < "$p" 2>/dev/null); then echo "$i $s ${h%% *}"; '
    'else echo "$i -"; fi; '
    'else echo "$i -"; fi; '
    'i=$((i + 1)); '
    'done'
)


# --------------------------------------------------------------------------
# Parsing (pure)


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
    """The DiskProbe from DISK_PROBE_SH's ``key=value`` lines (a value it could not learn is None)."""
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


NO_PROBE = DiskProbe(None, False, "", None, None, None, None, None, None)  # the destination was not asked


def parse_disk_probes(output: str, nonce: str, count: int) -> list[DiskProbe | None]:
    """One DiskProbe per disk from DISK_PROBES_BASH's output; None for a disk it did not reach."""
    sections: dict[int, list[str]] = {}
    current: list[str] | None = None
    headers = {f"item={nonce}:{i}": i for i in range(count)}
    for line in output.splitlines():
        if line in headers:
            current = sections.setdefault(headers[line], [])
        elif current is not None:
            current.append(line)
    return [parse_disk_probe("\n".join(sections[i])) if i in sections else None for i in range(count)]


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
# Probes (each takes an open session; failures raise our adapter errors)


def resolve(session: SSHSession, name: str) -> list[str]:
    """Addresses ``name`` resolves to on that host."""
    return host_facts.resolve_names(session, [name])[name]


def qemu_identity_step() -> Step:
    """``qemu_identity`` as a Step, to run alone or batched."""
    nonce = secrets.token_hex(8)

    def parse(result: CommandResult) -> QemuIdentity:
        conf, sep, rest = result.stdout.partition(f"\n{nonce} ")
        status_text, _, os_text = rest.partition("\n")
        if not sep or not status_text.isdigit():
            raise CommandFailed(result.argv, result.exit_status, result.stdout, result.stderr)
        status = int(status_text)
        if status not in (0, 1, 2):  # 1: no such lines, 2: no such file
            raise CommandFailed(result.argv, status, conf, result.stderr)
        text = conf if status == 0 else ""
        if re.search(r"^\s*#?\s*user\s*=", text, re.MULTILINE):
            return parse_qemu_conf(text)
        return parse_qemu_conf(text, distro_default_user=distro_qemu_user(host_facts.parse_os_release(os_text)))
    return Step(["sh", "-c", QEMU_IDENTITY_SH, "qemu-identity", QEMU_CONF_PATTERN, nonce], parse,
                timeout=PROBE_TIMEOUT_S)


def qemu_identity(session: SSHSession) -> QemuIdentity:
    """Who QEMU runs as on that host (its /etc/libvirt/qemu.conf, else the distro default).

    One command reads both the qemu.conf lines and the os-release the default depends on.
    """
    return run_step(session, qemu_identity_step())


NO_PYTHON = -1  # listener_step's answer when the host has no python3 (start_listener then tries socat)


def _listener_port(result: CommandResult, address: str) -> int | None:
    text = result.stdout.strip()
    if result.exit_status != 0 or not text.isdigit():
        log.info("no listener on %s (exit %s): %s", address, result.exit_status, result.stderr.strip()[-200:])
        return None
    return int(text)


def listener_step(address: str = "") -> Step:
    """The python3 one-shot listener as a Step: its port, None, or NO_PYTHON (see ``start_listener``)."""
    low, high, life = str(MIGRATION_PORT_MIN), str(MIGRATION_PORT_MAX), str(LISTENER_LIFETIME_S)
    return Step(
        ["timeout", str(LISTENER_LIFETIME_S), "python3", "-c", LISTENER_PY, low, high, life],
        lambda result: NO_PYTHON if result.exit_status == 127 else _listener_port(result, address),
        timeout=PROBE_TIMEOUT_S,
    )


def socat_listener(session: SSHSession, *, ipv6: bool = False) -> int | None:
    """The one-shot listener with socat, for a host without python3; its port, or None."""
    low, high, life = str(MIGRATION_PORT_MIN), str(MIGRATION_PORT_MAX), str(LISTENER_LIFETIME_S)
    result = session.run(
        ["sh", "-c", LISTENER_SOCAT_SH, "listener", low, high, life, ",pf=ip6" if ipv6 else ""],
        check=False,
        timeout=PROBE_TIMEOUT_S,
    )
    return _listener_port(result, session.target.address)


def start_listener(session: SSHSession, *, ipv6: bool = False) -> int | None:
    """Start a one-shot TCP listener on a free migration port; its port, or None if it could not."""
    port = run_step(session, listener_step(session.target.address))
    return socat_listener(session, ipv6=ipv6) if port == NO_PYTHON else port


def try_connect(session: SSHSession, address: str, port: int) -> str | None:
    """From that host, open a TCP connection to address:port; see classify_connect."""
    result = session.run(
        ["timeout", str(CONNECT_TIMEOUT_S), "bash", "-c", CONNECT_SH, "connect", address, str(port)],
        check=False,
        timeout=CONNECT_TIMEOUT_S + PROBE_TIMEOUT_S,
    )
    return classify_connect(result.exit_status, result.stderr)


def parse_connects(output: str, count: int) -> list[str | None]:
    """classify_connect of each attempt from CONNECTS_SH's lines; None for one it did not report."""
    found: list[str | None] = [None] * count
    for line in output.splitlines():
        fields = line.split(" ", 2)
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[0]) < count:
            found[int(fields[0])] = classify_connect(int(fields[1]), fields[2] if len(fields) > 2 else "")
    return found


def connects_step(targets: list[tuple[str, int]]) -> Step:
    """Connection attempts from one host to each (address, port), side by side in one command: a Step
    whose value is one ``classify_connect`` answer per target, in order."""
    args = [a for address, port in targets for a in (address, str(port))]
    return Step(["sh", "-c", CONNECTS_SH, "connects", str(CONNECT_TIMEOUT_S), *args],
                lambda result: parse_connects(result.stdout, len(targets)),
                timeout=CONNECT_TIMEOUT_S + PROBE_TIMEOUT_S)


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
        log.info("no marker in %s on %s: %s", directory, session.target.address, result.stderr.strip())
        return None
    return path


def write_markers_step(directories: list[str], token: str) -> Step:
    """``write_markers`` as a Step, to run alone or batched."""
    def parse(result: CommandResult) -> dict[str, str | None]:
        paths = result.stdout.split("\0")[: len(directories)]
        made: dict[str, str | None] = {}
        for i, directory in enumerate(directories):
            path = paths[i] if i < len(paths) else ""
            expected = posixpath.join(directory, MARKER_PREFIX)
            ok = path.startswith(expected) and "\n" not in path[len(expected):] and "/" not in path[len(expected):]
            made[directory] = path if ok else None
            if not ok:
                log.info("no marker in %s: %s", directory, result.stderr.strip()[-200:])
        return made
    return Step(["sh", "-c", MARKERS_SH, "markers", MARKER_PREFIX, *directories], parse, stdin=token,
                timeout=PROBE_TIMEOUT_S + 0.2 * len(directories))


def write_markers(session: SSHSession, directories: list[str], token: str) -> dict[str, str | None]:
    """A marker holding ``token`` in each directory, in one command: {directory: its path, or None}."""
    return run_step(session, write_markers_step(directories, token))


def remove_markers_step(paths: list[str]) -> Step:
    """``remove_markers`` as a Step (its value is None)."""
    return Step(["rm", "-f", "--", *paths], lambda result: None, timeout=PROBE_TIMEOUT_S)


def remove_markers(session: SSHSession, paths: list[str]) -> None:
    """Remove the marker files ``write_marker`` made (a marker already gone is fine)."""
    if paths:
        run_step(session, remove_markers_step(paths))


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


def parse_digests(output: str, paths: list[str]) -> dict[str, tuple[int, str] | None]:
    """DIGESTS_SH's lines → {path: (size, SHA-256 or "-"), or None}."""
    found: dict[str, tuple[int, str] | None] = dict.fromkeys(paths)
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit() and int(fields[0]) < len(paths):
            sha = fields[2]
            if sha == "-" or re.fullmatch(r"[0-9a-f]{64}", sha):
                found[paths[int(fields[0])]] = (int(fields[1]), sha)
    return found


def content_digests_step(paths: list[str]) -> Step:
    """``content_digests`` as a Step, to run alone or batched."""
    return Step(["sh", "-c", DIGESTS_SH, "digests", str(CONTENT_COMPARE_MAX_BYTES), *paths],
                lambda result: parse_digests(result.stdout, paths), timeout=30.0 * len(paths))


def content_digests(session: SSHSession, paths: list[str]) -> dict[str, tuple[int, str] | None]:
    """``content_digest`` of many files in one command: {path: (size, SHA-256 or "-"), or None}."""
    if len(paths) == 1:
        return {paths[0]: content_digest(session, paths[0])}
    return run_step(session, content_digests_step(paths))


@dataclass(frozen=True)
class DiskQuery:
    """One disk path to ask a destination about (see ``probe_disk``)."""

    path: str
    marker: str | None
    writable: bool
    room: bool


def probe_disks_step(queries: list[DiskQuery], *, identity: QemuIdentity | None) -> Step:
    """``probe_disks`` as a Step, to run alone or batched (CommandFailed when the script failed)."""
    runas = identity.runas_argv() if identity else ["false"]
    nonce = secrets.token_hex(8)
    items = [a for q in queries for a in (q.marker or "", q.path, "1" if q.writable else "0", "1" if q.room else "0")]
    argv = ["bash", "-c", DISK_PROBES_BASH, "disk-probes", nonce, str(len(runas)), *runas, *items]

    def parse(result: CommandResult) -> list[DiskProbe | None]:
        if result.exit_status != 0:
            raise CommandFailed(argv, result.exit_status, result.stdout, result.stderr)
        return parse_disk_probes(result.stdout, nonce, len(queries))

    return Step(argv, parse, timeout=PROBE_TIMEOUT_S + 0.5 * len(queries))


def probe_disks(session: SSHSession, queries: list[DiskQuery], *, identity: QemuIdentity | None) -> list[DiskProbe | None]:
    """``probe_disk`` for many paths in one command; in the order asked, None for a path it did not reach."""
    return run_step(session, probe_disks_step(queries, identity=identity))
