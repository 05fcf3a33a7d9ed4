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
from collections.abc import Sequence
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


def _os_release_step(path: str = "/etc/os-release") -> Step:
    def parse(out: CommandResult) -> OsRelease:
        _raise_unless(out, allowed=(0,))
        return parse_os_release(out.stdout)
    return Step(["cat", path], parse)


def read_os_release(session: SSHSession) -> OsRelease:
    """The host's /etc/os-release (falling back to /usr/lib/os-release)."""
    try:
        return run_step(session, _os_release_step())
    except CommandFailed:
        return run_step(session, _os_release_step("/usr/lib/os-release"))


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


@dataclass(frozen=True)
class HostProbe:
    """What ``probe_host`` learnt: each part, or the adapter error that part ended with."""

    os_release: OsRelease | None
    os_release_error: AdapterError | None
    storage: dict[str, StorageLocation]
    storage_error: AdapterError | None


def storage_kind(session: SSHSession, paths: list[str]) -> dict[str, StorageLocation]:
    """Which filesystem holds each path, and whether it is shared storage.

    A path that does not exist yet (a disk image about to be copied, say) is
    judged by its nearest existing parent directory; a path that cannot be
    placed at all is left out of the result. One exec: the host's mount table
    and every path's canonical form (``placement_steps``); a host whose tools
    cannot say (no ``realpath -m``) is asked path by path with ``findmnt -T``.
    """
    probe = _probe(session, paths, first=[])
    if probe.storage_error is not None:
        raise probe.storage_error
    return probe.storage


def probe_host(session: SSHSession, paths: list[str]) -> HostProbe:
    """os-release and ``storage_kind(paths)`` in ONE exec: what an inventory refresh asks over SSH.

    A further exec only for what the first could not settle: /usr/lib/os-release on a host
    without /etc/os-release, or paths its tools could not place. A part that fails is given
    as its error beside the other part's answer; errors of the exec itself (the host
    unreachable, a timeout) propagate.
    """
    return _probe(session, paths, first=[_os_release_step()])


def _probe(session: SSHSession, paths: list[str], *, first: list[Step]) -> HostProbe:
    steps = first + (placement_steps(paths) if paths else [])
    values = run_steps(session, steps) if steps else []
    release = values[0] if first else None
    storage: dict[str, StorageLocation] = {}
    storage_error: AdapterError | None = None
    if paths:
        table, canonical = values[len(first):]
        if any(v is None or isinstance(v, AdapterError) for v in (table, canonical)):
            # No realpath -m (or its answer could not be trusted): ask findmnt path by path.
            storage, _, storage_error = _storage_rounds(session, paths)
        else:
            storage = place_paths(table, canonical)
    if isinstance(release, CommandFailed):
        try:
            release = run_step(session, _os_release_step("/usr/lib/os-release"))
        except CommandFailed as exc:
            release = exc
    if isinstance(release, AdapterError):
        return HostProbe(None, release, storage, storage_error)
    return HostProbe(release, None, storage, storage_error)


def parse_mount_table(output: str) -> list[tuple[str, str]]:
    """``findmnt -rn -o TARGET,FSTYPE`` lines as (mountpoint, fstype), in mount order."""
    table = []
    for line in output.splitlines():
        target, _, fstype = line.strip().partition(" ")
        if target and fstype:
            table.append((_unescape_findmnt(target), fstype.strip()))
    return table


def place_paths(table: list[tuple[str, str]], canonical: dict[str, str]) -> dict[str, StorageLocation]:
    """Each path's filesystem, from the mount table and the path's canonical form (pure).

    The mountpoint holding a path is the longest one it lies under; of several mounts on the
    same point the last one mounted (the one on top) — findmnt -T's own answer. A path under
    no mountpoint is left out.
    """
    placed: dict[str, StorageLocation] = {}
    for path, real in canonical.items():
        best: tuple[str, str] | None = None
        for mountpoint, fstype in table:
            inside = mountpoint == "/" or real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
            if inside and (best is None or len(mountpoint) >= len(best[0])):
                best = (mountpoint, fstype)
        if best is not None:
            placed[path] = StorageLocation(fstype=best[1], mountpoint=best[0],
                                           shared=best[1].lower() in SHARED_FILESYSTEMS)
    return placed


def placement_steps(paths: list[str]) -> list[Step]:
    """The two commands ``place_paths`` needs: the mount table and ``realpath -m`` of every path.

    The realpath step's value is {path: canonical}, or None when its answer does not name
    every path (a path it could not resolve): then nothing of it is trusted.
    """
    def parse_table(out: CommandResult) -> list[tuple[str, str]] | None:
        _raise_unless(out, allowed=(0,))
        return None if out.truncated else parse_mount_table(out.stdout)

    def parse_real(out: CommandResult) -> dict[str, str] | None:
        _raise_unless(out, allowed=(0,))
        answers = out.stdout.split("\0")
        if answers and answers[-1] == "":
            answers.pop()
        if len(answers) != len(paths) or out.truncated:
            return None
        return dict(zip(paths, answers))

    return [Step(["findmnt", "-rn", "-o", "TARGET,FSTYPE"], parse_table),
            Step(["realpath", "-mz", "--", *paths], parse_real)]


def _storage_rounds(session: SSHSession, paths: list[str], first: Sequence[Step] = ()):
    """storage_kind's rounds, with ``first`` asked in the first exec: (storage, first's values, error)."""
    result: dict[str, StorageLocation] = {}
    pending = {path: posixpath.normpath(path) if path else "/" for path in paths}
    extra: list[Step] = list(first)
    extra_values: list = []
    for _ in range(_MAX_PARENT_LOOKUPS):
        if not pending and not extra:
            break
        probes = sorted(set(pending.values()))
        steps = extra + [_findmnt_step(p) for p in probes]
        values: list = []
        for start in range(0, len(steps), MAX_COMMANDS):
            values += run_steps(session, steps[start:start + MAX_COMMANDS])
        extra_values += values[:len(extra)]
        found = dict(zip(probes, values[len(extra):]))
        extra = []
        error = next((v for v in found.values() if isinstance(v, AdapterError)), None)
        if error is not None:
            return result, extra_values, error
        still: dict[str, str] = {}
        for path, probe in pending.items():
            if found[probe] is not None:
                result[path] = found[probe]
            elif probe != "/":
                still[path] = posixpath.dirname(probe) or "/"
        pending = still
    return result, extra_values, None


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
