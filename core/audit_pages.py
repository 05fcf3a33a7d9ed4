"""Keyset pages of audit events, newest first: "older" and "newer" by (time, id), never OFFSET.

A cursor is "<microseconds since the epoch>-<id>" of the row a page ends (older) or starts
(newer) at; each page is one indexed range read of PAGE_SIZE + 1 rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.db.models import Q, QuerySet

PAGE_SIZE = 50
_CURSOR_RE = re.compile(r"^(\d{1,17})-(\d{1,19})$")


def cursor_of(event) -> str:
    delta = event.time - datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}-{event.pk}"


def parse_cursor(value: str | None) -> tuple[datetime, int] | None:
    """(time, id) of a cursor; None for no cursor or one that is not ours (the first page)."""
    match = _CURSOR_RE.match(value or "")
    if not match:
        return None
    micros, pk = int(match.group(1)), int(match.group(2))
    try:
        time = datetime.fromtimestamp(micros // 1_000_000, tz=dt_timezone.utc).replace(microsecond=micros % 1_000_000)
    except (OverflowError, OSError, ValueError):
        return None
    return time, pk


def older_q(time: datetime, pk: int) -> Q:
    # time <= t and not (time = t and id >= pk): the time index serves the range.
    return Q(time__lte=time) & ~Q(time=time, pk__gte=pk)


def newer_q(time: datetime, pk: int) -> Q:
    return Q(time__gte=time) & ~Q(time=time, pk__lte=pk)


@dataclass
class AuditPage:
    events: list
    older: str | None  # cursor for the next older page, if there is one
    newer: str | None  # cursor for the next newer page, if there is one

    @property
    def is_first(self) -> bool:
        return self.newer is None


def audit_page(queryset: QuerySet, *, older: str | None = None, newer: str | None = None,
               size: int = PAGE_SIZE) -> AuditPage:
    """One page of ``queryset`` (already filtered) by cursor; newest first either way."""
    queryset = queryset.select_related("job")
    after, before = parse_cursor(newer), parse_cursor(older)
    if after is not None:
        rows = list(queryset.filter(newer_q(*after)).order_by("time", "pk")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        has_older = bool(rows) and queryset.filter(older_q(rows[-1].time, rows[-1].pk)).exists()
        return AuditPage(rows, cursor_of(rows[-1]) if has_older else None,
                         cursor_of(rows[0]) if rows and more_newer else None)
    if before is not None:
        queryset = queryset.filter(older_q(*before))
    rows = list(queryset.order_by("-time", "-pk")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    has_newer = before is not None and bool(rows)
    return AuditPage(rows, cursor_of(rows[-1]) if more_older else None,
                     cursor_of(rows[0]) if has_newer else None)
