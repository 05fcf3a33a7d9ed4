"""One lease per guest: which operation may change a guest right now.

Every operation that changes a guest (a live or cold migration, a power action, a permission
repair, later an evacuation step, a save or a restore) claims the guest's lease in the same
transaction that creates its own record, and releases it in the transaction that ends it:

    with transaction.atomic():
        cold = ColdMigration.objects.create(...)
        leases.lease_claim(guest_uuid=vm.uuid, guest_name=vm.name,
                           kind=GuestLeaseKindChoices.COLD_MIGRATION, owner=cold, actor=actor)

The UNIQUE guest UUID decides who goes, not a query before the insert: of two requests at
once exactly one inserts its row, the other gets ``GuestBusy`` naming the holder. A lease
whose owner ended (or vanished) without releasing it — its worker died — is reclaimed by
``leases_reclaim()``, which the periodic sweeps call.

An owner is any saved model instance with ``is_terminal`` (has it ended?) and
``get_absolute_url()`` (where to follow it); ``core.Job``, ``Migration`` and ``ColdMigration``
are. This app knows nothing else about them.
"""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record, audit_record_now
from core.choices import AuditResultChoices
from core.errors import ServiceRefused

from .choices import GuestLeaseKindChoices
from .models import GuestLease

# How often a claim looks again when the row that beat it was released before it could be read.
_CLAIM_ATTEMPTS = 3

OwnerKey = tuple[int, int]  # (content type id, owner pk)


class LeaseOwner(Protocol):
    """What a lease's owner offers: a saved row that knows whether it ended and where it is shown."""

    pk: Any

    @property
    def is_terminal(self) -> bool: ...

    def get_absolute_url(self) -> str: ...


class GuestBusy(ServiceRefused):
    """The guest's lease is held by another operation: .message names it, .hint links to it."""

    def __init__(self, *, guest_name: str, holder: GuestLease | None):
        self.holder = holder
        if holder is None:
            super().__init__(
                f"{guest_name} is busy: another operation on it was requested at the same moment.",
                hint="Look at the guest's page and try again once it is free.",
            )
            return
        since = timezone.localtime(holder.since).strftime("%Y-%m-%d %H:%M:%S %Z")
        where = f" at {holder.owner_url}" if holder.owner_url else ""
        super().__init__(
            f"{guest_name} is busy: {holder.owner_label} has held it since {since}, "
            f"requested by {holder.actor_label}.",
            hint=f"Follow {holder.owner_label}{where}; {guest_name} is free again once it ends.",
        )

    def audit_parameters(self) -> dict[str, Any]:
        """What held the guest, for the refusal's audit row."""
        if self.holder is None:
            return {"held_by": None}
        return {
            "held_by": {
                "kind": self.holder.kind,
                "owner": self.holder.owner_label,
                "url": self.holder.owner_url,
                "since": self.holder.since.isoformat(),
                "actor": self.holder.actor_label,
            }
        }


def _owner_key(owner: models.Model) -> OwnerKey:
    return ContentType.objects.get_for_model(owner, for_concrete_model=True).pk, owner.pk


def lease_holder(guest_uuid: uuid_lib.UUID | str) -> GuestLease | None:
    """The lease held on this guest, or None when it is free."""
    return GuestLease.objects.filter(guest_uuid=guest_uuid).first()


