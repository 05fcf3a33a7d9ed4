"""Writes of a host's life: edit (checked before it is saved), decommission, remove.

Same rules as ``hosts/services.py``: one transaction each with its audit event; refusals are
audited in their own transaction and raised as ``ServiceRefused``. The decisions are the pure
functions of ``hosts/lifecycle.py``.
"""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.encryption import encrypt_secret
from core.errors import ServiceRefused
from core.jobs import job_enqueue
from core.models import Job
from hosts.adapters.ssh import HostKeyInfo

from . import lifecycle
from .choices import (
    HOST_CHANGE_OPEN_STATES,
    VM_ACTIVE_STATES,
    HostAuthMethodChoices,
    HostChangeStatusChoices,
    HostJobKindChoices,
    HostLifecycleChoices,
)
from .models import GuestLease, Host, HostChange, HostFacts
from .services import HostConnection, _enqueue_refresh, _pin, _refuse, portal_key_get_or_create
from .validators import validate_host_name

CHANGE_READ_KEY_TIMEOUT_S = 60
CHANGE_CHECK_TIMEOUT_S = 120


def connection_of(host: Host) -> dict:
    return {
        "address": host.address,
        "ssh_port": host.ssh_port,
        "ssh_user": host.ssh_user,
        "auth_method": host.auth_method,
        "libvirt_uri": host.libvirt_uri,
    }


def details_of(host: Host) -> dict:
    return {"name": host.name, "notes": host.notes, "tags": list(host.tags)}


def _locked(host: Host) -> Host:
    return Host.all_objects.select_for_update().get(pk=host.pk)


def _refuse_with(refusal: lifecycle.Refusal, *, actor: Actor, action: str, host: Host, parameters=None) -> NoReturn:
    _refuse(actor=actor, action=action, target=host, parameters=parameters or {},
            message=refusal.message, hint=refusal.hint)


def busy_guests(host: Host) -> int:
    return GuestLease.objects.filter(guest_uuid__in=host.vms.values("uuid")).count()


# -- edit -------------------------------------------------------------------------------------


@transaction.atomic
def host_details_update(*, host: Host, name: str, notes: str, tags: list[str], actor: Actor) -> Host:
    """Change what the portal calls a host and says about it (nothing about reaching it)."""
    host = _locked(host)
    if not lifecycle.may_edit(host.lifecycle):
        raise ServiceRefused(f"{host.name} has been removed.", hint="A removed host cannot change any more.")
    validate_host_name(name)
    if name.lower() != host.name.lower() and Host.all_objects.not_removed().filter(name__iexact=name).exists():
        raise ServiceRefused(f"A host named {name!r} already exists.", hint="Choose another name.")
    before = details_of(host)
    proposed = {"name": name, "notes": notes, "tags": list(tags)}
    changed = lifecycle.descriptive_changes(before, proposed)
    if not changed:
        return host
    host.name, host.notes, host.tags = name, notes, list(tags)
    host.full_clean()
    host.save(update_fields=["name", "notes", "tags"])
    audit_record(
        actor=actor, action="host.edit", result=AuditResultChoices.OK, target=host,
        parameters={"changed": list(changed), "old": {f: before[f] for f in changed},
                    "new": {f: proposed[f] for f in changed}},
        message=f"Edited {', '.join(changed)} of {host.name}.",
    )
    broadcast.inventory_changed(host_id=host.pk)
    return host


def host_edit(
    *, host: Host, connection: HostConnection, name: str, notes: str, tags: list[str], actor: Actor,
    enqueue: bool = True,
) -> tuple[HostChange, Job] | None:
    """An admin's edit: saved at once when only name, notes or tags change; otherwise the whole
    edit waits in a HostChange until the new connection settings are checked (then None is not
    returned, and nothing is saved until the check logs in)."""
    details = {"name": name, "notes": notes, "tags": list(tags)}
    requested = host_change_request(host=host, connection=connection, details=details, actor=actor, enqueue=enqueue)
    if requested is None:
        host_details_update(host=host, actor=actor, **details)
    return requested


