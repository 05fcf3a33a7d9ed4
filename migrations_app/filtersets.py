"""The migrations list's filters (django-filter), in the query string: status, guest, host."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from core.filtersets import filtered
from core.ids import MAX_ID
from hosts.filtersets import IdFilter

from .choices import MigrationStatusChoices
from .models import Migration


class MigrationFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=MigrationStatusChoices.choices, label="Status", empty_label="Any")
    guest = django_filters.CharFilter(field_name="vm_name", lookup_expr="icontains", max_length=255, label="Guest")
    host = IdFilter(method="filter_host", min_value=1, max_value=MAX_ID, label="Host (from or to)",
                                       widget=forms.HiddenInput)

    class Meta:
        model = Migration
        fields: list[str] = []

    def filter_host(self, queryset: QuerySet, name: str, value) -> QuerySet:
        return queryset.filter(Q(source_id=int(value)) | Q(destination_id=int(value)))


def filtered_migrations(params) -> tuple[MigrationFilterSet, QuerySet]:
    return filtered(MigrationFilterSet, params)