def lease_claim(
    *,
    guest_uuid: uuid_lib.UUID | str,
    guest_name: str,
    kind: GuestLeaseKindChoices,
    owner: LeaseOwner,
    actor: Actor,
    label: str = "",
) -> GuestLease:
    """Claim the guest for ``owner``, or raise GuestBusy naming the operation that holds it.

    Must run inside the transaction that creates ``owner`` (so the request and its lease
    commit, or vanish, together); the caller lets GuestBusy roll that transaction back and
    records the refusal with ``lease_refused``. The insert runs in a savepoint: the unique
    constraint decides, and a failed insert leaves the caller's transaction usable.
    ``label`` names the owner in messages (default: "<kind> #<pk>", e.g. "cold migration #12").
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lease_claim() must run inside the transaction that creates its owner.")
    kind = GuestLeaseKindChoices(kind)
    owner_type, owner_id = _owner_key(owner)
    fields = dict(
        guest_name=guest_name[:255], kind=kind, owner_type_id=owner_type, owner_id=owner_id,
        owner_label=(label or f"{kind.label.lower()} #{owner.pk}")[:255],
        owner_url=owner.get_absolute_url()[:300], actor=actor.user, actor_label=actor.label[:150],
    )
    holder = None
    for _attempt in range(_CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                return GuestLease.objects.create(guest_uuid=guest_uuid, **fields)
        except IntegrityError:
            holder = lease_holder(guest_uuid)
            if holder is not None:
                break
            # The winner released it between our insert and this read: try again.
    raise GuestBusy(guest_name=guest_name, holder=holder)


def lease_refused(
    busy: GuestBusy, *, actor: Actor, action: str, target: models.Model | None, parameters: dict | None = None
) -> NoReturn:
    """Audit a request refused because the guest is busy, and raise the refusal again.

    Call it after the request's transaction rolled back: the audit row has a transaction of
    its own, so the refusal is kept.
    """
    audit_record_now(
        actor=actor, action=action, result=AuditResultChoices.REFUSED, target=target,
        parameters={**(parameters or {}), **busy.audit_parameters()}, message=busy.message,
    )
    raise busy


def lease_release(*, owner: models.Model) -> int:
    """Release every lease ``owner`` holds (call in the transaction that ends it). Returns how many."""
    owner_type, owner_id = _owner_key(owner)
    deleted, _ = GuestLease.objects.filter(owner_type_id=owner_type, owner_id=owner_id).delete()
    return deleted


# ---------------------------------------------------------------------------
# Reclaiming leases whose owner is dead


@dataclass(frozen=True)
class StaleLease:
    lease: GuestLease
    reason: str


def stale_leases(leases: Iterable[GuestLease], owner_ended: Mapping[OwnerKey, bool]) -> list[StaleLease]:
    """The leases to reclaim, with why (pure).

    ``owner_ended`` maps each owner that still exists to whether it has ended; an owner
    missing from it no longer exists. A lease of an owner still running is kept, however
    old: telling a dead worker from a slow one is its own app's reconciler's business,
    which ends the owner (and so releases the lease).
    """
    stale = []
    for lease in leases:
        ended = owner_ended.get((lease.owner_type_id, lease.owner_id))
        if ended is None:
            stale.append(StaleLease(lease, f"its owner {lease.owner_label} no longer exists"))
        elif ended:
            stale.append(StaleLease(lease, f"its owner {lease.owner_label} ended without releasing it"))
    return stale


def _owners_ended(leases: list[GuestLease]) -> dict[OwnerKey, bool]:
    """Whether each existing owner of these leases has ended, one query per owner model."""
    by_type: dict[int, set[int]] = {}
    for lease in leases:
        by_type.setdefault(lease.owner_type_id, set()).add(lease.owner_id)
    ended: dict[OwnerKey, bool] = {}
    for type_id, ids in by_type.items():
        model = ContentType.objects.get_for_id(type_id).model_class()
        if model is None:  # its app was removed: its owners are gone
            continue
        for owner in model._default_manager.filter(pk__in=ids):
            ended[(type_id, owner.pk)] = bool(owner.is_terminal)
    return ended


def leases_reclaim(*, actor: Actor | None = None) -> int:
    """Periodic: release leases whose owner ended or vanished without releasing them. Returns how many.

    Each reclaim deletes that very lease (not whatever holds the guest now) and is audited
    in the same transaction.
    """
    leases = list(GuestLease.objects.all())
    if not leases:
        return 0
    reclaimed = 0
    for stale in stale_leases(leases, _owners_ended(leases)):
        lease = stale.lease
        with transaction.atomic():
            deleted, _ = GuestLease.objects.filter(
                pk=lease.pk, owner_type_id=lease.owner_type_id, owner_id=lease.owner_id
            ).delete()
            if not deleted:
                continue  # released meanwhile by its owner
            audit_record(
                actor=actor or Actor.system(), action="guest.lease_reclaimed", result=AuditResultChoices.OK,
                target=lease,
                parameters={"guest_uuid": str(lease.guest_uuid), "kind": lease.kind, "owner": lease.owner_label,
                            "since": lease.since.isoformat()},
                message=f"Lease on {lease.guest_name} reclaimed: {stale.reason}.",
            )
        reclaimed += 1
    return reclaimed
