"""Choice classes of host recovery (the guests of a dead host brought back elsewhere)."""

from django.db import models


class RecoveryStatusChoices(models.TextChoices):
    CHECKING = "checking", "Checking the host is gone"
    RUNNING = "running", "Recovering"
    SUCCEEDED = "succeeded", "Recovered"
    PARTIAL = "partial", "Partly recovered"
    FAILED = "failed", "Failed"
    REFUSED = "refused", "Refused: the host still answers"


RECOVERY_ACTIVE = (RecoveryStatusChoices.CHECKING, RecoveryStatusChoices.RUNNING)


class RecoveryItemStatusChoices(models.TextChoices):
    PENDING = "pending", "Waiting for the check"
    RUNNING = "running", "Starting on the destination"
    SUCCEEDED = "succeeded", "Running on the destination"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Not started"


ITEM_ACTIVE = (RecoveryItemStatusChoices.PENDING, RecoveryItemStatusChoices.RUNNING)


class RecoveryJobKindChoices(models.TextChoices):
    CHECK = "recovery.check", "Check a dead host is gone"
    ITEM = "recovery.item", "Start a recovered guest"
    STALE_REMOVE = "recovery.stale_remove", "Remove a stale copy of a recovered guest"


class RecoveryAuditActionChoices(models.TextChoices):
    REQUEST = "recovery.requested", "Recovery requested"
    CHECK = "recovery.checked", "Dead host checked"
    ITEM_OUTCOME = "recovery.item_outcome", "Recovered guest ended"
    OUTCOME = "recovery.outcome", "Recovery ended"
    STALE_COPY = "recovery.stale_copy", "Stale copy found"
    STALE_REMOVE = "recovery.stale_remove", "Stale copy removal"
