"""The audit page's and the jobs page's filters (django-filter): every one lives in the query string.

Each filter is written so an index in AuditEvent.Meta serves it, newest first: exact matches
on one column, the action family on its own column, time as a range.
"""

from __future__ import annotations

import re
from datetime import timedelta

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone

from .actors import CLI_PREFIX
from .choices import AuditResultChoices, JobStatusChoices
from .models import AuditEvent, Job

PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
PERIOD_CHOICES = [("1h", "Last hour"), ("24h", "Last day"), ("7d", "Last 7 days")]
SOURCE_CHOICES = [("web", "Web (a request)"), ("job", "Job"), ("cli", "Command line"), ("system", "System")]
# A panel's object and its children; more would make a URL no browser keeps.
MAX_TARGETS = 200
_TARGET_RE = re.compile(r"^[a-z0-9_]{1,32}:[A-Za-z0-9_.:-]{1,64}$")
_ACTION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(\.\*|\*)?$")


class IpFilter(django_filters.Filter):
    field_class = forms.GenericIPAddressField


def parse_targets(value: str) -> list[tuple[str, str]]:
    pairs = [part.strip() for part in value.split(",") if part.strip()]
    if len(pairs) > MAX_TARGETS or not all(_TARGET_RE.match(p) for p in pairs):
        raise forms.ValidationError(f"Give up to {MAX_TARGETS} targets as type:id, separated by commas.")
    return [tuple(p.split(":", 1)) for p in pairs]


def targets_q(pairs) -> Q:
    q = Q(pk__in=[])
    for target_type, target_id in pairs:
        q |= Q(target_type=target_type, target_id=str(target_id))
    return q


class TargetsField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if value:
            parse_targets(value)
        return value


class ActionField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if value and not _ACTION_RE.match(value):
            raise forms.ValidationError("An action is letters, digits, dots, dashes and underscores, "
                                        "optionally ending in .* for its family (migration.*).")
        return value


class ActionFilter(django_filters.CharFilter):
    field_class = ActionField


class TargetsFilter(django_filters.CharFilter):
    field_class = TargetsField


class AuditEventFilterSet(django_filters.FilterSet):
    period = django_filters.ChoiceFilter(choices=PERIOD_CHOICES, method="filter_period", label="Time",
                                         empty_label="Any time")
    since = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte", label="From (UTC)")
    until = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt", label="To (UTC)")
    actor = django_filters.CharFilter(field_name="actor_label", max_length=150, label="Actor")
    action = ActionFilter(method="filter_action", max_length=66, label="Action",
                          help_text="exact, or a family: migration.*")
    target_type = django_filters.CharFilter(field_name="target_type", max_length=32, label="Target type")
    target = django_filters.CharFilter(method="filter_target", max_length=255, label="Target name or id")
    # Set by an object's Audit panel (the object and its children), not typed by hand.
    targets = TargetsFilter(method="filter_targets", max_length=20000, label="Objects", widget=forms.HiddenInput)
    result = django_filters.ChoiceFilter(choices=AuditResultChoices.choices, label="Result", empty_label="Any")
    source = django_filters.ChoiceFilter(choices=SOURCE_CHOICES, method="filter_source", label="Source",
                                         empty_label="Any")
    ip = IpFilter(field_name="source_ip", label="Source IP")
    job = django_filters.NumberFilter(field_name="job_id", min_value=1, label="Job")
    request = django_filters.CharFilter(field_name="request_id", max_length=64, label="Request id")
    q = django_filters.CharFilter(method="filter_text", max_length=200, label="Text in message")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_period(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(time__gte=timezone.now() - PERIODS[value])

    def filter_action(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if not value.endswith("*"):
            return queryset.filter(action=value)
        prefix = value.rstrip("*").rstrip(".")
        if "." not in prefix:
            return queryset.filter(action_family=prefix)
        # A deeper family ("migration.live.*") as a range, which the action index serves.
        return queryset.filter(action__gte=prefix + ".", action__lt=prefix + "/")

    def filter_target(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(target_id=value) | Q(target_label=value))

    def filter_targets(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(targets_q(parse_targets(value)))

    def filter_source(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value == "web":
            return queryset.exclude(request_id="")
        if value == "job":
            return queryset.filter(job__isnull=False)
        if value == "cli":
            return queryset.filter(actor_label__startswith=CLI_PREFIX)
        return queryset.filter(request_id="", job__isnull=True).exclude(actor_label__startswith=CLI_PREFIX)

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(message__icontains=value)


def filtered(filterset_class, params) -> tuple[django_filters.FilterSet, QuerySet]:
    """The filter set of this class for these query parameters and what it selects from all
    of its model's rows (nothing when a parameter is invalid)."""
    model = filterset_class._meta.model
    filterset = filterset_class(params, queryset=model.objects.all())
    if not filterset.is_valid():
        return filterset, model.objects.none()
    return filterset, filterset.qs


def filtered_events(params) -> tuple[AuditEventFilterSet, QuerySet]:
    return filtered(AuditEventFilterSet, params)


class JobFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatusChoices.choices, label="Status", empty_label="Any")
    kind = django_filters.CharFilter(field_name="kind", max_length=64, label="Kind")
    target_type = django_filters.CharFilter(field_name="target_type", max_length=32, label="Target type")
    target = django_filters.CharFilter(method="filter_target", max_length=255, label="Target name or id")

    class Meta:
        model = Job
        fields: list[str] = []

    # Jobs name their target as audit events do.
    filter_target = AuditEventFilterSet.filter_target


def filtered_jobs(params) -> tuple[JobFilterSet, QuerySet]:
    return filtered(JobFilterSet, params)