@transaction.atomic
def host_change_request(
    *, host: Host, connection: HostConnection, actor: Actor, details: dict | None = None, enqueue: bool = True
) -> tuple[HostChange, Job] | None:
    """Propose new connection settings: read the host key at the (new) address, for an admin
    to confirm before the settings are checked and saved. None when nothing would change.

    A connection whose private key / password is None keeps the host's own secret (only
    possible for the same way of logging in).
    """
    host = _locked(host)
    if not lifecycle.may_edit(host.lifecycle):
        raise ServiceRefused(f"{host.name} has been removed.", hint="A removed host cannot change any more.")
    proposed = {
        "address": connection.address, "ssh_port": connection.ssh_port, "ssh_user": connection.ssh_user,
        "auth_method": str(connection.auth_method), "libvirt_uri": connection.libvirt_uri,
    }
    secret = (connection.private_key_pem if connection.auth_method == HostAuthMethodChoices.PRIVATE_KEY
              else connection.password if connection.auth_method == HostAuthMethodChoices.PASSWORD else None)
    if secret is None and connection.auth_method != HostAuthMethodChoices.PORTAL_KEY \
            and connection.auth_method != host.auth_method:
        raise ServiceRefused("Give the new private key or password.", hint="It is needed to log in the new way.")
    changed = lifecycle.connection_changes(connection_of(host), proposed, new_secret=secret is not None)
    if not changed:
        return None
    clash = Host.all_objects.not_removed().exclude(pk=host.pk).filter(
        address__iexact=connection.address, ssh_port=connection.ssh_port
    ).first()
    if clash is not None:
        raise ServiceRefused(f"{clash.name} is already at {connection.address}:{connection.ssh_port}.",
                             hint="Check the address and port.")
    if connection.auth_method == HostAuthMethodChoices.PORTAL_KEY:
        portal_key_get_or_create(actor=actor)
    HostChange.objects.filter(host=host, status__in=HOST_CHANGE_OPEN_STATES).update(
        status=HostChangeStatusChoices.CANCELLED, ended=timezone.now(), error="Replaced by a newer change."
    )
    if details:
        if details["name"].lower() != host.name.lower() and \
                Host.all_objects.not_removed().filter(name__iexact=details["name"]).exists():
            raise ServiceRefused(f"A host named {details['name']!r} already exists.", hint="Choose another name.")
        proposed["details"] = details
    change = HostChange.objects.create(
        host=host, proposed=proposed, secret_encrypted=encrypt_secret(secret) if secret else "",
        requested_by=actor.user, requested_by_label=actor.label,
    )
    audit_record(
        actor=actor, action="host.change_request", result=AuditResultChoices.OK, target=host,
        parameters={"change": change.pk, "changed": list(changed), "old": connection_of(host), "new": proposed},
        message=f"Asked to change {', '.join(changed)} of {host.name}; checking before saving.",
    )
    job = job_enqueue(
        kind=HostJobKindChoices.CHANGE_READ_KEY, func="hosts.jobs.host_change_read_key_job",
        args=(change.pk,), target=host, timeout_s=CHANGE_READ_KEY_TIMEOUT_S, actor=actor, enqueue=enqueue,
    )
    return change, job


def _open_change(change: HostChange, *states) -> HostChange | None:
    change = HostChange.objects.select_for_update().select_related("host").get(pk=change.pk)
    return change if change.status in states else None


@transaction.atomic
def host_change_key_read(*, change: HostChange, key: HostKeyInfo) -> HostChange:
    """The key the (new) address presented, waiting for an admin to confirm its fingerprint."""
    change = _open_change(change, HostChangeStatusChoices.READING_KEY) or change
    if change.status != HostChangeStatusChoices.READING_KEY:
        return change
    change.presented_host_key = key.openssh
    change.presented_host_key_fingerprint = key.fingerprint
    change.status = HostChangeStatusChoices.AWAITING_CONFIRMATION
    change.save(update_fields=["presented_host_key", "presented_host_key_fingerprint", "status"])
    broadcast.inventory_changed(host_id=change.host_id)
    return change


