"""Shared storage in the inventory: NFS shares and each attempt at setting one up."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import Job
from hosts.models import Host

from .choices import NfsVersionChoices, ServerImplChoices, SetupStatusChoices, ShareStatusChoices
from .validation import DEFAULT_OPTIONS


class Share(models.Model):
    """An NFS export on one host, mounted at the same path on its client hosts."""

    host_paths = ("server", "clients")  # hosts.permissions: who may see it, act on it

    server = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="nfs_exports")
    clients = models.ManyToManyField(Host, related_name="nfs_mounts")
    export_path = models.CharField(max_length=200)
    mount_path = models.CharField(max_length=200)
    # Who may mount, as entered ("" = exactly the clients); see validation.parse_export_to.
    export_to = models.CharField(max_length=500, blank=True)
    options = models.CharField(max_length=200, default=DEFAULT_OPTIONS)
    nfs_version = models.CharField(max_length=8, choices=NfsVersionChoices.choices, default=NfsVersionChoices.V4_1)
    # What the admin asked for ("" = detect); the setup's summary says what was used.
    server_impl = models.CharField(max_length=16, choices=ServerImplChoices.choices, blank=True)
    # Set when an admin confirmed a risky choice (no_root_squash, '*').
    risks_confirmed = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ShareStatusChoices.choices, default=ShareStatusChoices.NEW)
    last_verified = models.DateTimeField(null=True, blank=True)
    # The last proof: one row per host (storage.proof.grid).
    last_grid = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["server__name", "export_path"]
        constraints = [models.UniqueConstraint(fields=["server", "export_path"], name="storage_share_server_export_unique")]

    def __str__(self) -> str:
        return f"{self.server.name}:{self.export_path}"

    def path_seen_by(self, host: Host) -> str | None:
        """Where ``host`` sees the share's files: the export on the server, the mount on a client."""
        if host.pk == self.server_id:
            return self.export_path
        if self.clients.filter(pk=host.pk).exists():
            return self.mount_path
        return None


class ShareSetup(models.Model):
    """One attempt: read the hosts, plan (shown as the dry run), then apply that same plan."""

    host_paths = ("share__server", "share__clients")  # hosts.permissions: who may see it, act on it

    share = models.ForeignKey(Share, on_delete=models.CASCADE, related_name="setups")
    status = models.CharField(max_length=16, choices=SetupStatusChoices.choices, default=SetupStatusChoices.DETECTING)
    # Names the backups and the proof markers; part of the plan, so the dry run is what runs.
    stamp = models.CharField(max_length=32)
    token = models.CharField(max_length=32)
    facts = models.JSONField(default=dict, blank=True)  # host name → storage.facts.HostFacts
    plan = models.JSONField(default=dict, blank=True)  # storage.steps.plan_to_json
    plan_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    apply_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # step key → storage.runner.StepOutcome JSON, filled in as the steps run.
    outcomes = models.JSONField(default=dict, blank=True)
    proof = models.JSONField(default=dict, blank=True)  # proof step key → outcome JSON
    grid = models.JSONField(default=list, blank=True)
    failed_step = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    applied_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"setup #{self.pk} of {self.share}"
