"""Where a state file goes: a directory on the host or a share's directory (pure, bounded)."""

from __future__ import annotations

import posixpath
import re

MAX_DIRECTORY_CHARS = 200
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")
# System directories a state file must never be written into.
_FORBIDDEN = ("/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/bin", "/sbin", "/usr", "/lib")


class LocationProblem(ValueError):
    """The directory given is not acceptable; the message says why and what to give instead."""


def validate_directory(text: str) -> str:
    """The normalised absolute directory, or LocationProblem saying what is wrong."""
    text = (text or "").strip()
    if not text:
        raise LocationProblem("Give a directory on the host, e.g. /var/lib/libvirt/save.")
    if len(text) > MAX_DIRECTORY_CHARS:
        raise LocationProblem(f"The directory is longer than {MAX_DIRECTORY_CHARS} characters: choose a shorter one.")
    if not _SAFE_PATH.match(text):
        raise LocationProblem("The directory must be an absolute path of letters, digits and . _ / + - only.")
    if ".." in text.split("/"):
        raise LocationProblem("The directory must not contain '..': give the real path.")
    path = posixpath.normpath(text)
    if path == "/" or any(path == top or path.startswith(top + "/") for top in _FORBIDDEN):
        raise LocationProblem(f"{path} is a system directory: choose one for data, e.g. /var/lib/libvirt/save.")
    return path


def state_file_name(*, vm_name: str, vm_uuid: str, stamp: str) -> str:
    """A file name made only of safe characters: the guest's name may hold anything."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", vm_name)[:60].strip("._") or "guest"
    return f"{safe}-{str(vm_uuid)[:8]}-{stamp}.state"
