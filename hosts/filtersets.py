"""The inventory's filters (django-filter): every one lives in the query string.

Two sets over the same parameters: ``HostFilterSet`` picks the hosts (host, tag, status,
maintenance), sorted by ``hsort``, and ``GuestFilterSet`` the guests of those hosts (text,
state, local disks), sorted by ``sort``. A filter that does not validate selects nothing and
says why (never a 500).
"""

from __future__ import annotations

import re

import django_filters
from django import forms
from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from core.ids import MAX_ID

from .choices import DiskStorageChoices, HostStatusChoices, VMStateChoices
from .models import Host, VirtualDisk, VirtualMachine

YES_NO = [("yes", "Yes"), ("no", "No")]
# Guests per page the table offers; anything else is the default.
PAGE_SIZES = (25, 50, 100, 200)
GUESTS_PER_PAGE = 50
HOSTS_PER_PAGE = 25


class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField  # a whole number: "1.5" is a form error, not host 1


# Host statuses in the order the table sorts them: what needs the admin first.
HOST_STATUS_ORDER = (HostStatusChoices.KEY_MISMATCH, HostStatusChoices.UNREACHABLE, HostStatusChoices.PENDING_TRUST,
                     HostStatusChoices.UNKNOWN, HostStatusChoices.REACHABLE)


def guest_count() -> Coalesce:
    """A host's number of guests, as a correlated count (one indexed read per host of the page)."""
    counts = (VirtualMachine.objects.filter(host=OuterRef("pk")).order_by().values("host")
              .annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


class HostOrderingFilter(django_filters.OrderingFilter):
    """``hsort``: name, status, memory (in use: total minus free) or guests; ``-`` first for
    descending. Only the columns sorted by are computed."""

    ANNOTATIONS = {
        "memory_used": lambda: Coalesce(F("facts__memory_total_kib") - F("facts__memory_free_kib"), Value(0)),
        "guest_count": guest_count,
        "status_rank": lambda: Case(*(When(status=status, then=Value(rank))
                                      for rank, status in enumerate(HOST_STATUS_ORDER)),
                                    default=Value(len(HOST_STATUS_ORDER)), output_field=IntegerField()),
    }

    def filter(self, qs, value):
        wanted = {self.get_ordering_value(key).lstrip("-") for key in (value or []) if key.lstrip("-")}
        qs = qs.annotate(**{name: make() for name, make in self.ANNOTATIONS.items() if name in wanted})
        return super().filter(qs, value)


class HostFilterSet(django_filters.FilterSet):
    host = IdFilter(field_name="pk", min_value=1, max_value=MAX_ID, label="Host",
                                       widget=forms.HiddenInput)
    tag = django_filters.CharFilter(method="filter_tag", max_length=64, label="Host tag")
    status = django_filters.ChoiceFilter(choices=HostStatusChoices.choices, label="Host status", empty_label="Any")
    maintenance = django_filters.ChoiceFilter(choices=YES_NO, method="filter_maintenance", label="In maintenance",
                                              empty_label="Either")
    hsort = HostOrderingFilter(
        fields=(("name", "name"), ("status_rank", "status"), ("memory_used", "memory"), ("guest_count", "guests")),
        label="Sort hosts by",
    )

    class Meta:
        model = Host
        fields: list[str] = []

    @property
    def qs(self):
        queryset = super().qs
        # A stable order for pages: the chosen column first, then name and id (names are unique
        # among hosts in service, not among removed ones).
        return queryset.order_by(*(queryset.query.order_by or ()), "name", "pk")

    def filter_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # Tags are a JSON list, which SQLite cannot search by element; the hosts are few
        # (hundreds), so their tags are read once and matched here.
        wanted = value.strip().lower()
        ids = [pk for pk, tags in queryset.values_list("pk", "tags")
               if any(str(tag).lower() == wanted for tag in (tags or []))]
        return queryset.filter(pk__in=ids)

    def filter_maintenance(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(in_maintenance=value == "yes")


UUID_PREFIX = re.compile(r"[0-9a-fA-F-]+")


class GuestFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_text", max_length=100, label="Guest name or UUID")
    state = django_filters.ChoiceFilter(choices=VMStateChoices.choices, label="State", empty_label="Any")
    local_disks = django_filters.ChoiceFilter(choices=YES_NO, method="filter_local_disks", label="Local disks",
                                              empty_label="Either")
    sort = django_filters.OrderingFilter(
        fields=(("name", "name"), ("state", "state"), ("host__name", "host"), ("vcpus", "vcpus"),
                ("memory_kib", "memory")),
        label="Sort by",
    )

    class Meta:
        model = VirtualMachine
        fields: list[str] = []

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        text = Q(name__icontains=value)
        # A UUID's beginning only when the text could be one: hex digits and dashes. A name
        # search then compares one column per row, not two.
        if UUID_PREFIX.fullmatch(value):
            text |= Q(uuid__istartswith=value.lower())
        return queryset.filter(text)

    def filter_local_disks(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        local = Exists(VirtualDisk.objects.filter(vm=OuterRef("pk"), storage=DiskStorageChoices.LOCAL))
        return queryset.filter(local) if value == "yes" else queryset.exclude(local)

    @property
    def qs(self):
        queryset = super().qs
        # A stable order for pages: the chosen column first, then name, host and id.
        ordering = list(queryset.query.order_by) or []
        return queryset.order_by(*ordering, "name", "host__name", "pk")


def form_errors(*filtersets) -> list[str]:
    """'Field: what is wrong' for each invalid parameter, to show above the empty table."""
    messages = []
    for filterset in filtersets:
        for field, errors in filterset.errors.items():
            label = filterset.form.fields[field].label if field in filterset.form.fields else field
            messages.append(f"{label}: {' '.join(errors)}")
    return messages
