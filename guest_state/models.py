"""Saved guest states (a file holding a guest's memory and devices) and the restores made of them."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .choices import (
    RESTORE_ACTIVE,
    SAVED_STATE_ACTIVE,
    SNAPSHOT_LIVE,
    RestoreStatusChoices,
    SavedStateStatusChoices,
    SnapshotStatusChoices,
)


class SavedState(models.Model):
    """One save: the file, where it is, what the guest was when saved (to judge a restore later)."""

    host_paths = ("host",)  # hosts.permissions: who may see it, act on it

    vm = models.ForeignKey("hosts.VirtualMachine", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=255)
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    share = models.ForeignKey("storage.Share", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    path = models.CharField(max_length=512)
    bypass_cache = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=SavedStateStatusChoices.choices,
                              default=SavedStateStatusChoices.SAVING)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    qemu_version = models.CharField(max_length=32, blank=True)
    machine_type = models.CharField(max_length=64, blank=True)
    # [{"path", "size", "mtime_ns"}] of each writable disk when saved (compat.DiskAtSave).
    disks = models.JSONField(default=list, blank=True)
    note = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(default=timezone.now)
    saved = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [
            # The list, newest first; the guest page's card, newest first; the sweep's active saves.
            models.Index(fields=["-created", "-id"], name="saved_state_newest"),
            models.Index(fields=["vm_uuid", "-created", "-id"], name="saved_state_guest_newest"),
            models.Index(fields=["status"], condition=models.Q(status__in=SAVED_STATE_ACTIVE),
                         name="saved_state_active"),
        ]

    def __str__(self) -> str:
        return f"saved state #{self.pk} of {self.vm_name}"

    @property
    def is_terminal(self) -> bool:
        return self.status not in SAVED_STATE_ACTIVE

    def get_absolute_url(self) -> str:
        return reverse("guest_state:detail", args=[self.pk])


class StateRestore(models.Model):
    """One restore of a saved state, on a host, running or paused."""

    host_paths = ("host", "state__host")  # hosts.permissions: who may see it, act on it

    state = models.ForeignKey(SavedState, on_delete=models.CASCADE, related_name="restores")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    paused = models.BooleanField(default=False)
    changed_disks_confirmed = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=RestoreStatusChoices.choices, default=RestoreStatusChoices.QUEUED)
    problems = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [
            # The sweep's active restores (guest_state.reconciler).
            models.Index(fields=["status"], condition=models.Q(status__in=RESTORE_ACTIVE), name="state_restore_active"),
        ]

    def __str__(self) -> str:
        return f"restore #{self.pk} of {self.state}"

    @property
    def is_terminal(self) -> bool:
        return self.status not in RESTORE_ACTIVE

    def get_absolute_url(self) -> str:
        return reverse("guest_state:detail", args=[self.state_id])


class GuestSnapshot(models.Model):
    """One libvirt snapshot of a guest: taken through the portal, or found in libvirt by a check.

    ``status`` follows libvirt's truth as last checked (``checked``): a snapshot deleted with
    virsh behind the portal's back becomes "missing"."""

    host_paths = ("host",)  # hosts.permissions: who may see it, act on it

    vm = models.ForeignKey("hosts.VirtualMachine", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=255)
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=255)  # libvirt's own name (the portal's are at most 64 safe characters)
    note = models.CharField(max_length=500, blank=True)  # the snapshot's description in libvirt too
    with_memory = models.BooleanField(default=False)
    kind = models.CharField(max_length=16, default="internal")  # internal, external, mixed (libvirt's)
    status = models.CharField(max_length=16, choices=SnapshotStatusChoices.choices,
                              default=SnapshotStatusChoices.TAKING)
    made_here = models.BooleanField(default=True)  # False: found in libvirt, taken outside the portal
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(default=timezone.now)
    taken = models.DateTimeField(null=True, blank=True)  # libvirt's creation time
    checked = models.DateTimeField(null=True, blank=True)  # last compared with libvirt's list
    reverted = models.DateTimeField(null=True, blank=True)
    revert_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["vm_uuid", "host", "name"], condition=models.Q(status__in=SNAPSHOT_LIVE),
                                    name="guest_snapshot_one_live_name"),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.name} of {self.vm_name}"

    @property
    def is_terminal(self) -> bool:
        return self.status != SnapshotStatusChoices.TAKING

    def get_absolute_url(self) -> str:
        return reverse("hosts:vm_detail", args=[self.host_id, self.vm_uuid]) + "#snapshots"
