"""Choice classes of migrations: statuses and their groups, preflight verdicts and run states,
job kinds, operator actions and audit actions. Code compares against these, never bare strings."""

from django.db import models

from .verdicts import VerdictStatus


class MigrationStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    MIGRATING = "migrating", "Migrating"
    COMPLETING = "completing", "Completing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"
    NEEDS_ATTENTION = "needs-attention", "Needs attention"


# One of these at a time per guest: the migration holds its guest's lease (hosts.leases) meanwhile.
MIGRATION_ACTIVE_STATES = (
    MigrationStatusChoices.QUEUED,
    MigrationStatusChoices.CHECKING,
    MigrationStatusChoices.MIGRATING,
    MigrationStatusChoices.COMPLETING,
)
# A worker (or a `vm_migrate --wait`) is working on it and keeps its heartbeat fresh.
MIGRATION_RUNNING_STATES = (
    MigrationStatusChoices.CHECKING,
    MigrationStatusChoices.MIGRATING,
    MigrationStatusChoices.COMPLETING,
)
MIGRATION_TERMINAL_STATES = (
    MigrationStatusChoices.SUCCEEDED,
    MigrationStatusChoices.FAILED,
    MigrationStatusChoices.ABORTED,
    MigrationStatusChoices.NEEDS_ATTENTION,
)


class FollowUpStatusChoices(models.TextChoices):
    """What follows a settled migration: the guest's own pause measured, both inventories refreshed."""

    NONE = "", "None"
    RUNNING = "running", "Measuring and refreshing"
    DONE = "done", "Done"
    FAILED = "failed", "Partly failed"


class SlotDirectionChoices(models.TextChoices):
    OUTGOING = "outgoing", "Outgoing"
    INCOMING = "incoming", "Incoming"


class PreflightRunStatusChoices(models.TextChoices):
    QUEUED = "queued", "Waiting"
    RUNNING = "running", "Checking"
    DONE = "done", "Checked"
    ERROR = "error", "Could not check"


PREFLIGHT_PENDING_STATES = (PreflightRunStatusChoices.QUEUED, PreflightRunStatusChoices.RUNNING)


class VerdictStatusChoices(models.TextChoices):
    """verdicts.VerdictStatus (the pure source, used by the checks) as model and form choices."""

    PASS = VerdictStatus.PASS.value, "Pass"
    WARN = VerdictStatus.WARN.value, "Warning"
    FAIL = VerdictStatus.FAIL.value, "Fail"


class MigrationActionChoices(models.TextChoices):
    """An operator's action on a migration page (the URL's ``action``)."""

    ABORT = "abort", "Abort"
    FORCE_COMPLETE = "force-complete", "Force complete"
    RECONCILE = "reconcile", "Reconcile"


class MigrationJobKindChoices(models.TextChoices):
    PREFLIGHT = "migration.preflight", "Migration preflight"
    RUN = "migration.run", "Migrate guest"
    RECONCILE = "migration.reconcile", "Reconcile migration"
    FOLLOW_UP = "migration.follow_up", "Figures after a migration"
    COLD_RUN = "migration.cold", "Cold-migrate guest"
    REPAIR_PERMISSIONS = "image.permissions", "Repair image permissions"


class ColdMigrationStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    COPYING = "copying", "Copying disks"
    DEFINING = "defining", "Moving the definition"
    STARTING = "starting", "Starting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed, guest left on its source"
    NEEDS_ATTENTION = "needs-attention", "Needs attention"


COLD_ACTIVE_STATES = (
    ColdMigrationStatusChoices.QUEUED,
    ColdMigrationStatusChoices.CHECKING,
    ColdMigrationStatusChoices.COPYING,
    ColdMigrationStatusChoices.DEFINING,
    ColdMigrationStatusChoices.STARTING,
)
COLD_RUNNING_STATES = COLD_ACTIVE_STATES[1:]
COLD_TERMINAL_STATES = (
    ColdMigrationStatusChoices.SUCCEEDED,
    ColdMigrationStatusChoices.FAILED,
    ColdMigrationStatusChoices.NEEDS_ATTENTION,
)


class MigrationAuditActionChoices(models.TextChoices):
    """Audit actions written by migrations (AuditEvent.action)."""

    PREFLIGHT = "migration.preflight", "Preflight requested"
    REQUEST = "migration.request", "Migration requested"
    START = "migration.start", "Migration started"
    TIMEOUT = "migration.timeout", "Completion timeout reached"
    ADAPTIVE = "migration.adaptive", "Adaptive convergence step"
    OUTCOME = "migration.outcome", "Migration ended"
    ABORT = "migration.abort", "Abort"
    FORCE_COMPLETE = "migration.force_complete", "Force complete"
    RECONCILE = "migration.reconcile", "Reconcile requested"
    RECONCILED = "migration.reconciled", "Migration reconciled"
    COLD_REQUEST = "migration.cold.request", "Cold migration requested"
    COLD_OUTCOME = "migration.cold.outcome", "Cold migration ended"
    COLD_RECONCILED = "migration.cold.reconciled", "Cold migration reconciled"
    IMAGE_PERMISSIONS = "image.permissions", "Image permissions set"
    COPY_KEY_AUTHORIZED = "image.copy_key.authorized", "One-time copy key authorized"
    COPY_KEY_REMOVED = "image.copy_key.removed", "One-time copy key removed"
    IMAGE_PERMISSIONS_REQUEST = "image.permissions.request", "Image permissions repair requested"
