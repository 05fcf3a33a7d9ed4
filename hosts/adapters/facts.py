"""Facts about a host that libvirt does not tell, read over SSH.

Each function takes an open ``SSHSession`` and runs plain read-only commands
(``cat``, ``findmnt``, ``getent``); the parsing is split into pure
``parse_*`` functions that are tested without a host.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from .errors import CommandFailed
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


def storage_kind(session: SSHSession, paths: list[str]) -> dict[str, StorageLocation]:
    """Which filesystem holds each path, and whether it is shared storage.

    A path that does not exist yet (a disk image about to be copied, say) is
    judged by its nearest existing parent directory; a path findmnt cannot
    place at all is left out of the result.
    """
    result: dict[str, StorageLocation] = {}
    for path in paths:
        probe = posixpath.normpath(path) if path else "/"
        for _ in range(_MAX_PARENT_LOOKUPS):
            out = session.run(["findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", probe], check=False)
            _raise_unless(out, allowed=(0, 1))  # 1: nothing found for that path
            location = parse_findmnt(out.stdout) if out.exit_status == 0 else None
            if location is not None:
                result[path] = location
                break
            if probe == "/":
                break
            probe = posixpath.dirname(probe) or "/"
    return result


def parse_getent_ahosts(output: str) -> list[str]:
    """Addresses from ``getent ahosts`` output, in order, without duplicates."""
    addresses: list[str] = []
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] not in addresses:
            addresses.append(fields[0])
    return addresses


def resolve_names(session: SSHSession, names: list[str]) -> dict[str, list[str]]:
    """How the host itself resolves each name (``getent ahosts``); [] if it cannot."""
    resolved: dict[str, list[str]] = {}
    for name in names:
        out = session.run(["getent", "ahosts", name], check=False)
        _raise_unless(out, allowed=(0, 2))  # 2: the name does not resolve
        resolved[name] = parse_getent_ahosts(out.stdout) if out.exit_status == 0 else []
    return resolved


def _raise_unless(result: CommandResult, *, allowed: tuple[int, ...]) -> None:
    if result.exit_status not in allowed:
        raise CommandFailed(result.argv, result.exit_status, result.stdout, result.stderr)
