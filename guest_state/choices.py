"""Choice classes of saved guest states."""

from django.db import models


class SavedStateStatusChoices(models.TextChoices):
    SAVING = "saving", "Saving"
    SAVED = "saved", "Saved"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


class RestoreStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Restoring"
    SUCCEEDED = "succeeded", "Restored"
    FAILED = "failed", "Failed"


class SnapshotStatusChoices(models.TextChoices):
    TAKING = "taking", "Taking"
    PRESENT = "present", "In libvirt"
    MISSING = "missing", "Gone from libvirt"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


# A record naming a snapshot libvirt has (or had, until a check found it gone).
SNAPSHOT_LIVE = (SnapshotStatusChoices.TAKING, SnapshotStatusChoices.PRESENT, SnapshotStatusChoices.MISSING)

SAVED_STATE_ACTIVE = (SavedStateStatusChoices.SAVING,)
RESTORE_ACTIVE = (RestoreStatusChoices.QUEUED, RestoreStatusChoices.RUNNING)


class GuestStateJobKindChoices(models.TextChoices):
    SAVE = "guest.save", "Save guest state"
    RESTORE = "guest.restore", "Restore guest state"
    SAVE_SETTLE = "guest.save_settle", "Settle a save whose job died"
    RESTORE_SETTLE = "guest.restore_settle", "Settle a restore whose job died"
    JOB_SETTLE = "guest.job_settle", "Settle a managed save or a deletion whose job died"
    MANAGED_SAVE = "guest.managed_save", "Managed save of a guest"
    MANAGED_SAVE_REMOVE = "guest.managed_save_remove", "Discard a guest's managed save"
    STATE_DELETE = "guest.state_delete", "Delete a saved state file"
    SNAPSHOT_CREATE = "guest.snapshot_create", "Take a snapshot"
    SNAPSHOT_REVERT = "guest.snapshot_revert", "Revert to a snapshot"
    SNAPSHOT_DELETE = "guest.snapshot_delete", "Delete a snapshot"
    SNAPSHOT_CHECK = "guest.snapshot_check", "Check snapshots with libvirt"


class GuestStateAuditActionChoices(models.TextChoices):
    SAVE_REQUEST = "guest.save_requested", "Save requested"
    SAVE_OUTCOME = "guest.save_outcome", "Save ended"
    RESTORE_REQUEST = "guest.restore_requested", "Restore requested"
    RESTORE_OUTCOME = "guest.restore_outcome", "Restore ended"
    MANAGED_SAVE = "guest.managed_save", "Managed save"
    MANAGED_SAVE_REMOVE = "guest.managed_save_remove", "Managed save discarded"
    STATE_DELETE = "guest.state_delete", "Saved state file deleted"
    SNAPSHOT_REQUEST = "guest.snapshot_requested", "Snapshot requested"
    SNAPSHOT_OUTCOME = "guest.snapshot_outcome", "Snapshot taken or failed"
    SNAPSHOT_REVERT = "guest.snapshot_revert", "Revert to a snapshot"
    SNAPSHOT_DELETE = "guest.snapshot_delete", "Snapshot deleted"
    SNAPSHOT_CHECKED = "guest.snapshot_checked", "Snapshots checked with libvirt"
