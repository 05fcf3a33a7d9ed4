"""Shared-storage writes. Each service runs in one transaction and writes its audit event there;
a refused request is audited in a transaction of its own, so the refusal is kept.

Views, the `nfs_setup` command and the jobs change shares only through these.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import NoReturn

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record, audit_record_now
from core.choices import AuditResultChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts.models import Host
from hosts.services import ServiceRefused

from .choices import SETUP_ACTIVE_STATES, SetupStatusChoices, ShareStatusChoices, StepStateChoices, StorageJobKindChoices
from .models import Share, ShareSetup
from .validation import DEFAULT_OPTIONS, InventoryHost, ShareRequest, validate_share_request

# Explicit job timeouts, each longer than the work it bounds.
PLAN_TIMEOUT_S = 300
APPLY_TIMEOUT_S = 3600  # package installs over a slow mirror
VERIFY_TIMEOUT_S = 300

__all__ = ["ServiceRefused"]


def inventory_hosts() -> list[InventoryHost]:
    return [InventoryHost(name=h.name, address=h.address) for h in Host.objects.order_by("name")]


def new_stamp() -> str:
    """Names this setup's backups, e.g. ganesha.conf.vmportal-20250102T030405Z."""
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


def new_token() -> str:
    return secrets.token_hex(8)


def share_request(share: Share) -> ShareRequest:
    """The share's settings as a validated request (re-checked against today's inventory)."""
    return validate_share_request(
        server=share.server.name,
        clients=[c.name for c in share.clients.order_by("name")],
        export_path=share.export_path,
        mount_path=share.mount_path,
        export_to=share.export_to,
        options=share.options,
        nfs_version=share.nfs_version,
        server_impl=share.server_impl,
        confirm_risky=share.risks_confirmed,
        inventory=inventory_hosts(),
    )


def _printable(value):
    """Audit parameters as entered, with control characters escaped (PostgreSQL's JSON refuses NUL)."""
    if isinstance(value, str):
        return value if value.isprintable() else repr(value)
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


def _refuse(*, actor: Actor, action: str, target, parameters: dict, message: str, hint: str) -> NoReturn:
    audit_record_now(
        actor=actor, action=action, result=AuditResultChoices.REFUSED, target=target, parameters=parameters, message=message
    )
    raise ServiceRefused(message, hint=hint)


def _changed(share: Share) -> None:
    broadcast.inventory_changed(host_id=share.server_id)
    for client_id in share.clients.values_list("pk", flat=True):
        broadcast.inventory_changed(host_id=client_id)


def _enqueue(kind: StorageJobKindChoices, func: str, args: tuple, target, timeout_s: int, actor: Actor, enqueue: bool) -> Job:
    return job_enqueue(kind=kind, func=func, args=args, target=target, timeout_s=timeout_s, actor=actor, enqueue=enqueue)


def _new_setup(share: Share, *, actor: Actor, enqueue: bool) -> tuple[ShareSetup, Job]:
    setup = ShareSetup.objects.create(share=share, stamp=new_stamp(), token=new_token(), created_by=actor.user)
    job = _enqueue(StorageJobKindChoices.PLAN, "storage.jobs.share_plan_job", (setup.pk,), share, PLAN_TIMEOUT_S, actor, enqueue)
    setup.plan_job = job
    setup.save(update_fields=["plan_job"])
    return setup, job


