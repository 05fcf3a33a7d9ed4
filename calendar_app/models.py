"""Maintenance windows: when a host goes into maintenance by itself, and what each occurrence did."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from hosts.models import Host
from maintenance.models import Evacuation

from .choices import (
    OCCURRENCE_ACTIVE_STATES,
    OCCURRENCE_TERMINAL_STATES,
    OCCURRENCE_WAITING_STATES,
    OccurrenceStatusChoices,
    OnEndChoices,
    OnStartChoices,
)

TITLE_MAX = 120
RRULE_MAX = 300
NOTES_MAX = 4000


class MaintenanceWindow(models.Model):
    """A (possibly recurring) time when hosts go into maintenance; start/end are the first occurrence, in UTC."""

    host_paths = ("hosts",)  # hosts.permissions: who may see it, act on it

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # the iCalendar UID, never changes
    title = models.CharField(max_length=TITLE_MAX)
    hosts = models.ManyToManyField(Host, related_name="maintenance_windows")
    start = models.DateTimeField(db_index=True)
    end = models.DateTimeField()
    # The zone the window was entered in: recurrences are expanded there, so 02:00 stays 02:00 across DST.
    zone = models.CharField(max_length=64, default="UTC")
    rrule = models.CharField(max_length=RRULE_MAX, blank=True)  # iCalendar RRULE value, without "RRULE:"
    exdates = models.JSONField(default=list, blank=True)  # UTC ISO starts of occurrences left out
    cutoff_minutes = models.PositiveIntegerField(default=30)  # no evacuation starts later than this before the end
    on_start = models.CharField(max_length=16, choices=OnStartChoices.choices, default=OnStartChoices.EVACUATE)
    on_end = models.CharField(max_length=16, choices=OnEndChoices.choices, default=OnEndChoices.RETURN)
    notes = models.TextField(blank=True, max_length=NOTES_MAX)
    accepted_at_risk = models.BooleanField(default=False)  # created despite a capacity conflict, confirmed
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_by_label = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(default=timezone.now)
    sequence = models.PositiveIntegerField(default=0)  # iCalendar SEQUENCE: +1 on every change
    cancelled = models.BooleanField(default=False)

    class Meta:
        ordering = ["start", "pk"]

    def __str__(self) -> str:
        return f"{self.title} (window #{self.pk})"

    def get_absolute_url(self) -> str:
        return reverse("calendar_app:window_detail", args=[self.pk])

    @property
    def duration(self):
        return self.end - self.start


class WindowOccurrence(models.Model):
    """One occurrence of a window: its times and how far the automation got."""

    host_paths = ("window__hosts",)  # hosts.permissions: who may see it, act on it

    window = models.ForeignKey(MaintenanceWindow, on_delete=models.CASCADE, related_name="occurrences")
    start = models.DateTimeField(db_index=True)
    end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=OccurrenceStatusChoices.choices,
                              default=OccurrenceStatusChoices.SCHEDULED, db_index=True)
    # Steps done that do not change the status: each is set once, by a compare-and-set.
    checked = models.BooleanField(default=False)  # the dry run at T − lead ran
    cut_off = models.BooleanField(default=False)  # the cutoff paused a running evacuation
    warned_end_soon = models.BooleanField(default=False)
    warned_end = models.BooleanField(default=False)
    started_late = models.BooleanField(default=False)
    at_risk = models.BooleanField(default=False)
    overran = models.BooleanField(default=False)
    warnings = models.JSONField(default=list, blank=True)  # [{"at": iso, "kind": str, "message": str}]
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True)
    step_claimed_at = models.DateTimeField(null=True, blank=True)  # when the running step was claimed

    class Meta:
        ordering = ["start", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["window", "start"], name="calendar_one_occurrence_per_start"),
        ]

    def __str__(self) -> str:
        return f"{self.window.title} at {self.start:%Y-%m-%d %H:%M} UTC"

    def get_absolute_url(self) -> str:
        return self.window.get_absolute_url()

    @property
    def is_terminal(self) -> bool:
        return self.status in OCCURRENCE_TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        return self.status in OCCURRENCE_ACTIVE_STATES

    @property
    def is_waiting(self) -> bool:
        return self.status in OCCURRENCE_WAITING_STATES

    @property
    def duration(self):
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None

    @property
    def overrun(self):
        """How long the work ran past the window's end (None when it did not)."""
        if self.ended_at and self.ended_at > self.end:
            return self.ended_at - self.end
        return None


class OccurrenceHostRun(models.Model):
    """One host of an occurrence: its evacuation and its return run."""

    occurrence = models.ForeignKey(WindowOccurrence, on_delete=models.CASCADE, related_name="runs")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    evacuation = models.ForeignKey(Evacuation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    return_run = models.ForeignKey(Evacuation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    exited = models.BooleanField(default=False)
    note = models.TextField(blank=True)  # why nothing ran for this host, when nothing did

    class Meta:
        ordering = ["occurrence", "host__name"]
        constraints = [
            models.UniqueConstraint(fields=["occurrence", "host"], name="calendar_one_run_per_host"),
        ]


class CalendarFeedToken(models.Model):
    """A user's secret for the iCal feed: shown once, stored as its SHA-256, revocable."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_tokens")
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    revoked = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"calendar feed token #{self.pk} of {self.user}"


class CalendarPreference(models.Model):
    """The zone a person sees and enters times in (the portal's TIME_ZONE when they chose none)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_preference")
    zone = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.user}: {self.zone}"
