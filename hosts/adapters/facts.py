"""Facts about a host that libvirt does not tell, read over SSH.

Each function takes an open ``SSHSession`` and runs plain read-only commands
(``cat``, ``findmnt``, ``getent``); the parsing is split into pure
``parse_*`` functions that are tested without a host.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import shlex
from dataclasses import dataclass

from .batch import MAX_COMMANDS, Step, run_step, run_steps
from .errors import AdapterError, CommandFailed
from .ssh import CommandResult, SSHSession

# Filesystems libvirt treats as shared between hosts (its virFileIsSharedFS
# list: NFS, GFS2, OCFS2, AFS, SMB/CIFS, Ceph, GPFS, Quobyte, ACFS,
# GlusterFS, BeeGFS), plus sshfs. A disk on one of these does not need copying
# during a live migration.
SHARED_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4",
        "cifs", "smb3", "smbfs",
        "afs",
        "gfs2", "ocfs2",
        "ceph", "fuse.ceph", "fuse.ceph-fuse",
        "glusterfs", "fuse.glusterfs",
        "gpfs",
        "fuse.quobyte",
        "acfs",
        "beegfs",
        "fuse.sshfs",
    }
)

_MAX_PARENT_LOOKUPS = 32


@dataclass(frozen=True)
class OsRelease:
    id: str
    id_like: str
    version_id: str
    pretty_name: str


@dataclass(frozen=True)
class StorageLocation:
    fstype: str
    mountpoint: str
    shared: bool


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5) text (KEY=value lines, values possibly shell-quoted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = " ".join(words)
    return OsRelease(
        id=values.get("ID", ""),
        id_like=values.get("ID_LIKE", ""),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", values.get("NAME", "")),
    )


def read_os_release(session: SSHSession) -> OsRelease:
    """The host's /etc/os-release (falling back to /usr/lib/os-release)."""
    result = session.run(["cat", "/etc/os-release"], check=False)
    if result.exit_status != 0:
        result = session.run(["cat", "/usr/lib/os-release"])
    return parse_os_release(result.stdout)


def _unescape_findmnt(text: str) -> str:
    # findmnt writes unsafe characters (spaces, newlines) as \xHH
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def parse_findmnt(output: str) -> StorageLocation | None:
    """Parse one line of ``findmnt -n -o FSTYPE,TARGET``; None if empty."""
    line = output.strip().splitlines()[0] if output.strip() else ""
    if not line:
        return None
    fstype, _, target = line.strip().partition(" ")
    fstype = fstype.strip()
    return StorageLocation(
        fstype=fstype,
        mountpoint=_unescape_findmnt(target.strip()),
        shared=fstype.lower() in SHARED_FILESYSTEMS,
    )


def _findmnt_step(probe: str) -> Step:
    """Which filesystem holds ``probe``: its StorageLocation, or None when findmnt finds nothing there."""
    def parse(out: CommandResult) -> StorageLocation | None:
        _raise_unless(out, allowed=(0, 1))  # 1: nothing found for that path
        return parse_findmnt(out.stdout) if out.exit_status == 0 else None
    return Step(["findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", probe], parse)


def storage_kind(session: SSHSession, paths: list[str]) -> dict[str, StorageLocation]:
    """Which filesystem holds each path, and whether it is shared storage.

    A path that does not exist yet (a disk image about to be copied, say) is
    judged by its nearest existing parent directory; a path findmnt cannot
    place at all is left out of the result. Every path is asked in one exec
    (batched), and the parents of the paths not found in the next one.
    """
    result: dict[str, StorageLocation] = {}
    pending = {path: posixpath.normpath(path) if path else "/" for path in paths}
    for _ in range(_MAX_PARENT_LOOKUPS):
        if not pending:
            break
        probes = sorted(set(pending.values()))
        found: dict[str, StorageLocation | None] = {}
        for start in range(0, len(probes), MAX_COMMANDS):
            chunk = probes[start:start + MAX_COMMANDS]
            for probe, value in zip(chunk, run_steps(session, [_findmnt_step(p) for p in chunk])):
                if isinstance(value, AdapterError):
                    raise value
                found[probe] = value
        still: dict[str, str] = {}
        for path, probe in pending.items():
            if found[probe] is not None:
                result[path] = found[probe]
            elif probe != "/":
                still[path] = posixpath.dirname(probe) or "/"
        pending = still
    return result


def parse_getent_ahosts(output: str) -> list[str]:
    """Addresses from ``getent ahosts`` output, in order, without duplicates."""
    addresses: list[str] = []
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] not in addresses:
            addresses.append(fields[0])
    return addresses


# Several names in one command: $1 a nonce, the rest names. After each name's getent output,
# a line "NONCE STATUS" (the nonce keeps a resolver's answer from posing as the separator).
RESOLVE_SH = 'nonce=$1; shift; for n in "$@"; do getent ahosts "$n"; printf "%s %s\\n" "$nonce" "$?"; done'


def resolve_names_step(names: list[str]) -> Step:
    """``resolve_names`` as a Step (its parse gives {name: addresses}), to run alone or batched."""
    if len(names) == 1:
        def parse_one(out: CommandResult) -> dict[str, list[str]]:
            _raise_unless(out, allowed=(0, 2))  # 2: the name does not resolve
            return {names[0]: parse_getent_ahosts(out.stdout) if out.exit_status == 0 else []}
        return Step(["getent", "ahosts", names[0]], parse_one, timeout=30.0)
    nonce = secrets.token_hex(8)

    def parse(out: CommandResult) -> dict[str, list[str]]:
        resolved: dict[str, list[str]] = {}
        lines: list[str] = []
        pending = list(names)
        for line in out.stdout.splitlines():
            head, _, status = line.partition(" ")
            if head == nonce and status.isdigit() and pending:
                if int(status) not in (0, 2):
                    raise CommandFailed(out.argv, int(status), "\n".join(lines), out.stderr)
                resolved[pending.pop(0)] = parse_getent_ahosts("\n".join(lines)) if status == "0" else []
                lines = []
            else:
                lines.append(line)
        if pending:
            raise CommandFailed(out.argv, out.exit_status, out.stdout, out.stderr)
        return resolved
    return Step(["sh", "-c", RESOLVE_SH, "resolve", nonce, *names], parse, timeout=30.0)


def resolve_names(session: SSHSession, names: list[str]) -> dict[str, list[str]]:
    """How the host itself resolves each name (``getent ahosts``); [] if it cannot. One command for all."""
    if not names:
        return {}
    return run_step(session, resolve_names_step(names))


def _raise_unless(result: CommandResult, *, allowed: tuple[int, ...]) -> None:
    if result.exit_status not in allowed:
        raise CommandFailed(result.argv, result.exit_status, result.stdout, result.stderr)
