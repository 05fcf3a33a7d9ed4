"""Migrations: what the wizard checked (plans and their preflights), the migrations themselves,
their progress samples, and the per-host slots that bound how many run at once."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.models import Job
from hosts.models import Host, VirtualMachine

from .choices import (
    COLD_ACTIVE_STATES,
    COLD_TERMINAL_STATES,
    MIGRATION_ACTIVE_STATES,
    MIGRATION_TERMINAL_STATES,
    ColdMigrationStatusChoices,
    FollowUpStatusChoices,
    MigrationStatusChoices,
    PreflightRunStatusChoices,
    SlotDirectionChoices,
    VerdictStatusChoices,
)


class MigrationPlan(models.Model):
    """One pass of the wizard: a guest, a set of options, and a preflight per candidate host."""

    host_paths = ("source",)  # hosts.permissions: who may see it, act on it

    # The inventory row may move or vanish when the guest migrates; the UUID and name stay.
    vm = models.ForeignKey(VirtualMachine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=255)
    source = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    options = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"plan #{self.pk} for {self.vm_name}"


class PreflightRun(models.Model):
    """The preflight of one destination in a plan, run by a background job."""

    host_paths = ("plan__source", "destination")  # hosts.permissions: who may see it, act on it

    plan = models.ForeignKey(MigrationPlan, on_delete=models.CASCADE, related_name="runs")
    destination = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=16, choices=PreflightRunStatusChoices.choices, default=PreflightRunStatusChoices.QUEUED
    )
    overall = models.CharField(max_length=8, choices=VerdictStatusChoices.choices, blank=True)
    # [{"check": "cpu", "status": "pass", "reason": "...", "fix": "..."}]
    verdicts = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)
    # Free memory the destination reported, for ranking candidates.
    memory_free_kib = models.PositiveBigIntegerField(null=True, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    checked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["plan", "destination__name"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "destination"], name="migrations_preflight_plan_destination_unique")
        ]

    def __str__(self) -> str:
        return f"preflight of {self.plan_id} to {self.destination_id}"

    @property
    def is_pending(self) -> bool:
        return self.status in (PreflightRunStatusChoices.QUEUED, PreflightRunStatusChoices.RUNNING)

    @property
    def problems(self) -> list[dict]:
        return [v for v in self.verdicts if v.get("status") != VerdictStatusChoices.PASS]


class Migration(models.Model):
    """One migration of one guest, from request to its true outcome. The source of truth."""

    host_paths = ("source", "destination")  # hosts.permissions: who may see it, act on it

    vm = models.ForeignKey(VirtualMachine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm_uuid = models.UUIDField(db_index=True)
    vm_name = models.CharField(max_length=255)
    source = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="outgoing_migrations")
    destination = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="incoming_migrations")
    options = models.JSONField()
    plan = models.ForeignKey(MigrationPlan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set on "migrate back": the migration this one reverses.
    reverses = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    status = models.CharField(
        max_length=16, choices=MigrationStatusChoices.choices, default=MigrationStatusChoices.QUEUED, db_index=True
    )
    phase = models.CharField(max_length=255, blank=True)
    # False when the requester runs it itself (`vm_migrate --wait`): the dispatcher leaves it alone.
    run_by_worker = models.BooleanField(default=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)  # checking began
    migration_started = models.DateTimeField(null=True, blank=True)  # checks passed, libvirt about to be asked
    libvirt_called = models.DateTimeField(null=True, blank=True)  # the moment libvirt's migrate call was made
    ended = models.DateTimeField(null=True, blank=True)
    # Refreshed by whoever runs it; a stale heartbeat in a running state means its worker died.
    heartbeat = models.DateTimeField(null=True, blank=True)

    abort_requested = models.DateTimeField(null=True, blank=True)
    # Each "Force complete" press adds one; the runner acts on every new one.
    force_complete_requests = models.PositiveSmallIntegerField(default=0)
    convergence_warning = models.TextField(blank=True)

    # [{"check", "status", "reason", "fix"}] from the check right before migrating.
    verdicts = models.JSONField(default=list, blank=True)

    # Results. Times in ms, sizes in bytes; None = not known.
    total_time_ms = models.PositiveBigIntegerField(null=True, blank=True)
    downtime_ms = models.PositiveBigIntegerField(null=True, blank=True)
    setup_time_ms = models.PositiveBigIntegerField(null=True, blank=True)
    data_transferred_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    heartbeat_gap_s = models.FloatField(null=True, blank=True)
    heartbeat_continuous = models.BooleanField(null=True, blank=True)
    heartbeat_beats = models.PositiveIntegerField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    outcome = models.TextField(blank=True)  # where the guest was found, in words
    error = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)
    repair = models.TextField(blank=True)
    # After a success is recorded: the guest's own pause is measured and both inventories refreshed.
    follow_up = models.CharField(max_length=16, choices=FollowUpStatusChoices.choices, blank=True,
                                 default=FollowUpStatusChoices.NONE)
    follow_up_note = models.TextField(blank=True)  # what of the follow-up failed, in words

    class Meta:
        ordering = ["-created", "-pk"]
        # The migrations list filtered by status, newest first (its host filter uses the two
        # foreign keys' own indexes, its keyset pages the one on created).
        indexes = [models.Index(fields=["status", "-created", "-id"], name="migrations_status_created")]

    def __str__(self) -> str:
        return f"migration #{self.pk} of {self.vm_name}"

    def get_absolute_url(self) -> str:
        return reverse("migrations_app:migration_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in MIGRATION_ACTIVE_STATES

    @property
    def is_terminal(self) -> bool:
        return self.status in MIGRATION_TERMINAL_STATES

    @property
    def is_live(self) -> bool:
        return bool(self.options.get("live", True))

    @property
    def duration_s(self) -> float | None:
        if self.total_time_ms is not None:
            return self.total_time_ms / 1000
        if self.started is None:
            return None
        return ((self.ended or timezone.now()) - self.started).total_seconds()


class PreflightFacts(models.Model):
    """The facts of the last full gather for one guest between two hosts, and when they were gathered.

    Written by every full gather (the wizard's preflight, an evacuation plan, a run's gather, a
    runner's own); read by the runner, which re-checks only what can change when they are fresh
    (recheck.py). A failed migration forgets its pair's facts, so the next one gathers in full.
    """

    vm_uuid = models.UUIDField()
    source = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    # Whether disk sizes and the destination's room were measured (live copy-storage).
    copy_storage = models.BooleanField(default=False)
    gathered = models.DateTimeField()
    # Set when gathered once for a whole run of moves (an evacuation, its return): fresh until then.
    fresh_until = models.DateTimeField(null=True, blank=True)
    facts = models.JSONField()  # facts.facts_to_dict(pair, guest)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["vm_uuid", "source", "destination", "copy_storage"],
                                    name="migrations_preflight_facts_unique")
        ]

    def __str__(self) -> str:
        return f"facts of {self.vm_uuid} from {self.source_id} to {self.destination_id}"


class MigrationSample(models.Model):
    """One poll of the running job (libvirt's job stats, numbers only), for the chart."""

    migration = models.ForeignKey(Migration, on_delete=models.CASCADE, related_name="samples")
    elapsed_ms = models.PositiveIntegerField()  # since libvirt was asked to migrate
    stats = models.JSONField()

    class Meta:
        ordering = ["migration", "elapsed_ms", "pk"]
        indexes = [models.Index(fields=["migration", "elapsed_ms"])]

    def __str__(self) -> str:
        return f"sample of {self.migration_id} at {self.elapsed_ms} ms"


class MigrationSlot(models.Model):
    """A place in a host's outgoing or incoming limit, held by one migration while it runs.

    The unique constraints make claiming safe with any number of workers: a slot index can
    be inserted once per host and direction, and a migration holds one slot per direction.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    direction = models.CharField(max_length=8, choices=SlotDirectionChoices.choices)
    index = models.PositiveSmallIntegerField()
    migration = models.ForeignKey(Migration, on_delete=models.CASCADE, related_name="slots")
    claimed = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "direction", "index"], name="migrations_slot_unique"),
            models.UniqueConstraint(fields=["migration", "direction"], name="migrations_slot_one_per_direction"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} slot {self.index} of host {self.host_id}"


class ColdMigration(models.Model):
    """One cold move of a shut-off guest: its disks copied, its definition moved. The source of truth.

    ``destination`` equal to ``source`` means "move this guest's disks onto shared storage".
    The original XML is kept here until the end, so an interrupted move can always be undone.
    """

    host_paths = ("source", "destination")  # hosts.permissions: who may see it, act on it

    vm = models.ForeignKey(VirtualMachine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    vm_uuid = models.UUIDField(db_index=True)
    vm_name = models.CharField(max_length=255)
    source = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="outgoing_cold_migrations")
    destination = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="incoming_cold_migrations")
    # The shared storage the disks go onto; None = the destination's own storage, same directories.
    share = models.ForeignKey("storage.Share", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    start = models.BooleanField(default=False)  # start the guest at its destination afterwards
    keep_source = models.BooleanField(default=False)  # keep the original disk files after success
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    run_by_worker = models.BooleanField(default=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    status = models.CharField(
        max_length=16, choices=ColdMigrationStatusChoices.choices, default=ColdMigrationStatusChoices.QUEUED,
        db_index=True,
    )
    phase = models.CharField(max_length=255, blank=True)
    verdicts = models.JSONField(default=list, blank=True)
    # [cold.FileMove.to_json() + {"size", "copied_bytes", "sha256", "verified", "perm"}]
    files = models.JSONField(default=list, blank=True)
    bytes_total = models.PositiveBigIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    original_xml = models.TextField(blank=True)
    new_xml = models.TextField(blank=True)
    # How far it got, for rollback and for the reconciler: "copied", "defined", "undefined", "started".
    reached = models.JSONField(default=list, blank=True)

    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    copy_seconds = models.FloatField(null=True, blank=True)
    total_seconds = models.FloatField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    outcome = models.TextField(blank=True)  # where the guest is defined now, in words
    error = models.TextField(blank=True)
    error_hint = models.TextField(blank=True)
    rollback = models.JSONField(default=list, blank=True)  # what was undone, step by step
    # The one-time key a direct host-to-host copy placed (direct_copy.Grant.to_json()) until it is removed again:
    # whoever finds it set on an orphaned record (the reconciler) removes it.
    copy_grant = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"cold migration #{self.pk} of {self.vm_name}"

    def get_absolute_url(self) -> str:
        return reverse("migrations_app:cold_detail", args=[self.pk])

    @property
    def same_host(self) -> bool:
        return self.source_id == self.destination_id

    @property
    def is_active(self) -> bool:
        return self.status in COLD_ACTIVE_STATES

    @property
    def is_terminal(self) -> bool:
        return self.status in COLD_TERMINAL_STATES

    @property
    def percent(self) -> int:
        if self.status == ColdMigrationStatusChoices.SUCCEEDED:
            return 100
        if not self.bytes_total:
            return 0
        return min(100, int(self.bytes_done * 100 / self.bytes_total))
