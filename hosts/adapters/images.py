"""Disk image files on a host, over SSH: facts, copies with progress, checksums, ownership.

No Django here. Every remote command is an argv list (``SSHSession.run`` quotes it with
``shlex.join``); the few shell snippets are constant scripts that take paths as ``$1``…,
never text pasted into a command line. Paths are expected to be validated absolute paths.

``runas`` is a prefix such as ``["runuser", "-u", "libvirt-qemu", "--"]`` (see
``QemuIdentity.runas_argv``): on NFS with root_squash only QEMU's user may write the
share, so the writing half of a copy runs as that user when it can.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import AdapterError
from .ssh import SSHSession, relay

# Reads as root (local images are root's 0600 while the guest is off), writes as `runas`.
# The writer first creates the file itself with O_EXCL (noclobber): from then on it is ours,
# so removing it after a failure can never remove someone else's file.
CREATE_SH = r"""
dst=$1; shift
umask 077  # a guest's disk is nobody else's business: new copies are 0600
if ! "$@" sh -c 'umask 077; set -C; : > "$1"' create "$dst"; then
    if [ -e "$dst" ]; then echo "dd: failed to open '$dst': File exists" >&2; exit 17; fi
    exit 1
fi
"""

# Reads as root (local images are root's 0600 while the guest is off), writes as `runas`.
COPY_ON_HOST_SH = CREATE_SH.replace(
    "dst=$1; shift",
    'src=$1; dst=$2; shift 2\ntest -r "$src" || { echo "cannot read $src: No such file or permission denied" >&2; exit 2; }',
    1,
) + r"""
set -o pipefail
if ! dd if="$src" bs=4M status=none | "$@" dd of="$dst" bs=4M conv=sparse,fsync,notrunc,nocreat status=progress; then
    "$@" rm -f -- "$dst" || rm -f -- "$dst"
    exit 1
fi
"""

# Writes stdin (relayed from another host) into a new file; never overwrites, never leaves half a copy.
WRITE_STDIN_SH = CREATE_SH + r"""
if ! "$@" dd of="$dst" bs=4M conv=sparse,fsync,notrunc,nocreat status=none; then
    "$@" rm -f -- "$dst" || rm -f -- "$dst"
    exit 1
