"""Choice classes of migrations: statuses and their groups, preflight run states, job kinds."""

from django.db import models


class MigrationStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    MIGRATING = "migrating", "Migrating"
    COMPLETING = "completing", "Completing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"
    NEEDS_ATTENTION = "needs-attention", "Needs attention"


# One of these at a time per guest (a database constraint enforces it).
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
    PASS = "pass", "Pass"
    WARN = "warn", "Warning"
    FAIL = "fail", "Fail"


class MigrationJobKindChoices(models.TextChoices):
    PREFLIGHT = "migration.preflight", "Migration preflight"
    RUN = "migration.run", "Migrate guest"
    RECONCILE = "migration.reconcile", "Reconcile migration"
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
