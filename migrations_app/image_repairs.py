"""Which image files a preflight offers to repair, and which paths the portal will ever
chown (pure): the owner and mode QEMU's user needs (0660, or 0640 for read-only disks),
never 777, and never a system file.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import PreflightRun

MODES = ("0660", "0640", "0600")
# Never chown anything under these: a guest image does not live there.
FORBIDDEN_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/root", "/run")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@:,/=-]+$")


def repair_path_problem(path: object) -> str | None:
    """Why ``path`` is not a file the portal will change the owner of, or None."""
    if not isinstance(path, str) or not path.startswith("/"):
        return "The image path must be absolute."
    if len(path) > 1024 or not _SAFE_PATH.match(path):
        return f"{path!r} contains characters the portal does not accept in an image path."
    if posixpath.normpath(path) != path or "/../" in f"{path}/":
        return f"{path} is not a plain path (no '..', '//' or trailing '/')."
    if any(path == tree or path.startswith(tree + "/") for tree in FORBIDDEN_TREES):
        return f"{path} is a system file; the portal only repairs guest images."
    return None


def run_repairs(run: PreflightRun) -> list[tuple[str, str]]:
    """The (path, mode) pairs the run's verdicts offer to repair, validated."""
    found: list[tuple[str, str]] = []
    for verdict in run.verdicts:
        for entry in verdict.get("repairs", ()):
            if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] not in MODES
                    or repair_path_problem(entry[0])):
                continue
            pair = (entry[0], entry[1])
            if pair not in found:
                found.append(pair)
    return found
