"""Exporting what an audit filter selects: CSV or JSON Lines, streamed a chunk at a time.

Rows come newest first, in keyset chunks of CHUNK (never OFFSET, never the whole result in
memory), with ISO-8601 UTC times; CSV starts with a header row. ``export_lines`` is the one
generator the web download and `manage.py audit_export` share; ``aexport_lines`` is the same
for an ASGI server (which would otherwise buffer a synchronous iterator whole).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Case, F, Q, QuerySet, TextField, Value, When
from django.db.models.functions import Cast, Concat

from .actors import Actor
from .audit import audit_record
from .audit_chain import UtcIso, checkpoint_insert, head, lock_chain
from .choices import AuditCheckpointKindChoices, AuditResultChoices
from .models import AuditEvent

CHUNK = 2000
FORMATS = ("csv", "jsonl")
COLUMNS = ("id", "time", "actor", "action", "target_type", "target_id", "target_label", "result", "message",
           "source_ip", "request_id", "job_id", "parameters", "prev_hash", "hash")
_JSONL_COLUMNS = tuple(c for c in COLUMNS if c != "parameters")
_DB_COLUMNS = ("pk", "time_iso", "actor_label", "action", "target_type", "target_id", "target_label", "result",
               "message", "source_ip", "request_id", "job_id", "parameters_json", "prev_hash", "hash")
# Free text that outsiders can put in (a user name tried at login, a guest's name, a message
# quoting either): in CSV a cell starting with one of these is prefixed with ' so a spreadsheet
# shows it instead of running it as a formula (OWASP "CSV injection"). JSON Lines stay exact.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SPREADSHEET_SAFE = ("actor_label", "target_label", "message")
_CSV_DB_COLUMNS = tuple(f"safe_{c}" if c in _SPREADSHEET_SAFE else c for c in _DB_COLUMNS)


def _spreadsheet_safe(column: str) -> Case:
    starts = Q()
    for start in FORMULA_STARTS:
        starts |= Q(**{f"{column}__startswith": start})
    return Case(When(starts, then=Concat(Value("'"), F(column))), default=F(column), output_field=TextField())


_ANNOTATIONS = {
    "time_iso": lambda: UtcIso("time"),
    "parameters_json": lambda: Cast("parameters", TextField()),
    **{f"safe_{c}": (lambda c=c: _spreadsheet_safe(c)) for c in _SPREADSHEET_SAFE},
}


def _chunk(queryset: QuerySet, after: tuple | None, columns: tuple[str, ...]) -> tuple[list[tuple], tuple | None]:
    """The next CHUNK rows (already formatted as text by the database) and the cursor after them."""
    if after is not None:
        time, pk = after
        queryset = queryset.filter(Q(time__lte=time) & ~Q(time=time, pk__gte=pk))
    # Time and parameters as text from the database: converting them per row in Python would
    # cost more than the rest of the row.
    annotations = {name: make() for name, make in _ANNOTATIONS.items() if name in columns}
    rows = list(queryset.annotate(**annotations).order_by("-time", "-pk").values_list(*columns)[:CHUNK])
    if not rows:
        return rows, None
    last_time = AuditEvent.objects.filter(pk=rows[-1][0]).values_list("time", flat=True).get()
    return rows, (last_time, rows[-1][0])


class _Formatter:
    def __init__(self, fmt: str):
        if fmt not in FORMATS:
            raise ValueError(f"Export format is one of {', '.join(FORMATS)}.")
        self.fmt = fmt
        self.columns = _CSV_DB_COLUMNS if fmt == "csv" else _DB_COLUMNS
        self._buffer = io.StringIO()
        # RFC 4180 line ends; with "\n" alone, a field holding a bare "\r" would go out unquoted.
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")

    def header(self) -> str:
        if self.fmt != "csv":
            return ""
        self._csv.writerow(COLUMNS)
        return self._take()

    def rows(self, rows: list[tuple]) -> str:
        if self.fmt == "csv":
            self._csv.writerows(rows)
            return self._take()
        # The parameters go in as the JSON text they are stored as (last, so the rest is one dumps).
        return "".join(json.dumps(dict(zip(_JSONL_COLUMNS, (*row[:12], row[13], row[14]))))[:-1]
                       + ', "parameters": ' + (row[12] or "{}") + "}\n" for row in rows)

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


def export_lines(queryset: QuerySet, fmt: str) -> Iterator[str]:
    """The export of ``queryset`` (already filtered) as text pieces, a chunk of rows each."""
    formatter = _Formatter(fmt)
    head = formatter.header()
    if head:
        yield head
    after = None
    while True:
        rows, after = _chunk(queryset, after, formatter.columns)
        if not rows:
            return
        yield formatter.rows(rows)


async def aexport_lines(queryset: QuerySet, fmt: str) -> AsyncIterator[str]:
    formatter = _Formatter(fmt)
    head = formatter.header()
    if head:
        yield head
    after = None
    fetch = sync_to_async(_chunk, thread_sensitive=True)
    while True:
        rows, after = await fetch(queryset, after, formatter.columns)
        if not rows:
            return
        yield formatter.rows(rows)


def audit_export_start(*, queryset: QuerySet, filters: dict, fmt: str, actor: Actor) -> QuerySet:
    """Record an export (what filter, which format) and sign the chain's head for it.

    Returns ``queryset`` cut at that head: the export holds what the filter selected when it
    began (not its own audit event, nor what arrives while it streams), and the checkpoint
    signs its newest possible row.
    """
    with transaction.atomic():
        lock_chain()
        event_id, hash_ = head()
        checkpoint_insert(kind=AuditCheckpointKindChoices.EXPORT, event_id=event_id, event_hash_=hash_)
        audit_record(actor=actor, action="audit.export", result=AuditResultChoices.OK,
                     parameters={"format": fmt, "filters": filters, "up_to_id": event_id},
                     message=f"Exported the audit trail as {fmt}" + (" (filtered)." if filters else "."))
    return queryset.filter(pk__lte=event_id) if event_id is not None else queryset.none()
