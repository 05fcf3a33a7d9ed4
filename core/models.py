"""Job (the truth about every background job) and AuditEvent (append-only trail)."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .choices import JOB_TERMINAL_STATES, AuditResultChoices, JobStatusChoices


class Job(models.Model):
    """One background job. The row, not RQ, is the source of truth for its state and log."""

    kind = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=16, choices=JobStatusChoices.choices, default=JobStatusChoices.QUEUED, db_index=True
    )
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    queue_name = models.CharField(max_length=32, default="default")
    rq_job_id = models.CharField(max_length=64, blank=True)
    timeout_s = models.PositiveIntegerField()
    progress = models.PositiveSmallIntegerField(null=True, blank=True)
    # [{"t": iso8601, "level": "info", "msg": "..."}]
    log = models.JSONField(default=list, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [models.Index(fields=["kind", "target_type", "target_id", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("core:job_detail", args=[self.pk])

    @property
    def is_terminal(self) -> bool:
        return self.status in JOB_TERMINAL_STATES

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        end = self.ended or timezone.now()
        return (end - self.started).total_seconds()


class AppendOnlyError(Exception):
    """Raised on any attempt to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")


class AuditEvent(models.Model):
    """Who did what to which object, with what outcome. Written once, never changed."""

    time = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Kept separately so the trail still reads right after a user is renamed.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    result = models.CharField(max_length=16, choices=AuditResultChoices.choices)
    message = models.TextField(blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-pk"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.result}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")
