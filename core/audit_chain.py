"""The audit trail's hash chain: canonical form, appending under one lock, signed checkpoints.

Every event stores ``prev_hash`` (the hash of the event before it, in id order) and ``hash``
(SHA-256 over its canonical serialisation, prev_hash included). Writers are serialised so the
chain never forks: on PostgreSQL by locking the one AuditChainLock row (held until the
caller's transaction ends), on SQLite by the write lock its IMMEDIATE transactions take.
Checkpoints sign the head with the audit key (settings.VMPORTAL_AUDIT_KEY, kept apart from
SECRET_KEY and the secrets key), so recomputing every hash after a rewrite is still caught.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Func, TextField
from django.utils import timezone

from .choices import AuditCheckpointKindChoices
from .models import AuditChainLock, AuditCheckpoint, AuditEvent

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# The fields a hash covers, in the order the verifier reads them from the database.
HASHED_FIELDS = (
    "time", "actor_id", "actor_label", "action", "action_family", "target_type", "target_id",
    "target_label", "parameters", "result", "message", "source_ip", "request_id", "job_id", "prev_hash",
)


def action_family(action: str) -> str:
    """"migration" for "migration.start": what the "migration.*" filter selects on."""
    return action.split(".", 1)[0]


def _utc_iso(value: datetime) -> str:
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(values: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers: its HASHED_FIELDS as sorted, compact JSON (UTF-8).

    The time is a datetime, or already the text ``_utc_iso`` makes of it (see UtcIso).
    """
    doc = {name: values[name] for name in HASHED_FIELDS}
    if not isinstance(doc["time"], str):
        doc["time"] = _utc_iso(doc["time"])
    doc["v"] = 1
    return _dumps(doc)


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _dumps(doc: dict[str, Any]) -> bytes:
    return _CANONICAL_JSON.encode(doc).encode()


def event_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(values)).hexdigest()


def stored_row_hash(row: tuple) -> str:
    """The hash of an event read as HASHED_FIELDS in order, time as UtcIso text, parameters as JSON text.

    The verifier's path: the database formats the time and hands the parameters over as the
    text it stores, which costs a fraction of turning each into Python objects and back.
    """
    doc = dict(zip(HASHED_FIELDS, row))
    time = doc["time"]
    if len(time) == 20:  # SQLite leaves out the fraction of a whole second
        doc["time"] = time[:-1] + ".000000Z"
    params = doc["parameters"]
    doc["parameters"] = None if params is None else json.loads(params)
    doc["v"] = 1
    return hashlib.sha256(_dumps(doc)).hexdigest()


class UtcIso(Func):
    """A timestamp as ISO-8601 UTC text, formatted by the database (no per-row conversion)."""

    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        # Django stores UTC as "YYYY-MM-DD HH:MM:SS[.ffffff]".
        return self.as_sql(compiler, connection, template="(replace(%(expressions)s, ' ', 'T') || 'Z')", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template=(
            "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"), **extra)

    def as_sql(self, compiler, connection, **extra):
        if connection.vendor not in ("sqlite", "postgresql") and "template" not in extra:
            raise NotImplementedError("UtcIso supports SQLite and PostgreSQL.")
        return super().as_sql(compiler, connection, **extra)


def hashed_values(event: AuditEvent) -> dict[str, Any]:
    """An unsaved event's hashed fields, as the database will give them back."""
    ip_field = AuditEvent._meta.get_field("source_ip")
    return {
        "time": event.time, "actor_id": event.actor_id, "actor_label": event.actor_label,
        "action": event.action, "action_family": event.action_family, "target_type": event.target_type,
        "target_id": event.target_id, "target_label": event.target_label,
        # Through JSON once, as the database stores it (tuples become lists, keys strings).
        "parameters": json.loads(json.dumps(event.parameters)), "result": str(event.result),
        "message": event.message, "source_ip": ip_field.get_prep_value(event.source_ip) or None,
        "request_id": event.request_id, "job_id": event.job_id, "prev_hash": event.prev_hash,
    }


def lock_chain() -> None:
    """Take the chain's write lock for the rest of the current transaction."""
    if connection.features.has_select_for_update:
        if not AuditChainLock.objects.select_for_update().filter(pk=1).exists():
            # Migration 0004 creates the row; a flushed database (tests) has lost it.
            AuditChainLock.objects.get_or_create(pk=1)
            AuditChainLock.objects.select_for_update().get(pk=1)
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.


def retention_anchor() -> AuditCheckpoint | None:
    """The newest retention checkpoint: the first event kept links to its event_hash."""
    return AuditCheckpoint.objects.filter(kind=AuditCheckpointKindChoices.RETENTION).order_by("-pk").first()


def head() -> tuple[int | None, str]:
    """(id, hash) of the newest event; with none left, the last removed one's or the genesis."""
    row = AuditEvent.objects.order_by("-pk").values_list("pk", "hash").first()
    if row is not None:
        return row
    anchor = retention_anchor()
    return (anchor.event_id, anchor.event_hash) if anchor else (None, GENESIS_HASH)


