"""Job (the truth about every background job) and AuditEvent (append-only trail)."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .choices import JOB_TERMINAL_STATES, AuditCheckpointKindChoices, AuditResultChoices, JobStatusChoices


class Job(models.Model):
    """One background job. The row, not RQ, is the source of truth for its state and log."""

    kind = models.CharField(max_length=64)
    # A variant of the kind the job was asked as, when it does less than the kind's whole work
    # (e.g. "routine": a periodic refresh that may keep facts read recently); "" for the whole.
    variant = models.CharField(max_length=32, blank=True)
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
        indexes = [
            models.Index(fields=["kind", "target_type", "target_id", "status"]),
            # An object's page lists its jobs newest first (host, guest, migration pages).
            models.Index(fields=["target_type", "target_id", "-created"], name="core_job_target_created"),
            # The jobs page filtered by status, newest first.
            models.Index(fields=["status", "-created", "-id"], name="core_job_status_created"),
            # ... by kind, and by a target's id or name without its type (JobFilterSet.target).
            models.Index(fields=["kind", "-created", "-id"], name="core_job_kind_created"),
            models.Index(fields=["target_id", "-created"], name="core_job_tid_created"),
            models.Index(fields=["target_label", "-created"], name="core_job_tlabel_created"),
        ]

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
    """Raised on any attempt to change or delete an audit event other than through the chain."""


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses every write path but an insert through core.audit_chain (which chains the row)."""

    refusal = "Audit events are append-only"

    def _refuse(self, *args, **kwargs):
        raise AppendOnlyError(f"{self.refusal}: they are written once, through core.audit, and never changed "
                              f"(old events go only through manage.py audit_retention).")

    update = _update = delete = _raw_delete = bulk_create = bulk_update = update_or_create = _refuse


class AuditEventQuerySet(AppendOnlyQuerySet):
    pass


class AuditEvent(models.Model):
    """Who did what to which object, with what outcome. Written once, never changed.

    Each event carries the hash of the event before it (in id order) and its own SHA-256 over a
    canonical serialisation of its fields (core.audit_chain), so a changed, removed, inserted or
    reordered event breaks the chain that `manage.py audit_verify` walks.
    """

    time = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Kept separately so the trail still reads right after a user is renamed.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    # The action's first dotted part ("migration" of "migration.start"): the "migration.*" filter.
    action_family = models.CharField(max_length=64, blank=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    result = models.CharField(max_length=16, choices=AuditResultChoices.choices)
    message = models.TextField(blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events")
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-pk"]
        # Each serves one filter of the audit page, newest first: equality, then time order.
        indexes = [
            models.Index(fields=["time", "id"], name="core_audit_time_id"),
            models.Index(fields=["action", "time"], name="core_audit_action_time"),
            models.Index(fields=["action_family", "time"], name="core_audit_family_time"),
            models.Index(fields=["actor_label", "time"], name="core_audit_actor_time"),
            models.Index(fields=["target_type", "target_id", "time"], name="core_audit_target_time"),
            models.Index(fields=["target_type", "target_label", "time"], name="core_audit_tlabel_time"),
            # "Target name or id" without a target type: id or name alone (an OR of the two).
            # SQLite skip-scans the two type-first indexes above for it; PostgreSQL does not,
            # and read the time index backwards (174 ms at 200,000 events for no match; 0.1 ms).
            models.Index(fields=["target_id", "time"], name="core_audit_tid_only_time"),
            models.Index(fields=["target_label", "time"], name="core_audit_tlabel_only_time"),
            models.Index(fields=["result", "time"], name="core_audit_result_time"),
            models.Index(fields=["source_ip", "time"], name="core_audit_ip_time"),
            models.Index(fields=["request_id"], name="core_audit_request"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.result}"

    def get_absolute_url(self) -> str:
        return reverse("core:audit_event", args=[self.pk])

    def save(self, *args, **kwargs):
        # Only a new row without a primary key is inserted: a new instance given an existing
        # pk would otherwise UPDATE that event, and force_update/update_fields always would.
        if (not self._state.adding or self.pk is not None or kwargs.get("force_update")
                or kwargs.get("update_fields") is not None):
            raise AppendOnlyError("Audit events are append-only: they cannot be updated.")
        if not self.hash:
            raise AppendOnlyError("Audit events are written through core.audit.audit_record() (it chains them).")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted (see manage.py audit_retention).")


class AuditCheckpointQuerySet(AppendOnlyQuerySet):
    refusal = "Audit checkpoints are append-only"


class AuditCheckpoint(models.Model):
    """The chain's head at one moment, signed with the audit key (HMAC-SHA256).

    Someone who rewrites events and recomputes every hash after them still cannot make the
    event at ``event_id`` carry ``event_hash`` again without the key. A retention checkpoint
    names the last event removed: the first event kept must link to it.
    """

    time = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16, choices=AuditCheckpointKindChoices.choices)
    event_id = models.BigIntegerField(null=True, blank=True)
    event_hash = models.CharField(max_length=64, blank=True)
    signature = models.CharField(max_length=64)

    objects = AuditCheckpointQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"checkpoint #{self.pk} ({self.kind}) at event #{self.event_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding or self.pk is not None or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise AppendOnlyError("Audit checkpoints cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit checkpoints cannot be deleted.")


class AuditChainLock(models.Model):
    """One row, locked (SELECT ... FOR UPDATE) by every writer of the chain on PostgreSQL.

    SQLite needs no row lock: the portal's IMMEDIATE transactions take the database's write
    lock when they begin, so one writer at a time reads the head and appends after it.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)


class AuditDeletePermit(models.Model):
    """Written and removed inside the retention command's transaction: the database trigger
    lets DELETE through only for events with an id up to ``up_to_id`` while this row exists."""

    up_to_id = models.BigIntegerField()


class UserInvitation(models.Model):
    """A one-time link that lets a person set their password: an invitation or a reset.

    Only the SHA-256 of the token is stored; the link is shown once to the admin who made it.
    """

    class Kind(models.TextChoices):
        INVITE = "invite", "Invitation"
        RESET = "reset", "Password reset"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_by_label = models.CharField(max_length=150)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display().lower()} for {self.user}"