@transaction.atomic
def host_change_failed(*, change: HostChange, error: str, hint: str, actor: Actor, job: Job | None = None) -> None:
    """The change could not be checked: the host keeps its settings, the change says why."""
    change = _open_change(change, *HOST_CHANGE_OPEN_STATES)
    if change is None:
        return
    change.status = HostChangeStatusChoices.FAILED
    change.error, change.hint, change.ended = error, hint, timezone.now()
    change.secret_encrypted = ""
    change.save(update_fields=["status", "error", "hint", "ended", "secret_encrypted"])
    audit_record(
        actor=actor, action="host.change_check", result=AuditResultChoices.FAILED, target=change.host,
        parameters={"change": change.pk, "new": change.proposed}, job=job,
        message=f"Nothing changed on {change.host.name}: {error}",
    )
    broadcast.inventory_changed(host_id=change.host_id)


def host_change_confirm(*, change: HostChange, fingerprint: str, actor: Actor, enqueue: bool = True) -> Job:
    """The admin confirmed the fingerprint shown: log in with the new settings, then save them."""
    with transaction.atomic():
        locked = _open_change(change, HostChangeStatusChoices.AWAITING_CONFIRMATION)
        if locked is not None and fingerprint == locked.presented_host_key_fingerprint:
            locked.status = HostChangeStatusChoices.CHECKING
            locked.save(update_fields=["status"])
            audit_record(
                actor=actor, action="host.change_confirm", result=AuditResultChoices.OK, target=locked.host,
                parameters={"change": locked.pk, "fingerprint": fingerprint},
                message=f"Confirmed host key {fingerprint} for the new settings of {locked.host.name}.",
            )
            return job_enqueue(
                kind=HostJobKindChoices.CHANGE_CHECK, func="hosts.jobs.host_change_check_job",
                args=(locked.pk,), target=locked.host, timeout_s=CHANGE_CHECK_TIMEOUT_S, actor=actor,
                enqueue=enqueue,
            )
    _refuse(
        actor=actor, action="host.change_confirm", target=change.host,
        parameters={"change": change.pk, "confirmed_fingerprint": fingerprint},
        message="This change is not waiting for that fingerprint.",
        hint="Open the change again and compare the fingerprint shown with the host's console.",
    )


@transaction.atomic
def host_change_cancel(*, change: HostChange, actor: Actor) -> None:
    change = _open_change(change, *HOST_CHANGE_OPEN_STATES)
    if change is None:
        return
    change.status, change.ended, change.secret_encrypted = HostChangeStatusChoices.CANCELLED, timezone.now(), ""
    change.save(update_fields=["status", "ended", "secret_encrypted"])
    audit_record(actor=actor, action="host.change_cancel", result=AuditResultChoices.OK, target=change.host,
                 parameters={"change": change.pk}, message=f"Cancelled a connection change of {change.host.name}.")


def change_candidate(change: HostChange) -> Host:
    """The host as it would be with the change (not saved): what the check logs in to."""
    host = Host.all_objects.get(pk=change.host_id)
    for field in lifecycle.CONNECTION_FIELDS:
        setattr(host, field, change.proposed[field])
    if change.secret_encrypted:
        host.secret_encrypted = change.secret_encrypted
    elif host.auth_method == HostAuthMethodChoices.PORTAL_KEY:
        host.secret_encrypted = ""
    host.host_key = change.presented_host_key
    return host


@transaction.atomic
def host_change_apply(*, change: HostChange, actor: Actor, job: Job | None = None) -> Host | None:
    """The check logged in with the new settings: copy them onto the host (old values audited)."""
    change = _open_change(change, HostChangeStatusChoices.CHECKING)
    if change is None:
        return None
    host = _locked(change.host)
    before = {**connection_of(host), "host_key_fingerprint": host.host_key_fingerprint}
    candidate = change_candidate(change)
    for field in lifecycle.CONNECTION_FIELDS:
        setattr(host, field, getattr(candidate, field))
    host.secret_encrypted = candidate.secret_encrypted
    details = change.proposed.get("details") or {}
    before.update({field: value for field, value in details_of(host).items() if field in details})
    for field, value in details.items():
        setattr(host, field, value)
    _pin(host, HostKeyInfo.from_openssh(change.presented_host_key))
    host.full_clean()
    host.save()
    change.status, change.ended, change.secret_encrypted = HostChangeStatusChoices.APPLIED, timezone.now(), ""
    change.save(update_fields=["status", "ended", "secret_encrypted"])
    audit_record(
        actor=actor, action="host.update", result=AuditResultChoices.OK, target=host, job=job,
        parameters={"change": change.pk, "old": before,
                    "new": {**change.proposed, "host_key_fingerprint": host.host_key_fingerprint},
                    "secret_changed": bool(change.secret_encrypted)},
        message=f"Saved the new connection settings of {host.name} after logging in with them.",
    )
    broadcast.inventory_changed(host_id=host.pk)
    _enqueue_refresh(host, actor=actor)
    return host


