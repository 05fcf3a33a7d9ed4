"""The one sanctioned delete of audit events: those older than N days, checkpointed first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from .actors import Actor
from .audit import audit_record
from .audit_chain import checkpoint_insert, head, lock_chain
from .choices import AuditCheckpointKindChoices, AuditResultChoices
from .models import AuditDeletePermit, AuditEvent


@dataclass(frozen=True)
class RetentionOutcome:
    removed: int
    first_id: int | None
    last_id: int | None


@transaction.atomic
def audit_retention_apply(*, days: int, actor: Actor) -> RetentionOutcome:
    """Delete the events older than ``days`` days, oldest first, and audit what was removed.

    The chain's head is signed into a checkpoint first; then a retention checkpoint signs the
    last removed event's hash, which the first event kept links to, so `audit_verify` still
    walks from there. Only whole leading runs go: the cut is before the oldest event kept.
    """
    if days < 1:
        raise ValueError("Keep at least one day of audit events.")
    cutoff = timezone.now() - timedelta(days=days)
    lock_chain()
    head_id, head_hash = head()
    checkpoint_insert(kind=AuditCheckpointKindChoices.PERIODIC, event_id=head_id, event_hash_=head_hash)
    first_kept = AuditEvent.objects.filter(time__gte=cutoff).order_by("pk").values_list("pk", flat=True).first()
    doomed = AuditEvent.objects.all() if first_kept is None else AuditEvent.objects.filter(pk__lt=first_kept)
    last = doomed.order_by("-pk").values_list("pk", "hash").first()
    if last is None:
        outcome = RetentionOutcome(removed=0, first_id=None, last_id=None)
    else:
        first_id = doomed.order_by("pk").values_list("pk", flat=True).first()
        checkpoint_insert(kind=AuditCheckpointKindChoices.RETENTION, event_id=last[0], event_hash_=last[1])
        permit = AuditDeletePermit.objects.create(up_to_id=last[0])
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        with connection.cursor() as cursor:
            # The ORM refuses deletes on purpose; this is the one place that does it, under the permit.
            cursor.execute(f"DELETE FROM {table} WHERE id <= %s", [last[0]])
            removed = cursor.rowcount
        permit.delete()
        outcome = RetentionOutcome(removed=removed, first_id=first_id, last_id=last[0])
    audit_record(
        actor=actor, action="audit.retention", result=AuditResultChoices.OK,
        parameters={"days": days, "before": cutoff.isoformat(), "removed": outcome.removed,
                    "first_id": outcome.first_id, "last_id": outcome.last_id},
        message=f"Removed {outcome.removed} audit event(s) older than {days} days"
                + (f" (#{outcome.first_id}–#{outcome.last_id})." if outcome.removed else "."),
    )
    return outcome