fi
"""

FILE_EXISTS_EXIT = 17

DIGEST_SH = r"""
set -eu
path=$1; shift
"$@" sha256sum -b -- "$path" | cut -d' ' -f1
"""

_DD_BYTES = re.compile(rb"(\d+) bytes")


@dataclass(frozen=True)
class ImageFacts:
    """What ``qemu-img info`` says about an image file."""

    path: str
    format: str
    virtual_size: int
    actual_size: int
    backing: str | None


@dataclass(frozen=True)
class FileFacts:
    """``stat`` of a file: size in bytes, owner, group, octal mode."""

    path: str
    size: int
    user: str
    group: str
    mode: str

    @property
    def perm(self) -> str:
        return f"{self.user}:{self.group} {self.mode}"


@dataclass(frozen=True)
class CopyResult:
    bytes: int
    seconds: float


class CopyFailed(AdapterError):
    """A copy did not complete; the message says which end failed and how.

    ``target_existed``: the destination file was already there, so it is not the copier's
    to remove (it was left alone).
    """

    def __init__(self, message: str, *, hint: str | None = None, target_existed: bool = False):
        super().__init__(message, hint=hint)
        self.target_existed = target_existed


def parse_dd_progress(chunk: bytes) -> int | None:
    """The latest byte count in a piece of ``dd status=progress`` output (``\\r``-separated)."""
    found = _DD_BYTES.findall(chunk)
    return int(found[-1]) if found else None


def parse_image_info(path: str, text: str) -> ImageFacts:
    data = json.loads(text)
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    return ImageFacts(
        path=path,
        format=str(data.get("format", "")),
        virtual_size=int(data.get("virtual-size", 0)),
        actual_size=int(data.get("actual-size", 0)),
        backing=str(backing) if backing else None,
    )


def image_facts(session: SSHSession, path: str, *, timeout: float = 30.0) -> ImageFacts:
    """``qemu-img info`` of one image (``-U``: the guest may hold a lock on it)."""
    result = session.run(["qemu-img", "info", "-U", "--output=json", path], timeout=timeout)
    try:
        return parse_image_info(path, result.stdout)
    except (ValueError, TypeError) as exc:
        raise AdapterError(f"qemu-img info gave unreadable output for {path}: {exc}") from exc


def parse_stat(path: str, text: str) -> FileFacts | None:
    fields = text.split()
    if len(fields) != 4 or not fields[0].isdigit():
        return None
    return FileFacts(path=path, size=int(fields[0]), user=fields[1], group=fields[2], mode=fields[3])


def file_facts(session: SSHSession, path: str) -> FileFacts | None:
    """Size, owner and mode of a file; None when it does not exist (or root cannot see it)."""
    result = session.run(["stat", "-L", "-c", "%s %U %G %a", "--", path], check=False, timeout=15.0)
    if result.exit_status != 0:
        return None
    return parse_stat(path, result.stdout)


def free_bytes(session: SSHSession, directory: str) -> int | None:
    """Free bytes for files in ``directory``; None if df cannot tell."""
    result = session.run(["df", "-B1", "--output=avail", "--", directory], check=False, timeout=15.0)
    lines = result.stdout.split()
    if result.exit_status != 0 or len(lines) < 2 or not lines[-1].isdigit():
        return None
    return int(lines[-1])


def can_write_dir(session: SSHSession, directory: str, runas: Sequence[str]) -> bool:
    """Can ``runas`` (QEMU's user) create files in ``directory``?"""
    result = session.run([*runas, "test", "-d", directory, "-a", "-w", directory, "-a", "-x", directory],
                         check=False, timeout=15.0)
    return result.exit_status == 0


def sha256(session: SSHSession, path: str, *, runas: Sequence[str] = (), timeout: float = 600.0) -> str:
    """SHA-256 of a file, read as ``runas`` (or root)."""
    result = session.run(["sh", "-c", DIGEST_SH, "digest", path, *runas], timeout=timeout)
    digest = result.stdout.strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise AdapterError(f"sha256sum of {path} gave {digest[:80]!r}")
    return digest


def copy_on_host(
    session: SSHSession,
    source: str,
    destination: str,
    *,
    runas: Sequence[str] = (),
    on_bytes: Callable[[int], None] | None = None,
    timeout: float,
) -> CopyResult:
    """Copy a file on one host (e.g. a local image onto a mounted share), reporting bytes copied.

    The destination must not exist (``dd conv=excl``): an existing file is never overwritten.
    """

    def progress(piece: bytes) -> None:
        done = parse_dd_progress(piece)
        if done is not None and on_bytes is not None:
            on_bytes(done)

    result = session.run(
        ["bash", "-c", COPY_ON_HOST_SH, "copy", source, destination, *runas],
        check=False, timeout=timeout, on_stderr=progress,
    )
    if result.exit_status != 0:
        raise CopyFailed(
            f"Copying {source} to {destination} on {session.target.address} failed "
            f"(exit {result.exit_status}): {last_error_line(result.stderr)}",
            hint=copy_hint(result.stderr), target_existed=result.exit_status == FILE_EXISTS_EXIT,
        )
    size = file_facts(session, destination)
    return CopyResult(bytes=size.size if size else 0, seconds=result.duration_s)


def copy_between_hosts(
    source: SSHSession,
    source_path: str,
    destination: SSHSession,
    destination_path: str,
    *,
    runas: Sequence[str] = (),
    on_bytes: Callable[[int], None] | None = None,
    timeout: float,
) -> CopyResult:
    """Copy a file from one host to another through the portal's two SSH sessions."""
    outcome = relay(
        source, ["dd", f"if={source_path}", "bs=4M", "status=none"],
        destination, ["sh", "-c", WRITE_STDIN_SH, "write", destination_path, *runas],
        timeout=timeout, on_bytes=on_bytes,
    )
    if not outcome.ok:
        failed = outcome.destination if not outcome.destination.ok else outcome.source
        where = destination.target.address if failed is outcome.destination else source.target.address
        raise CopyFailed(
            f"Copying {source_path} ({source.target.address}) to {destination_path} ({destination.target.address}) "
            f"failed on {where} (exit {failed.exit_status}): {last_error_line(failed.stderr)}",
            hint=copy_hint(failed.stderr),
            target_existed=failed is outcome.destination and failed.exit_status == FILE_EXISTS_EXIT,
        )
    return CopyResult(bytes=outcome.bytes, seconds=outcome.destination.duration_s)


def set_owner_mode(session: SSHSession, path: str, *, user: str, group: str | None, mode: str) -> FileFacts:
    """``chown user[:group]`` and ``chmod mode`` one file; returns its new stat."""
    owner = f"{user}:{group}" if group else user
    session.run(["chown", "--", owner, path], timeout=15.0)
    session.run(["chmod", "--", mode, path], timeout=15.0)
    facts = file_facts(session, path)
    if facts is None:
        raise AdapterError(f"{path} vanished while its owner was being set")
    return facts


def can_open(session: SSHSession, path: str, runas: Sequence[str], *, writable: bool) -> bool:
    """Can ``runas`` (QEMU's user) open the file for reading (and writing)?"""
    argv = [*runas, "test", "-r", path] + (["-a", "-w", path] if writable else [])
    return session.run(argv, check=False, timeout=15.0).exit_status == 0


def remove_file(session: SSHSession, path: str, *, runas: Sequence[str] = ()) -> bool:
    """Delete one file (as ``runas`` when root may not, e.g. on a root_squash share); False if it failed."""
    result = session.run([*runas, "rm", "-f", "--", path], check=False, timeout=30.0)
    if result.exit_status != 0 and runas:
        result = session.run(["rm", "-f", "--", path], check=False, timeout=30.0)
    return result.exit_status == 0


def path_exists(session: SSHSession, path: str) -> bool:
    return session.run(["test", "-e", path], check=False, timeout=15.0).exit_status == 0


def last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if not _DD_BYTES.search(line.encode()) and "records" not in line]
    return (errors or lines or ["no error output"])[-1][:300]


def copy_hint(stderr: str) -> str:
    text = stderr.lower()
    if "no space left" in text:
        return "The destination is full: free space there or choose other storage."
    if "file exists" in text:
        return "A file of that name is already there: move it away or choose other storage."
    if "permission denied" in text:
        return ("The writer may not create files there. On NFS with root_squash the export directory "
                "must belong to QEMU's user (the NFS wizard sets that up).")
    return ""


__all__ = [
    "CopyFailed", "CopyResult", "FileFacts", "ImageFacts", "can_open", "can_write_dir",
    "copy_between_hosts", "copy_hint", "copy_on_host", "last_error_line", "file_facts", "free_bytes", "image_facts", "parse_dd_progress",
    "parse_image_info", "parse_stat", "path_exists", "remove_file", "set_owner_mode", "sha256",
]
