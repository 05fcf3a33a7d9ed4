"""Permission repair, the recipe's "chmod the image" step done right: the owner and mode QEMU's
user needs on the destination (0660, or 0640 for read-only disks), never 777.

Only files a preflight found QEMU could not open are repaired (the run's recorded repairs),
each with its owner/mode before and after in the audit log; the preflight then checks again.
"""

from __future__ import annotations

import posixpath
import re

from core.choices import JobLogLevelChoices
from core.jobs import JobContext
from hosts import access
from hosts.adapters import images, probes
from hosts.adapters.errors import AdapterError

from . import services
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


def repair_image_permissions(*, run_id: int, ctx: JobContext | None, identity: probes.QemuIdentity | None = None) -> dict:
    """Give each flagged image QEMU's user as owner and the right mode on the run's destination.

    ``identity`` overrides what the host's qemu.conf says (tests). Each file is audited with its
    owner/mode before and after; then the run's preflight is queued again.
    """
    run = PreflightRun.objects.select_related("destination", "plan").get(pk=run_id)
    host = run.destination
    repaired, failed = [], []
    with access.open_session(host) as session:
        ssh = session.ssh
        identity = identity or probes.qemu_identity(ssh)
        for path, mode in run_repairs(run):
            before = images.file_facts(ssh, path)
            if before is None:
                failed.append({"path": path, "error": "not found"})
                _log(ctx, f"{path} does not exist on {host.name}", JobLogLevelChoices.WARNING)
                continue
            try:
                after = images.set_owner_mode(ssh, path, user=identity.user, group=identity.group, mode=mode)
            except AdapterError as exc:
                failed.append({"path": path, "error": exc.message})
                _log(ctx, f"{path}: {exc.message}", JobLogLevelChoices.ERROR)
                continue
            opens = images.can_open(ssh, path, identity.runas_argv(), writable=mode != "0640")
            services.image_permissions_repaired(run=run, path=path, before=before.perm, after=after.perm,
                                                opens=opens, job=ctx.job if ctx else None)
            _log(ctx, f"{path}: {before.perm} → {after.perm}; QEMU's user {identity.user} "
                      f"{'can open it now' if opens else 'still cannot open it (check the directories above it)'}")
            (repaired if opens else failed).append({"path": path, "before": before.perm, "after": after.perm})
    services.preflight_recheck(run=run)
    _log(ctx, "Checking this destination again")
    if failed:
        raise AdapterError(
            f"{len(failed)} file(s) could not be repaired on {host.name}: "
            + "; ".join(f"{f['path']}: {f.get('error') or 'QEMU still cannot open it'}" for f in failed),
            hint="On NFS with root_squash, change the owner on the NFS server itself; make every directory "
                 "above the image searchable by QEMU's user.",
        )
    return {"host": host.name, "repaired": repaired}


def _log(ctx: JobContext | None, message: str, level=JobLogLevelChoices.INFO) -> None:
    if ctx is not None:
        ctx.log(message, level=level)
