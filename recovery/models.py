"""A recovery of the guests of a host that died, and one item per guest brought back elsewhere."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .choices import ITEM_ACTIVE, RECOVERY_ACTIVE, RecoveryItemStatusChoices, RecoveryStatusChoices


class HostRecovery(models.Model):
    """The parent record: which host, who confirmed it is off, the plan shown and what became of it."""

    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=RecoveryStatusChoices.choices,
                              default=RecoveryStatusChoices.CHECKING)
    # The words the admin confirmed, kept as shown (fencing is theirs).
    fencing_statement = models.TextField()
    destination = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Guests that could not be recovered: [{"uuid", "name", "reason"}], as the plan said.
    left = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    requested_by_label = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"recovery #{self.pk} of {self.host}"

    @property
    def is_terminal(self) -> bool:
        return self.status not in RECOVERY_ACTIVE

    def get_absolute_url(self) -> str:
        return reverse("recovery:detail", args=[self.pk])


class RecoveryItem(models.Model):
    """One guest defined and started on its destination: the lease owner while it runs."""

    recovery = models.ForeignKey(HostRecovery, on_delete=models.CASCADE, related_name="items")
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=255)
    destination = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    # The definition the inventory kept, copied when the recovery was asked (Fernet-encrypted).
    definition_encrypted = models.TextField()
    disks = models.JSONField(default=list, blank=True)  # writable file disks to check: [path]
    warnings = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=RecoveryItemStatusChoices.choices,
                              default=RecoveryItemStatusChoices.PENDING)
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    # The old host's copy, once the host answers again: its state then, and whether it was removed.
    stale_state = models.CharField(max_length=16, blank=True)
    stale_seen_at = models.DateTimeField(null=True, blank=True)
    stale_removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["recovery", "pk"]

    def __str__(self) -> str:
        return f"recovery of {self.vm_name} to {self.destination}"

    @property
    def is_terminal(self) -> bool:
        return self.status not in ITEM_ACTIVE

    def get_absolute_url(self) -> str:
        return reverse("recovery:detail", args=[self.recovery_id])
