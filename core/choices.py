"""Choice classes for jobs, audit results and roles."""

from django.db import models


class JobStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


JOB_ACTIVE_STATES = (JobStatusChoices.QUEUED, JobStatusChoices.RUNNING)
JOB_TERMINAL_STATES = (JobStatusChoices.SUCCEEDED, JobStatusChoices.FAILED, JobStatusChoices.ABORTED)


class JobLogLevelChoices(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class AuditResultChoices(models.TextChoices):
    OK = "ok", "OK"
    FAILED = "failed", "Failed"
    REFUSED = "refused", "Refused"


class AuditCheckpointKindChoices(models.TextChoices):
    PERIODIC = "periodic", "Periodic"
    EXPORT = "export", "Export"
    RETENTION = "retention", "Retention"
    MANUAL = "manual", "Manual"


class RoleChoices(models.TextChoices):
    """Roles are Django groups of these names; each role includes the ones below it."""

    VIEWER = "Viewer", "Viewer"
    OPERATOR = "Operator", "Operator"
    ADMIN = "Admin", "Admin"


# Lowest to highest: a user holding a role also holds every role before it.
ROLE_ORDER = (RoleChoices.VIEWER, RoleChoices.OPERATOR, RoleChoices.ADMIN)
