"""The work of a recovery, through host sessions: prove the dead host is gone, then define and
start each guest on its destination from the definition the inventory kept."""

from __future__ import annotations

import logging

from core.encryption import decrypt_secret
from core.errors import PortalError
from core.jobs import JobContext
from hosts import access
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.adapters.errors import AdapterError, HostUnreachable, LibvirtFailure
from hosts.adapters.errors import CommandFailed, CommandTimeout, HostAuthError, HostKeyMismatch, HostKeyUnknown
from hosts.choices import VM_ACTIVE_STATES
from hosts.inventory import refresh_host

from . import services
from .decisions import StartFacts, start_verdict
from .models import HostRecovery, RecoveryItem

logger = logging.getLogger(__name__)

# Errors only a host that is there can cause.
ANSWERS = (HostAuthError, HostKeyMismatch, HostKeyUnknown, CommandFailed, CommandTimeout, LibvirtFailure)


def _answers(host, what: str) -> str | None:
    """How ``host`` answered over ``what`` ("ssh" or "libvirt") just now, or None when nothing answered."""
    label = "SSH" if what == "ssh" else "libvirt"
    try:
        with access.open_session(host) as session:
            if what == "ssh":
                session.ssh.run(["true"])
            else:
                lv.get_host_facts(session.libvirt)
    except HostUnreachable as exc:
        logger.info("%s: no answer over %s: %s", host.name, what, exc.message)
        return None
    except ANSWERS as exc:  # refused our key, changed its key, failed a command: something is there
        return f"{host.name} answered over {label} ({exc.message})."
    except AdapterError as exc:  # the portal could not even try (no key pair, bad settings): not proof
        return f"The portal could not check {host.name} over {label}: {exc.message}"
    return f"{host.name} answered over {label} just now."


def run_check(*, recovery_id: int, ctx: JobContext, enqueue: bool = True) -> dict:
    """Refuse the recovery if the host answers over SSH or libvirt right now; else start the items."""
    recovery = HostRecovery.objects.select_related("host").get(pk=recovery_id)
    host = recovery.host
    answers = []
    for what in ("ssh", "libvirt"):
        ctx.log(f"Is {host.name} still answering over {what}?")
        answer = _answers(host, what)
        if answer:
            answers.append(answer)
        ctx.progress(50 if what == "ssh" else 100)
    if answers:
        evidence = (" ".join(answers) + " Without proof that the host is gone nothing was started: a host that "
                    "answers may still run its guests. If it is really broken, power it off and ask again.")
    else:
        evidence = f"{host.name} answers neither over SSH nor over libvirt; the admin confirmed it is powered off."
    ctx.log(evidence)
    items = services.recovery_checked(recovery=recovery, gone=not answers, evidence=evidence, enqueue=enqueue)
    return {"host": host.name, "gone": not answers, "items": [item.pk for item in items]}


def _disk_in_use(ssh, path: str) -> str | None:
    """None when ``path`` is on the destination and no QEMU holds its image lock, else why not."""
    seen = ssh.run(["test", "-e", path], check=False)
    if not seen.ok:
        return f"the destination does not see its disk {path}."
    # Without --force-share qemu-img asks for QEMU's image locks: a guest still running elsewhere holds them.
    info = ssh.run(["qemu-img", "info", "--output=json", "--", path], check=False)
    if not info.ok and "lock" in info.stderr.lower():
        return f"its disk {path} is locked by a running QEMU — the guest may still run somewhere: {info.stderr.strip()}"
    return None


def run_item(*, item_id: int, ctx: JobContext) -> None:
    item = RecoveryItem.objects.select_related("recovery__host", "destination").get(pk=item_id)
    if not services.item_begin(item=item):
        ctx.log("The item was settled before it started.")
        return
    uuid = str(item.vm_uuid)
    dead = item.recovery.host
    try:
        ctx.log(f"Is {dead.name} still silent?")
        answer = _answers(dead, "libvirt") or _answers(dead, "ssh")
        with access.open_session(item.destination) as session:
            ctx.log(f"Checking {item.destination.name} for {item.vm_name}")
            there = mg.domain_presence(session.libvirt, uuid)
            problems = [] if answer else [p for p in (_disk_in_use(session.ssh, path) for path in item.disks) if p]
            refusal = start_verdict(StartFacts(
                guest=item.vm_name, dead_host=dead.name, destination=item.destination.name,
                dead_host_answer=answer, on_destination=there.state if there.exists else None,
                disk_problems=tuple(problems),
            ))
            if refusal:
                services.item_finish(item=item, ok=False, error=refusal)
                return
            ctx.progress(30)
            ctx.log(f"Defining {item.vm_name} on {item.destination.name} from its last known definition")
            lv.define_domain(session.libvirt, decrypt_secret(item.definition_encrypted))
            ctx.progress(60)
            ctx.log(f"Starting {item.vm_name}")
            lv.start_domain(session.libvirt, uuid)
            ctx.progress(90)
    except PortalError as exc:
        services.item_finish(item=item, ok=False, error=str(exc))
        raise
    services.item_finish(item=item, ok=True)
    try:  # the inventory follows at once; the periodic refresh would otherwise catch up
        refresh_host(host_id=item.destination_id, ctx=ctx)
    except PortalError as exc:
        ctx.log(f"Refreshing {item.destination.name} failed: {exc}")
    ctx.progress(100)


def run_stale_remove(*, item_id: int, ctx: JobContext) -> None:
    """Undefine the old host's copy of a recovered guest, only while it is shut off there."""
    item = RecoveryItem.objects.select_related("recovery__host").get(pk=item_id)
    host = item.recovery.host
    uuid = str(item.vm_uuid)
    try:
        with access.open_session(host) as session:
            there = mg.domain_presence(session.libvirt, uuid)
            if there.exists and there.state in VM_ACTIVE_STATES:
                services.stale_copy_seen(item=item, state=there.state)
                raise AdapterError(f"{item.vm_name} runs on {host.name} now: not undefined.",
                                   hint="Decide which copy to keep and force the other off.")
            if there.exists:
                ctx.log(f"Undefining the {there.state} copy of {item.vm_name} on {host.name} (its disks stay)")
                lv.undefine_domain(session.libvirt, uuid)
    except PortalError as exc:
        services.stale_removed(item=item, job=ctx.job, ok=False, error=str(exc))
        raise
    services.stale_removed(item=item, job=ctx.job, ok=True)
    try:
        refresh_host(host_id=host.pk, ctx=ctx)
    except PortalError as exc:
        ctx.log(f"Refreshing {host.name} failed: {exc}")
