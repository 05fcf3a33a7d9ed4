"""Keyset pages of audit events, newest first (core/keyset.py over the event's time)."""

from __future__ import annotations

from django.db.models import QuerySet

from .keyset import PAGE_SIZE, KeysetPage, cursor_of, keyset_page, newer_q, older_q, parse_cursor

__all__ = ["PAGE_SIZE", "AuditPage", "audit_page", "cursor_of", "newer_q", "older_q", "parse_cursor"]


class AuditPage(KeysetPage):
    @property
    def events(self) -> list:
        return self.rows


def audit_page(queryset: QuerySet, *, older: str | None = None, newer: str | None = None,
               size: int = PAGE_SIZE) -> AuditPage:
    """One page of ``queryset`` (already filtered) by cursor; newest first either way."""
    page = keyset_page(queryset.select_related("job"), field="time", older=older, newer=newer, size=size)
    return AuditPage(page.rows, page.older, page.newer)
