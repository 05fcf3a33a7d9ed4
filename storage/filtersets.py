"""The shares list's filters and sort (django-filter): every one lives in the query string.

``q`` finds a share by its server's or a client's name, its export or its mount path; ``host``
keeps the shares a host serves or mounts; ``status`` one state; ``sort`` one column, either way
(status: problems first), then server and export path so pages stay stable. A parameter that does not validate selects
nothing and says why (hosts.filtersets.form_errors), never a 500.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Value, When

from core.ids import MAX_ID
from hosts.filtersets import IdFilter

from .choices import ShareStatusChoices
from .models import Share

SHARES_PER_PAGE = 50
SORT_KEYS = ("server", "export", "status", "verified")
# Share statuses in the order the list sorts them: what needs the admin first.
STATUS_ORDER = (ShareStatusChoices.FAILED, ShareStatusChoices.DEGRADED, ShareStatusChoices.CONFIGURING,
                ShareStatusChoices.NEW, ShareStatusChoices.READY)


class ShareOrderingFilter(django_filters.OrderingFilter):
    def filter(self, qs, value):
        if any(key.lstrip("-") == "status" for key in (value or [])):
            qs = qs.annotate(status_rank=Case(*(When(status=status, then=Value(rank))
                                                for rank, status in enumerate(STATUS_ORDER)),
                                              default=Value(len(STATUS_ORDER)), output_field=IntegerField()))
        return super().filter(qs, value)


class ShareFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_text", max_length=100, label="Host or path")
    status = django_filters.ChoiceFilter(choices=ShareStatusChoices.choices, label="Status", empty_label="Any")
    # Set by links (a host's page), not typed: an id means nothing to a person.
    host = IdFilter(method="filter_host", min_value=1, max_value=MAX_ID, label="Host", widget=forms.HiddenInput)
    sort = ShareOrderingFilter(
        fields=(("server__name", "server"), ("export_path", "export"), ("status_rank", "status"),
                ("last_verified", "verified")),
        label="Sort by",
    )

    class Meta:
        model = Share
        fields: list[str] = []

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        client = Share.clients.through.objects.filter(share=OuterRef("pk"), host__name__icontains=value)
        return queryset.filter(Q(server__name__icontains=value) | Q(export_path__icontains=value)
                               | Q(mount_path__icontains=value) | Exists(client))

    def filter_host(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        mounts = Share.clients.through.objects.filter(share=OuterRef("pk"), host_id=value)
        return queryset.filter(Q(server_id=value) | Exists(mounts))

    @property
    def qs(self):
        queryset = super().qs
        return queryset.order_by(*(queryset.query.order_by or ()), "server__name", "export_path", "pk")
