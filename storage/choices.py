"""Choice classes of shared storage: share and setup states, NFS versions, server kinds."""

from django.db import models


class ShareStatusChoices(models.TextChoices):
    NEW = "new", "Not set up yet"
    CONFIGURING = "configuring", "Being set up"
    READY = "ready", "Ready"
    FAILED = "failed", "Setup failed"
    DEGRADED = "degraded", "Check failed"


class SetupStatusChoices(models.TextChoices):
    DETECTING = "detecting", "Reading the hosts"
    PLANNED = "planned", "Plan ready"
    BLOCKED = "blocked", "Plan blocked"
    DETECT_FAILED = "detect_failed", "Could not read the hosts"
    APPLYING = "applying", "Applying"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


SETUP_ACTIVE_STATES = (SetupStatusChoices.DETECTING, SetupStatusChoices.APPLYING)


class NfsVersionChoices(models.TextChoices):
    V3 = "3", "NFSv3"
    V4 = "4", "NFSv4"
    V4_1 = "4.1", "NFSv4.1"
    V4_2 = "4.2", "NFSv4.2"


class ServerImplChoices(models.TextChoices):
    AUTO = "", "Detect"
    KERNEL = "kernel", "Kernel NFS server (nfs-utils / nfs-kernel-server)"
    GANESHA = "ganesha", "NFS-Ganesha"


class StepStateChoices(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    ALREADY_DONE = "already_done", "Already done"
    CHANGED = "changed", "Done"
    FAILED = "failed", "Failed"


class StorageJobKindChoices(models.TextChoices):
    PLAN = "share.plan", "Plan NFS share"
    APPLY = "share.apply", "Set up NFS share"
    VERIFY = "share.verify", "Verify NFS share"