def append(event: AuditEvent) -> AuditEvent:
    """Chain and insert an unsaved event; the caller's transaction holds the lock till it ends."""
    with transaction.atomic():
        lock_chain()
        event.action_family = action_family(event.action)
        event.prev_hash = head()[1]
        event.hash = event_hash(hashed_values(event))
        event.save()
    return event


_BULK_COLUMNS = ("time", "actor_id", "actor_label", "action", "action_family", "target_type", "target_id",
                 "target_label", "parameters", "result", "message", "source_ip", "request_id", "job_id",
                 "prev_hash", "hash")


def append_many(rows: list[dict[str, Any]]) -> None:
    """Chain and insert many events given as field values (bulk loads: the scale benchmark).

    Each dict holds the HASHED_FIELDS but action_family and prev_hash, as the database gives
    them back (UTC time, JSON-ready parameters, a normalised IP). Model instances and the ORM's
    bulk insert (which the model refuses anyway) would cost more per row than the hashing.
    """
    ops = connection.ops
    table = ops.quote_name(AuditEvent._meta.db_table)
    sql = (f"INSERT INTO {table} ({', '.join(ops.quote_name(c) for c in _BULK_COLUMNS)}) "
           f"VALUES ({', '.join(['%s'] * len(_BULK_COLUMNS))})")
    with transaction.atomic():
        lock_chain()
        prev = head()[1]
        params = []
        for values in rows:
            values = {**values, "action_family": action_family(values["action"]), "prev_hash": prev}
            prev = event_hash(values)
            params.append((ops.adapt_datetimefield_value(values["time"]), values["actor_id"], values["actor_label"],
                           values["action"], values["action_family"], values["target_type"], values["target_id"],
                           values["target_label"], json.dumps(values["parameters"]), values["result"],
                           values["message"], values["source_ip"], values["request_id"], values["job_id"],
                           values["prev_hash"], prev))
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


# --- checkpoints -------------------------------------------------------------------------

def checkpoint_message(*, time: datetime, kind: str, event_id: int | None, event_hash_: str) -> bytes:
    return f"vmportal-audit-checkpoint-v1\n{_utc_iso(time)}\n{kind}\n{event_id or 0}\n{event_hash_}".encode()


def sign(message: bytes) -> str:
    return hmac.new(settings.VMPORTAL_AUDIT_KEY.encode(), message, hashlib.sha256).hexdigest()


def checkpoint_signature_ok(cp: AuditCheckpoint) -> bool:
    expected = sign(checkpoint_message(time=cp.time, kind=cp.kind, event_id=cp.event_id, event_hash_=cp.event_hash))
    return hmac.compare_digest(expected, cp.signature)


def _write_checkpoint_file(cp: AuditCheckpoint) -> None:
    path = getattr(settings, "VMPORTAL_AUDIT_CHECKPOINT_FILE", "")
    if not path:
        return
    line = json.dumps({"id": cp.pk, "time": _utc_iso(cp.time), "kind": cp.kind, "event_id": cp.event_id,
                       "event_hash": cp.event_hash, "signature": cp.signature})
    # Written when the checkpoint commits, so the file never names a head that was rolled back.
    def write() -> None:
        try:
            with Path(path).open("a") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            logger.error("audit checkpoint #%s not written to %s: %s", cp.pk, path, exc)
    transaction.on_commit(write)


def checkpoint_insert(*, kind: str, event_id: int | None, event_hash_: str) -> AuditCheckpoint:
    """Sign (event_id, event_hash_) into a checkpoint; the caller holds the chain lock."""
    now = timezone.now()
    cp = AuditCheckpoint(time=now, kind=kind, event_id=event_id, event_hash=event_hash_,
                         signature=sign(checkpoint_message(time=now, kind=kind, event_id=event_id, event_hash_=event_hash_)))
    cp.save()
    _write_checkpoint_file(cp)
    return cp


def checkpoint_write(*, kind: str = AuditCheckpointKindChoices.MANUAL) -> AuditCheckpoint:
    """Sign the chain's current head into a checkpoint (and the checkpoint file, if set)."""
    with transaction.atomic():
        lock_chain()
        event_id, hash_ = head()
        return checkpoint_insert(kind=kind, event_id=event_id, event_hash_=hash_)


def checkpoint_if_due(*, now: datetime | None = None) -> AuditCheckpoint | None:
    """A periodic checkpoint when the head moved and the last one is older than N minutes."""
    now = now or timezone.now()
    last = AuditCheckpoint.objects.order_by("-pk").first()
    if last is not None and now - last.time < timedelta(minutes=settings.VMPORTAL_AUDIT_CHECKPOINT_MINUTES):
        return None
    event_id, _ = head()
    if event_id is None or (last is not None and last.event_id == event_id):
        return None
    return checkpoint_write(kind=AuditCheckpointKindChoices.PERIODIC)
