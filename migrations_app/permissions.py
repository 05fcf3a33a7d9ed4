"""Permission repair, the recipe's "chmod the image" step done right: the owner and mode QEMU's
user needs on the destination (0660, or 0640 for read-only disks), never 777.

Only files a preflight found QEMU could not open are repaired (the run's recorded repairs),
each with its owner/mode before and after in the audit log; the preflight then checks again.
"""

from __future__ import annotations

from core.choices import JobLogLevelChoices
from core.jobs import JobContext
from hosts.adapters import images
from hosts.adapters.errors import AdapterError
from hosts.adapters.ssh import SSHSession
from hosts.inventory import ssh_target_for

from . import gather
from .image_repairs import run_repairs
from .models import PreflightRun
from .services import plans, repairs


def repair_image_permissions(*, run_id: int, ctx: JobContext | None, identity: gather.QemuIdentity | None = None) -> dict:
    """Give each flagged image QEMU's user as owner and the right mode on the run's destination.

    ``identity`` overrides what the host's qemu.conf says (tests). Each file is audited with its
    owner/mode before and after; then the run's preflight is queued again.
    """
    run = PreflightRun.objects.select_related("destination", "plan").get(pk=run_id)
    host = run.destination
    repaired, failed = [], []
    with SSHSession(ssh_target_for(host)) as ssh:
        identity = identity or gather.qemu_identity(ssh)
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
            repairs.image_permissions_repaired(run=run, path=path, before=before.perm, after=after.perm,
                                               opens=opens, job=ctx.job if ctx else None)
            _log(ctx, f"{path}: {before.perm} → {after.perm}; QEMU's user {identity.user} "
                      f"{'can open it now' if opens else 'still cannot open it (check the directories above it)'}")
            (repaired if opens else failed).append({"path": path, "before": before.perm, "after": after.perm})
    plans.preflight_recheck(run=run)
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
