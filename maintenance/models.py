"""Evacuations: a host's guests moved away for maintenance (or brought home), item by item."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from core.models import Job
from hosts.models import Host
from migrations_app.models import Migration

from .choices import (
    EVACUATION_ACTIVE_STATES,
    EVACUATION_TERMINAL_STATES,
    EvacuationKindChoices,
    EvacuationStatusChoices,
    ItemActionChoices,
    ItemStatusChoices,
    StrategyChoices,
)

MAX_CONCURRENCY = 8


class Evacuation(models.Model):
    """One run of the rolling queue over a host: empty it (enter) or bring its guests home (return)."""

    host_paths = ("host", "items__origin", "items__destination")  # hosts.permissions: who may see it, act on it

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="evacuations")
    kind = models.CharField(max_length=16, choices=EvacuationKindChoices.choices, default=EvacuationKindChoices.ENTER)
    # A return run points to the evacuation whose guests it brings home.
    returns = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="return_runs")
    status = models.CharField(
        max_length=16, choices=EvacuationStatusChoices.choices, default=EvacuationStatusChoices.RUNNING
    )
    concurrency = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(MAX_CONCURRENCY)]
    )
    strategy = models.CharField(max_length=16, choices=StrategyChoices.choices, default=StrategyChoices.SPREAD)
    copy_storage = models.BooleanField(default=False)  # local disks are copied during live migration
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_label = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    ended = models.DateTimeField(null=True, blank=True)
    estimated_s = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.TextField(blank=True)  # one line: what ran where, what still runs on the host and why
    # The one check of the hosts for the whole run (maintenance.facts): moves wait while it runs.
    facts_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created", "-pk"]
        constraints = [
            # Two evacuations of one host at once: the database lets exactly one through.
            models.UniqueConstraint(
                fields=["host"], condition=Q(status__in=EVACUATION_ACTIVE_STATES), name="maintenance_one_active_per_host"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} of {self.host.name}"

    def get_absolute_url(self) -> str:
        return reverse("maintenance:evacuation_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in EVACUATION_ACTIVE_STATES

    @property
    def is_terminal(self) -> bool:
        return self.status in EVACUATION_TERMINAL_STATES


class EvacuationItem(models.Model):
    """One guest of an evacuation: where it goes, how, and what happened."""

    evacuation = models.ForeignKey(Evacuation, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()  # the order items start in
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=255)
    vm_state = models.CharField(max_length=16, blank=True)  # at planning time
    memory_kib = models.PositiveBigIntegerField(default=0)
    action = models.CharField(max_length=16, choices=ItemActionChoices.choices)
    origin = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="+")  # where it was when planned
    destination = models.ForeignKey(Host, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=ItemStatusChoices.choices, default=ItemStatusChoices.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    migration = models.ForeignKey(Migration, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")  # power action
    overridden = models.BooleanField(default=False)  # the admin chose the destination
    blocked = models.BooleanField(default=False)  # the plan found no way to move it (reason/remedy say why)
    tried = models.JSONField(default=list, blank=True)  # hosts an attempt failed on
    estimated_s = models.PositiveIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)  # why it did not move, or what happened on a retry
    remedy = models.TextField(blank=True)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["evacuation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["evacuation", "vm_uuid"], name="maintenance_item_one_per_guest"),
        ]
        indexes = [models.Index(fields=["migration"], name="maintenance_item_migration_idx")]

    def __str__(self) -> str:
        return f"{self.vm_name} in {self.evacuation}"