def share_create(
    *,
    server: str,
    clients: Iterable[str],
    export_path: str,
    mount_path: str,
    export_to: str = "",
    options: str = DEFAULT_OPTIONS,
    nfs_version: str = "4.1",
    server_impl: str = "",
    confirm_risky: bool = False,
    actor: Actor,
    enqueue: bool = True,
) -> tuple[Share, ShareSetup, Job]:
    """Record a new NFS share and start reading its hosts to plan the setup (nothing changes yet).

    Raises ValidationError for bad input (audited as refused, no host contacted) and
    ServiceRefused when the share exists already or a host cannot be contacted.
    """
    clients = list(clients)
    parameters = {
        name: _printable(value)
        for name, value in {
            "server": server, "clients": clients, "export_path": export_path, "mount_path": mount_path,
            "export_to": export_to, "options": options, "nfs_version": nfs_version, "server_impl": server_impl,
            "confirm_risky": confirm_risky,
        }.items()
    }
    try:
        request = validate_share_request(
            server=server, clients=clients, export_path=export_path, mount_path=mount_path, export_to=export_to,
            options=options, nfs_version=nfs_version, server_impl=server_impl, confirm_risky=confirm_risky,
            inventory=inventory_hosts(),
        )
    except ValidationError as exc:
        audit_record_now(
            actor=actor, action="share.create", result=AuditResultChoices.REFUSED, parameters=parameters,
            message=_printable("; ".join(m for messages in exc.message_dict.values() for m in messages)[:2000]),
        )
        raise
    with transaction.atomic():
        server_host = Host.objects.get(name__iexact=request.server.name)
        client_hosts = [Host.objects.get(name__iexact=c.name) for c in request.clients]
        problem = _contact_problem([server_host, *client_hosts])
        existing = Share.objects.filter(server=server_host, export_path=request.export_path).first()
        clash = (
            Share.objects.filter(mount_path=request.mount_path, clients__in=client_hosts).exclude(pk=getattr(existing, "pk", None)).first()
        )
        if problem is None and existing is None and clash is None:
            share = Share.objects.create(
                server=server_host, export_path=request.export_path, mount_path=request.mount_path, export_to=export_to.strip(),
                options=str(request.options), nfs_version=request.nfs_version, server_impl=request.server_impl,
                risks_confirmed=bool(request.risks), created_by=actor.user,
            )
            share.clients.set(client_hosts)
            setup, job = _new_setup(share, actor=actor, enqueue=enqueue)
            audit_record(
                actor=actor, action="share.create", result=AuditResultChoices.OK, target=share,
                parameters={**parameters, "risks": list(request.risks)}, job=job,
                message=f"NFS share {share} for {', '.join(c.name for c in client_hosts)} at {share.mount_path}; reading the hosts to plan it.",
            )
            _changed(share)
            return share, setup, job
    if problem is not None:
        _refuse(actor=actor, action="share.create", target=None, parameters=parameters, message=problem,
                hint="Confirm the host keys on the hosts' pages first.")
    if existing is not None:
        _refuse(actor=actor, action="share.create", target=existing, parameters=parameters,
                message=f"{existing} is already a share of the inventory.",
                hint="Open it and plan it again (that resumes or repeats its setup).")
    _refuse(actor=actor, action="share.create", target=clash, parameters=parameters,
            message=f"Share {clash} is already mounted at {request.mount_path} on some of these clients.",
            hint="Choose another mount path.")


def _contact_problem(hosts: list[Host]) -> str | None:
    blocked = [h.name for h in hosts if not h.is_connectable]
    if blocked:
        return f"The portal may not connect to {', '.join(blocked)} yet (SSH host key not trusted or mismatched)."
    return None


def _active_setup(share: Share) -> ShareSetup | None:
    return share.setups.filter(status__in=SETUP_ACTIVE_STATES).first()


def share_plan_request(*, share: Share, actor: Actor, enqueue: bool = True) -> tuple[ShareSetup, Job]:
    """Read the hosts again and make a new plan (to resume a failed setup, or to repeat one)."""
    with transaction.atomic():
        share = Share.objects.select_for_update().get(pk=share.pk)
        active = _active_setup(share)
        problem = _contact_problem([share.server, *share.clients.all()])
        if active is None and problem is None:
            setup, job = _new_setup(share, actor=actor, enqueue=enqueue)
            audit_record(actor=actor, action="share.plan", result=AuditResultChoices.OK, target=share, job=job,
                         message=f"Reading the hosts of {share} to plan its setup again.")
            _changed(share)
            return setup, job
    _refuse(actor=actor, action="share.plan", target=share, parameters={},
            message=problem or f"Setup #{active.pk} of {share} is still {active.get_status_display().lower()}.",
            hint="Confirm the host keys first." if problem else "Wait for it to finish.")


