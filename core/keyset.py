"""Keyset pages of a time-ordered list, newest first: "older" and "newer" by (time, id), never OFFSET.

A cursor is "<microseconds since the epoch>-<id>" of the row a page ends (older) or starts
(newer) at; each page is one indexed range read of size + 1 rows, as fast on the thousandth
page as on the first. Used by the audit trail, the jobs and the migrations lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.db.models import Q, QuerySet

PAGE_SIZE = 50
_CURSOR_RE = re.compile(r"^(\d{1,17})-(\d{1,19})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def cursor_of(row, field: str = "time") -> str:
    delta = getattr(row, field) - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}-{row.pk}"


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


def older_q(time: datetime, pk: int, field: str = "time") -> Q:
    # field <= t and not (field = t and id >= pk): the time index serves the range.
    return Q(**{f"{field}__lte": time}) & ~Q(**{field: time, "pk__gte": pk})


def newer_q(time: datetime, pk: int, field: str = "time") -> Q:
    return Q(**{f"{field}__gte": time}) & ~Q(**{field: time, "pk__lte": pk})


@dataclass
class KeysetPage:
    rows: list
    older: str | None  # cursor for the next older page, if there is one
    newer: str | None  # cursor for the next newer page, if there is one

    @property
    def is_first(self) -> bool:
        return self.newer is None


def keyset_page(queryset: QuerySet, *, field: str = "time", older: str | None = None, newer: str | None = None,
                size: int = PAGE_SIZE) -> KeysetPage:
    """One page of ``queryset`` (already filtered) by cursor; newest first either way."""
    after, before = parse_cursor(newer), parse_cursor(older)
    if after is not None:
        rows = list(queryset.filter(newer_q(*after, field)).order_by(field, "pk")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        has_older = bool(rows) and queryset.filter(older_q(getattr(rows[-1], field), rows[-1].pk, field)).exists()
        return KeysetPage(rows, cursor_of(rows[-1], field) if has_older else None,
                          cursor_of(rows[0], field) if rows and more_newer else None)
    if before is not None:
        queryset = queryset.filter(older_q(*before, field))
    rows = list(queryset.order_by(f"-{field}", "-pk")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    has_newer = before is not None and bool(rows)
    return KeysetPage(rows, cursor_of(rows[-1], field) if more_older else None,
                      cursor_of(rows[0], field) if has_newer else None)