# -- decommission and remove -------------------------------------------------------------------


def host_decommission(*, host: Host, actor: Actor) -> Host:
    """Take a host out of service: no guests, no candidate lists, not watched; history kept."""
    with transaction.atomic():
        host = _locked(host)
        refusal = lifecycle.decommission_refusal(
            lifecycle=host.lifecycle, name=host.name,
            running_guests=host.vms.filter(state__in=VM_ACTIVE_STATES).count(), busy_guests=busy_guests(host),
        )
        if refusal is None:
            host.lifecycle = HostLifecycleChoices.DECOMMISSIONED
            host.decommissioned_at = timezone.now()
            host.decommissioned_by_label = actor.label
            host.save(update_fields=["lifecycle", "decommissioned_at", "decommissioned_by_label"])
            audit_record(actor=actor, action="host.decommission", result=AuditResultChoices.OK, target=host,
                         message=f"Decommissioned {host.name}: it takes no guests and is no longer watched.")
            broadcast.inventory_changed(host_id=host.pk, hosts_changed=True)
            return host
    _refuse_with(refusal, actor=actor, action="host.decommission", host=host)


@transaction.atomic
def host_recommission(*, host: Host, actor: Actor) -> Host:
    """Put a decommissioned host back in service (it is watched and offered again)."""
    host = _locked(host)
    if host.lifecycle != HostLifecycleChoices.DECOMMISSIONED:
        raise ServiceRefused(f"{host.name} is not decommissioned.", hint="Nothing to do.")
    host.lifecycle, host.decommissioned_at, host.decommissioned_by_label = HostLifecycleChoices.ACTIVE, None, ""
    host.save(update_fields=["lifecycle", "decommissioned_at", "decommissioned_by_label"])
    audit_record(actor=actor, action="host.recommission", result=AuditResultChoices.OK, target=host,
                 message=f"{host.name} is in service again.")
    broadcast.inventory_changed(host_id=host.pk, hosts_changed=True)
    return host


def host_remove(*, host: Host, actor: Actor) -> Host:
    """Remove a decommissioned host with no guests: its row becomes a tombstone (name, id, when
    and by whom), its credentials, pinned key and facts go; every record pointing at it stays."""
    with transaction.atomic():
        host = _locked(host)
        refusal = lifecycle.remove_refusal(
            lifecycle=host.lifecycle, name=host.name, defined_guests=host.vms.count(),
            busy_guests=busy_guests(host),
        )
        if refusal is None:
            fingerprint = host.host_key_fingerprint
            host.lifecycle = HostLifecycleChoices.REMOVED
            host.removed_at = timezone.now()
            host.removed_by = actor.user
            host.removed_by_label = actor.label
            host.secret_encrypted = ""
            host.host_key = host.presented_host_key = ""
            host.presented_host_key_fingerprint = ""
            host.in_maintenance = False
            host.save()
            HostFacts.objects.filter(host=host).delete()
            HostChange.objects.filter(host=host).delete()
            audit_record(actor=actor, action="host.remove", result=AuditResultChoices.OK, target=host,
                         parameters={"host_key_fingerprint": fingerprint},
                         message=f"Removed {host.name}; its records now point at its tombstone.")
            broadcast.inventory_changed(host_id=host.pk, hosts_changed=True)
            return host
    _refuse_with(refusal, actor=actor, action="host.remove", host=host)
def portal_key_public() -> str:
    key = PortalKey.objects.order_by("pk").first()
    return key.public_key if key else ""