def share_apply_request(*, setup: ShareSetup, actor: Actor, confirm_dir_change: bool = False, enqueue: bool = True) -> Job:
    """Apply a plan the admin has seen: exactly the stored plan runs, as a job.

    A plan that would change the owner or mode of a directory that already exists (its summary's
    ``existing_dir_change``, shown before/after on the plan) is refused unless that change is
    confirmed."""
    with transaction.atomic():
        setup = ShareSetup.objects.select_for_update().select_related("share").get(pk=setup.pk)
        share = setup.share
        latest = share.setups.order_by("-created", "-pk").first()
        message = ""
        if setup.status != SetupStatusChoices.PLANNED:
            message = f"Setup #{setup.pk} is {setup.get_status_display().lower()}, not a plan ready to apply."
        elif latest is not None and latest.pk != setup.pk:
            message = f"Setup #{setup.pk} has been replaced by a newer plan (#{latest.pk})."
        elif share.setups.filter(status=SetupStatusChoices.APPLYING).exists():
            message = f"Another setup of {share} is being applied."
        hint = "Open the share's latest plan."
        change = (setup.plan.get("summary") or {}).get("existing_dir_change")
        if not message and change and not confirm_dir_change:
            message = (f"Applying setup #{setup.pk} would change the owner and mode of {change['path']}, which already "
                       f"exists on {change['host']}, from {change['before']} to {change['after']}.")
            hint = "Confirm that change (the box next to Apply, or --confirm-dir-change), or choose a new directory."
        if not message:
            job = _enqueue(StorageJobKindChoices.APPLY, "storage.jobs.share_apply_job", (setup.pk,), share, APPLY_TIMEOUT_S, actor, enqueue)
            setup.status = SetupStatusChoices.APPLYING
            setup.apply_job = job
            setup.applied_at = timezone.now()
            setup.save(update_fields=["status", "apply_job", "applied_at"])
            share.status = ShareStatusChoices.CONFIGURING
            share.save(update_fields=["status"])
            audit_record(actor=actor, action="share.apply", result=AuditResultChoices.OK, target=share, job=job,
                         parameters={"setup": setup.pk, "steps": len(setup.plan.get("steps", [])),
                                     "existing_dir_change": change if change else None},
                         message=f"Applying setup #{setup.pk} of {share}.")
            _changed(share)
            return job
    _refuse(actor=actor, action="share.apply", target=share,
            parameters={"setup": setup.pk, "existing_dir_change": change}, message=message, hint=hint)


def share_verify_request(*, share: Share, actor: Actor, enqueue: bool = True) -> Job:
    """Run the proof again (markers, QEMU's access, pools) and refresh the share's grid."""
    with transaction.atomic():
        share = Share.objects.select_for_update().get(pk=share.pk)
        active = _active_setup(share)
        done = share.setups.filter(status=SetupStatusChoices.SUCCEEDED).exists()
        if done and active is None:
            job = _enqueue(StorageJobKindChoices.VERIFY, "storage.jobs.share_verify_job", (share.pk,), share, VERIFY_TIMEOUT_S, actor, enqueue)
            audit_record(actor=actor, action="share.verify", result=AuditResultChoices.OK, target=share, job=job,
                         message=f"Verifying {share} on every host.")
            return job
    _refuse(actor=actor, action="share.verify", target=share, parameters={},
            message=f"{share} is being set up." if active else f"{share} has no finished setup to verify yet.",
            hint="Wait for it to finish." if active else "Set it up first.")


# --------------------------------------------------------------------------
# Written by the jobs (storage.nfs)


@transaction.atomic
def setup_planned(*, setup: ShareSetup, facts: dict, plan: dict) -> ShareSetup:
    setup = ShareSetup.objects.select_for_update().get(pk=setup.pk)
    setup.facts = facts
    setup.plan = plan
    setup.status = SetupStatusChoices.BLOCKED if plan.get("blockers") else SetupStatusChoices.PLANNED
    setup.save(update_fields=["facts", "plan", "status"])
    _changed(setup.share)
    return setup


