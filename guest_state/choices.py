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


SAVED_STATE_ACTIVE = (SavedStateStatusChoices.SAVING,)
RESTORE_ACTIVE = (RestoreStatusChoices.QUEUED, RestoreStatusChoices.RUNNING)


class GuestStateJobKindChoices(models.TextChoices):
    SAVE = "guest.save", "Save guest state"
    RESTORE = "guest.restore", "Restore guest state"
    MANAGED_SAVE = "guest.managed_save", "Managed save of a guest"
    MANAGED_SAVE_REMOVE = "guest.managed_save_remove", "Discard a guest's managed save"
    STATE_DELETE = "guest.state_delete", "Delete a saved state file"


class GuestStateAuditActionChoices(models.TextChoices):
    SAVE_REQUEST = "guest.save_requested", "Save requested"
    SAVE_OUTCOME = "guest.save_outcome", "Save ended"
    RESTORE_REQUEST = "guest.restore_requested", "Restore requested"
    RESTORE_OUTCOME = "guest.restore_outcome", "Restore ended"
    MANAGED_SAVE = "guest.managed_save", "Managed save"
    MANAGED_SAVE_REMOVE = "guest.managed_save_remove", "Managed save discarded"
    STATE_DELETE = "guest.state_delete", "Saved state file deleted"
