"""Choice classes of maintenance windows and their occurrences. Code compares against these."""

from django.db import models


class OnStartChoices(models.TextChoices):
    EVACUATE = "evacuate", "Enter maintenance and evacuate (default plan)"
    WARN = "warn", "Only warn"


class OnEndChoices(models.TextChoices):
    RETURN = "return", "Exit maintenance and bring guests home"
    LEAVE = "leave", "Exit maintenance, leave guests where they are"


class OccurrenceStatusChoices(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    PREPARING = "preparing", "Preparing"  # the dry run ran; waiting for the start
    EVACUATING = "evacuating", "Evacuating"
    IN_MAINTENANCE = "in_maintenance", "In maintenance"
    RETURNING = "returning", "Returning"
    DONE = "done", "Done"
    MISSED = "missed", "Missed"  # the portal was not running at the start and the cutoff passed
    INCOMPLETE = "incomplete", "Incomplete"  # a guest did not move (or did not come home)
    OVERRAN = "overran", "Overran"  # the work ran past the window's end
    CANCELLED = "cancelled", "Cancelled"


OCCURRENCE_WAITING_STATES = (OccurrenceStatusChoices.SCHEDULED, OccurrenceStatusChoices.PREPARING)
OCCURRENCE_ACTIVE_STATES = (
    OccurrenceStatusChoices.EVACUATING,
    OccurrenceStatusChoices.IN_MAINTENANCE,
    OccurrenceStatusChoices.RETURNING,
)
OCCURRENCE_TERMINAL_STATES = (
    OccurrenceStatusChoices.DONE,
    OccurrenceStatusChoices.MISSED,
    OccurrenceStatusChoices.INCOMPLETE,
    OccurrenceStatusChoices.OVERRAN,
    OccurrenceStatusChoices.CANCELLED,
)


class WindowAuditActionChoices(models.TextChoices):
    CREATE = "window.create", "Create maintenance window"
    UPDATE = "window.update", "Change maintenance window"
    CANCEL = "window.cancel", "Cancel maintenance window"
    STEP = "window.step", "Maintenance window step"
    WARNING = "window.warning", "Maintenance window warning"
    FEED_TOKEN = "window.feed_token", "Calendar feed token"
    ZONE = "window.zone", "Own time zone"


class WindowJobKindChoices(models.TextChoices):
    STEP = "window.step", "Maintenance window step"