@transaction.atomic
def setup_detect_failed(*, setup: ShareSetup, error: str, hint: str) -> None:
    setup = ShareSetup.objects.select_for_update().get(pk=setup.pk)
    setup.status = SetupStatusChoices.DETECT_FAILED
    setup.error, setup.error_hint = error, hint
    setup.finished_at = timezone.now()
    setup.save(update_fields=["status", "error", "error_hint", "finished_at"])
    _changed(setup.share)


@transaction.atomic
def setup_step_recorded(*, setup: ShareSetup, outcome: dict) -> None:
    """Keep one step's outcome as it finishes (the page shows the steps' states live)."""
    setup = ShareSetup.objects.select_for_update().get(pk=setup.pk)
    setup.outcomes = {**setup.outcomes, outcome["key"]: outcome}
    setup.save(update_fields=["outcomes"])


@transaction.atomic
def setup_finished(
    *,
    setup: ShareSetup,
    ok: bool,
    actor: Actor,
    proof: dict | None = None,
    grid: list | None = None,
    failed_step: str = "",
    error: str = "",
    hint: str = "",
) -> ShareSetup:
    """Record how applying ended: steps failed (resume later), or done with the proof's grid."""
    setup = ShareSetup.objects.select_for_update().select_related("share").get(pk=setup.pk)
    share = Share.objects.select_for_update().get(pk=setup.share_id)
    now = timezone.now()
    setup.status = SetupStatusChoices.SUCCEEDED if ok else SetupStatusChoices.FAILED
    setup.failed_step, setup.error, setup.error_hint = failed_step, error, hint
    setup.finished_at = now
    if proof is not None:
        setup.proof = proof
    if grid is not None:
        setup.grid = grid
        share.last_grid = grid
        share.last_verified = now
    setup.save(update_fields=["status", "failed_step", "error", "error_hint", "finished_at", "proof", "grid"])
    if failed_step:
        share.status = ShareStatusChoices.FAILED
    elif grid is not None and not all(row.get("ok") for row in grid):
        share.status = ShareStatusChoices.DEGRADED
    else:
        share.status = ShareStatusChoices.READY if ok else ShareStatusChoices.FAILED
    share.save(update_fields=["status", "last_grid", "last_verified"])
    changed = sum(1 for o in setup.outcomes.values() if o.get("state") == StepStateChoices.CHANGED)
    audit_record(
        actor=actor, action="share.apply", result=AuditResultChoices.OK if ok and share.status == ShareStatusChoices.READY else AuditResultChoices.FAILED,
        target=share, job=setup.apply_job,
        parameters={"setup": setup.pk, "failed_step": failed_step, "steps_changed": changed,
                    "steps_already_done": sum(1 for o in setup.outcomes.values() if o.get("state") == StepStateChoices.ALREADY_DONE)},
        message=error or f"{share} is {share.get_status_display().lower()}: {changed} step(s) changed something.",
    )
    _changed(share)
    return setup


@transaction.atomic
def share_verified(*, share: Share, grid: list, job: Job | None, actor: Actor) -> Share:
    share = Share.objects.select_for_update().get(pk=share.pk)
    share.last_grid = grid
    share.last_verified = timezone.now()
    share.status = ShareStatusChoices.READY if grid and all(row.get("ok") for row in grid) else ShareStatusChoices.DEGRADED
    share.save(update_fields=["last_grid", "last_verified", "status"])
    audit_record(
        actor=actor, action="share.verified",
        result=AuditResultChoices.OK if share.status == ShareStatusChoices.READY else AuditResultChoices.FAILED,
        target=share, job=job, parameters={"hosts": [row["host"] for row in grid if not row.get("ok")]},
        message=f"{share} verified on {len(grid)} host(s): {share.get_status_display().lower()}.",
    )
    _changed(share)
    return share
