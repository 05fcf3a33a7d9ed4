"""Walking the audit chain: the first break and what kind it is, in constant memory.

Events are read in id order, a chunk at a time. Each event's hash is recomputed and its
prev_hash compared with the hash of the event before it. Kinds of break:

- ``changed``: an event's fields no longer give its hash;
- ``inserted``: an event that does not belong (the next event links past it);
- ``deleted``: an event links to one that is no longer there;
- ``reordered``: an event links to one stored after it.

Then every checkpoint's signature is checked and the event it names must still carry the
hash it signed (a rewrite that recomputed all hashes is caught here), including the
checkpoints in the file outside the database when settings name one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils.dateparse import parse_datetime

from django.db.models import TextField
from django.db.models.functions import Cast

from .audit_chain import (GENESIS_HASH, HASHED_FIELDS, UtcIso, checkpoint_signature_ok, retention_anchor,
                          stored_row_hash)
from .models import AuditCheckpoint, AuditEvent

CHUNK = 5000
# pk, hash, then HASHED_FIELDS in order, with the time and the parameters as the database's text.
_AS_TEXT = {"time": "time_iso", "parameters": "parameters_text"}
_COLUMNS = ("pk", "hash", *(_AS_TEXT.get(name, name) for name in HASHED_FIELDS))


@dataclass
class ChainBreak:
    kind: str  # changed | inserted | deleted | reordered | checkpoint
    event_id: int | None
    message: str


@dataclass
class VerifyReport:
    ok: bool
    events: int = 0
    checkpoints: int = 0
    first_id: int | None = None
    last_id: int | None = None
    breaks: list[ChainBreak] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None


def _rows():
    events = AuditEvent.objects.annotate(time_iso=UtcIso("time"), parameters_text=Cast("parameters", TextField()))
    last = 0
    while True:
        chunk = list(events.filter(pk__gt=last).order_by("pk").values_list(*_COLUMNS)[:CHUNK])
        if not chunk:
            return
        yield from chunk
        last = chunk[-1][0]


def _link_break(row, prev_id: int | None) -> ChainBreak:
    """Why row's prev_hash is not its predecessor's hash (one lookup, only on a break)."""
    pk, prev_hash = row[0], row[-1]
    linked = AuditEvent.objects.filter(hash=prev_hash).values_list("pk", flat=True).first()
    if linked is None:
        return ChainBreak("deleted", pk, f"Event #{pk} follows an event that is gone: events are missing between "
                                         f"#{prev_id or '(start)'} and #{pk}.")
    if linked > pk:
        return ChainBreak("reordered", pk, f"Event #{pk} links to event #{linked}, stored after it: the events "
                                           f"were reordered.")
    return ChainBreak("inserted", prev_id, f"Event #{prev_id} does not belong: event #{pk} links past it to "
                                           f"#{linked}, so it was inserted.")


def _walk(report: VerifyReport, progress: Callable[[int], None] | None, total: int) -> None:
    anchor = retention_anchor()
    expected_prev = anchor.event_hash if anchor else GENESIS_HASH
    prev_id: int | None = anchor.event_id if anchor else None
    pending_changed = None  # a row whose own hash failed: inserted or changed, the next row tells
    for row in _rows():
        report.events += 1
        if report.first_id is None:
            report.first_id = row[0]
        report.last_id = row[0]
        if progress and report.events % 20000 == 0 and total:
            progress(min(99, report.events * 90 // total))
        if pending_changed is not None:
            bad, before_hash = pending_changed
            kind = "inserted" if row[-1] == before_hash else "changed"
            word = "does not belong (the next event links past it)" if kind == "inserted" else "no longer matches its hash"
            report.breaks.append(ChainBreak(kind, bad, f"Event #{bad} {word}."))
            return
        stored_hash = row[1]
        if stored_row_hash(row[2:]) != stored_hash:
            pending_changed = (row[0], expected_prev)
            continue
        if row[-1] != expected_prev:
            report.breaks.append(_link_break(row, prev_id))
            return
        expected_prev, prev_id = stored_hash, row[0]
    if pending_changed is not None:
        report.breaks.append(ChainBreak("changed", pending_changed[0],
                                        f"Event #{pending_changed[0]} no longer matches its hash."))


def _check_checkpoint(report: VerifyReport, *, label: str, event_id: int | None, event_hash_: str,
                      signed: bool, floor: int | None) -> bool:
    if not signed:
        report.breaks.append(ChainBreak("checkpoint", event_id, f"{label} has a bad signature: it was forged or "
                                                                f"changed."))
        return False
    if event_id is None or (floor is not None and event_id <= floor):
        return True  # an empty chain, or events removed by the retention command since
    stored = AuditEvent.objects.filter(pk=event_id).values_list("hash", flat=True).first()
    if stored is None:
        report.breaks.append(ChainBreak("deleted", event_id, f"Event #{event_id}, signed by {label}, is gone."))
        return False
    if stored != event_hash_:
        report.breaks.append(ChainBreak("changed", event_id, f"Event #{event_id} no longer has the hash {label} "
                                                             f"signed: the events were rewritten and rehashed."))
        return False
    return True


def _check_checkpoints(report: VerifyReport) -> None:
    anchor = retention_anchor()
    floor = anchor.event_id if anchor else None
    for cp in AuditCheckpoint.objects.order_by("pk").iterator(chunk_size=1000):
        report.checkpoints += 1
        if not _check_checkpoint(report, label=f"checkpoint #{cp.pk}", event_id=cp.event_id,
                                 event_hash_=cp.event_hash, signed=checkpoint_signature_ok(cp), floor=floor):
            return
    path = getattr(settings, "VMPORTAL_AUDIT_CHECKPOINT_FILE", "")
    if not path or not Path(path).exists():
        return
    with Path(path).open() as handle:
        for number, line in enumerate(handle, 1):
            try:
                data = json.loads(line)
                cp = AuditCheckpoint(time=parse_datetime(data["time"]), kind=data["kind"], event_id=data["event_id"],
                                     event_hash=data["event_hash"], signature=data["signature"])
            except (ValueError, KeyError, TypeError):
                report.breaks.append(ChainBreak("checkpoint", None, f"Line {number} of {path} is not a checkpoint."))
                return
            report.checkpoints += 1
            if not _check_checkpoint(report, label=f"file checkpoint (line {number})", event_id=cp.event_id,
                                     event_hash_=cp.event_hash, signed=checkpoint_signature_ok(cp), floor=floor):
                return


def verify_chain(*, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Walk the whole chain and every checkpoint; the report names the first break, if any."""
    report = VerifyReport(ok=True)
    total = AuditEvent.objects.count() if progress else 0
    _walk(report, progress, total)
    if not report.breaks:
        _check_checkpoints(report)
    report.ok = not report.breaks
    if progress:
        progress(100)
    return report
