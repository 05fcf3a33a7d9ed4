"""The set-based statements that keep load points: one upsert per table per refresh, the roll-up in aggregates.

A refresh writes a host's point and all its guests' points each in one ``INSERT … ON CONFLICT
DO UPDATE`` (SQLite ≥ 3.24 and PostgreSQL speak the same form; on SQLite the rows are a VALUES
list, on PostgreSQL one array per column through ``unnest``): a bucket that has a point
already keeps the sample-weighted average of both, computed by the database, so no row is read
first. The retention roll-up groups a step's old points into the next step's buckets in one
aggregate query, upserts the results the same way and deletes the old points in one statement.

The averaging is ``hosts.load.merge`` in SQL: each value weighted by the samples of the side
that knows it, an unknown (NULL) side ignored, KiB rounded to whole numbers and uses to 3 places.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timezone as dt_timezone

from django.db import connection
from django.db.models import Case, F, FloatField, Sum, When
from django.db.models.functions import Trunc

# Rows per INSERT on SQLite: well under its 32,766 bound variables at 7 columns.
CHUNK_ROWS = 500
TRUNC_KINDS = {3600: "hour", 86400: "day"}  # buckets the roll-up can aggregate into (aligned on UTC)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _merge_sql(table: str, field: str, *, integer: bool, nullable: bool) -> str:
    """``field`` of the kept row merged with the incoming (``excluded``) one, as a SQL expression."""
    kept, new = f"{table}.{_q(field)}", f"excluded.{_q(field)}"
    ks, ns = f"{table}.{_q('samples')}", f"excluded.{_q('samples')}"
    # * 1.0: SQLite divides integers as integers; CAST AS NUMERIC: PostgreSQL rounds numerics, not doubles.
    average = f"CAST(({kept} * {ks} + {new} * {ns}) * 1.0 AS NUMERIC) / ({ks} + {ns})"
    merged = f"CAST(ROUND({average}) AS BIGINT)" if integer else f"ROUND({average}, 3)"
    if not nullable:
        return merged
    return f"CASE WHEN {new} IS NULL THEN {kept} WHEN {kept} IS NULL THEN {new} ELSE {merged} END"


def upsert_points(model, key_fields: Sequence[str], value_fields: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert points of ``model`` or merge them into the point already kept in their bucket.

    ``rows`` are tuples of ``key_fields`` (the bucket's unique key, ending with step_s and at),
    then ``samples``, then ``value_fields`` (plain numbers or None, sent as they are). Returns the
    rows sent.
    """
    meta = model._meta
    table = _q(meta.db_table)
    keys = [meta.get_field(n) for n in key_fields]
    values = [meta.get_field(n) for n in value_fields]
    columns = ", ".join(_q(f.column) for f in (*keys, meta.get_field("samples"), *values))
    conflict = ", ".join(_q(f.column) for f in keys)
    sets = [f"{_q('samples')} = {table}.{_q('samples')} + excluded.{_q('samples')}"]
    for f in values:
        sets.append(f"{_q(f.column)} = " + _merge_sql(table, f.column, integer=f.get_internal_type() != "FloatField",
                                                      nullable=f.null))
    fields = (*keys, meta.get_field("samples"), *values)
    width = len(fields)
    tail = f"ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(sets)}"
    # Key values repeat (one host, one bucket): each is made ready for the database once.
    ready: list[dict] = [{} for _ in keys]
    conn = connection

    def key_value(i: int, value):
        cache = ready[i]
        if value not in cache:
            cache[value] = keys[i].get_db_prep_save(value, conn)
        return cache[value]

    n = len(keys)
    prepared = [[*(key_value(i, row[i]) for i in range(n)), *row[n:width]] for row in rows]
    if not prepared:
        return 0
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            # One array per column: a short statement psycopg parses once and caches, whatever the rows.
            arrays = ", ".join(f"%s::{f.db_type(conn)}[]" for f in fields)
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) {tail}",
                           [list(col) for col in zip(*prepared, strict=True)])
        else:
            row_sql = "(" + ", ".join(["%s"] * width) + ")"
            for start in range(0, len(prepared), CHUNK_ROWS):
                chunk = prepared[start:start + CHUNK_ROWS]
                cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} {tail}",
                               [v for row in chunk for v in row])
    return len(prepared)


def commit_lazily() -> None:
    """On PostgreSQL, let this transaction's commit return before its WAL is flushed to disk.

    For measurements only: a crash of the database server may lose the last fraction of a second
    of points, never leaves them half-written, and other transactions keep their own durability.
    Only in a transaction of its own (the outermost ``atomic``): SET LOCAL would also make a caller's
    enclosing transaction lazy. (SQLite's equivalent, synchronous=NORMAL in WAL mode, is set for the
    whole database in settings.)
    """
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def roll_up(model, series_fields: Sequence[str], value_fields: Sequence[str], *, step_s: int, before,
            into_step_s: int | None, host_ids: Sequence[int] | None = None) -> int:
    """Points of ``step_s`` older than ``before``: aggregated into ``into_step_s`` buckets (None: dropped), then deleted.

    One aggregate query over the old points (of ``host_ids`` only, when given), batched upserts of
    its results, one DELETE; returns the old points removed.
    """
    old = model.objects.filter(step_s=step_s, at__lt=before)
    if host_ids is not None:
        old = old.filter(host_id__in=list(host_ids))
    if into_step_s is not None:
        kind = TRUNC_KINDS.get(into_step_s)
        if kind is None:
            raise ValueError(f"Cannot roll points into {into_step_s} s buckets; known: {sorted(TRUNC_KINDS)}.")
        sums = {}
        for f in value_fields:
            known = Case(When(**{f"{f}__isnull": False}, then=F("samples")), default=None)
            sums[f"{f}__weighted"] = Sum(F(f) * F("samples"), output_field=FloatField())
            sums[f"{f}__known"] = Sum(known)
        groups = (old.annotate(bucket=Trunc("at", kind, tzinfo=dt_timezone.utc))
                  .values(*series_fields, "bucket").annotate(n=Sum("samples"), **sums).order_by())
        nullable = {f: model._meta.get_field(f).null for f in value_fields}
        integer = {f: model._meta.get_field(f).get_internal_type() != "FloatField" for f in value_fields}
        rows = []
        for g in groups.iterator(chunk_size=2000):
            values = []
            for f in value_fields:
                known = g[f"{f}__known"] or 0
                avg = float(g[f"{f}__weighted"]) / int(known) if known else None
                if avg is None and not nullable[f]:
                    avg = 0
                values.append(round(avg) if integer[f] and avg is not None else
                              (round(avg, 3) if avg is not None else None))
            rows.append((*(g[k] for k in series_fields), into_step_s, g["bucket"], int(g["n"]), *values))
        upsert_points(model, (*series_fields, "step_s", "at"), value_fields, rows)
    deleted, _ = old.delete()  # nothing refers to points: Django sends one DELETE, no row is loaded
    return deleted
