"""Choice classes of the inventory."""

from django.db import models


class HostAuthMethodChoices(models.TextChoices):
    PORTAL_KEY = "portal_key", "The portal's own key pair"
    PRIVATE_KEY = "private_key", "An uploaded private key"
    PASSWORD = "password", "A password"


class HostStatusChoices(models.TextChoices):
    PENDING_TRUST = "pending_trust", "Host key not trusted yet"
    UNKNOWN = "unknown", "Not contacted yet"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"
    KEY_MISMATCH = "key_mismatch", "Host key mismatch"


class HostLifecycleChoices(models.TextChoices):
    """Where a host is in its life in the inventory (hosts/lifecycle.py decides the moves)."""

    ACTIVE = "active", "In service"
    DECOMMISSIONED = "decommissioned", "Decommissioned"
    REMOVED = "removed", "Removed"


class HostChangeStatusChoices(models.TextChoices):
    """A change of how the portal reaches a host, checked before it is saved."""

    READING_KEY = "reading_key", "Reading the host key at the new address"
    AWAITING_CONFIRMATION = "awaiting_confirmation", "Waiting for the fingerprint to be confirmed"
    CHECKING = "checking", "Checking the connection"
    APPLIED = "applied", "Saved"
    FAILED = "failed", "Failed: nothing was changed"
    CANCELLED = "cancelled", "Cancelled"


HOST_CHANGE_OPEN_STATES = (
    HostChangeStatusChoices.READING_KEY,
    HostChangeStatusChoices.AWAITING_CONFIRMATION,
    HostChangeStatusChoices.CHECKING,
)


# Hosts the portal may connect to (it has a pinned host key that still matches).
HOST_CONNECTABLE_STATES = (HostStatusChoices.UNKNOWN, HostStatusChoices.REACHABLE, HostStatusChoices.UNREACHABLE)


class VMStateChoices(models.TextChoices):
    # The names the libvirt adapter reports (state_name()).
    NOSTATE = "nostate", "No state"
    RUNNING = "running", "Running"
    BLOCKED = "blocked", "Blocked"
    PAUSED = "paused", "Paused"
    SHUTDOWN = "shutdown", "Shutting down"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    PMSUSPENDED = "pmsuspended", "Suspended (power management)"


VM_ACTIVE_STATES = (
    VMStateChoices.RUNNING,
    VMStateChoices.BLOCKED,
    VMStateChoices.PAUSED,
    VMStateChoices.SHUTDOWN,
    VMStateChoices.PMSUSPENDED,
)


class VMActionChoices(models.TextChoices):
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    DESTROY = "destroy", "Force off"


class DiskStorageChoices(models.TextChoices):
    SHARED = "shared", "Shared"
    LOCAL = "local", "Local"
    NETWORK = "network", "Network"
    UNKNOWN = "unknown", "Unknown"


class HostJobKindChoices(models.TextChoices):
    FETCH_HOST_KEY = "host.fetch_key", "Fetch SSH host key"
    REFRESH = "host.refresh", "Refresh host inventory"
    CHANGE_READ_KEY = "host.change_read_key", "Read the host key for a connection change"
    CHANGE_CHECK = "host.change_check", "Check a connection change"
    VM_START = "vm.start", "Start guest"
    VM_SHUTDOWN = "vm.shutdown", "Shut down guest"
    VM_DESTROY = "vm.destroy", "Force off guest"


class GuestLeaseKindChoices(models.TextChoices):
    """What holds a guest's lease: every operation that changes a guest claims it first."""

    LIVE_MIGRATION = "live-migration", "Live migration"
    OFFLINE_MIGRATION = "offline-migration", "Offline migration"
    COLD_MIGRATION = "cold-migration", "Cold migration"
    POWER_ACTION = "power-action", "Power action"
    IMAGE_REPAIR = "image-repair", "Image permission repair"
    EVACUATION_STEP = "evacuation-step", "Evacuation step"
    SAVE = "save", "Save"
    RESTORE = "restore", "Restore"
    RECOVERY = "recovery", "Recovery from a dead host"
