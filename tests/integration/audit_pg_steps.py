"""Steps of the PostgreSQL audit test, each run in a process of its own against DATABASE_URL.

    python tests/integration/audit_pg_steps.py STEP [ARG]

Prints one JSON line with the step's result; test_postgres_audit.py drives them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.test_settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from core import audit_chain  # noqa: E402
from core.actors import Actor  # noqa: E402
from core.audit import audit_record  # noqa: E402
from core.audit_verify import verify_chain  # noqa: E402
from core.models import AuditEvent  # noqa: E402

TABLE = "core_auditevent"


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def migrate(_):
    call_command("migrate", verbosity=0, interactive=False)
    return {"vendor": connection.vendor}


def generate(n):
    start = timezone.now() - timedelta(days=30)
    batch = []
    for i in range(int(n)):
        batch.append(dict(time=start + timedelta(seconds=i), actor_id=None, actor_label=f"user{i % 20}",
                          action="migration.start" if i % 3 else "host.refresh", target_type="host",
                          target_id=str(i % 100), target_label=f"host-{i % 100}", parameters={"n": i},
                          result="ok", message=f"event {i}", source_ip=None, request_id="", job_id=None))
        if len(batch) == 10000:
            audit_chain.append_many(batch)
            batch = []
    if batch:
        audit_chain.append_many(batch)
    cp = audit_chain.checkpoint_write()
    return {"events": AuditEvent.objects.count(), "checkpoint_event": cp.event_id}


def write(n):
    """One writer process: n audited transactions, as services write them."""
    for i in range(int(n)):
        with transaction.atomic():
            audit_record(actor=Actor.system(), action="test.race", result="ok", message=f"{os.getpid()} {i}")
    return {"pid": os.getpid()}


def verify(_):
    report = verify_chain()
    brk = report.first_break
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True).order_by("pk").iterator(chunk_size=5000))
    return {"ok": report.ok, "events": report.events, "kind": brk.kind if brk else None,
            "event_id": brk.event_id if brk else None, "message": brk.message if brk else "",
            "forks": len(prevs) - len(set(prevs))}


def refused(_):
    """The triggers refuse a raw UPDATE, DELETE and TRUNCATE."""
    pk = AuditEvent.objects.order_by("pk").values_list("pk", flat=True)[500]
    outcomes = {}
    for name, statement in (("update", f"UPDATE {TABLE} SET message = 'x' WHERE id = {pk}"),
                            ("delete", f"DELETE FROM {TABLE} WHERE id = {pk}"),
                            ("truncate", f"TRUNCATE {TABLE}")):
        try:
            with transaction.atomic():
                sql(statement)
            outcomes[name] = "allowed"
        except DatabaseError as exc:
            outcomes[name] = str(exc).splitlines()[0]
    return outcomes


def _as_table_owner(*statements) -> None:
    """What an attacker who owns the table does: lift the triggers, run SQL, put them back."""
    with transaction.atomic():
        sql(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        for statement, params in statements:
            sql(statement, params)
        sql(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")


def tamper_update(pk):
    _as_table_owner((f"UPDATE {TABLE} SET message = 'nothing to see' WHERE id = %s", [int(pk)]))
    return {}


def tamper_delete(pk):
    _as_table_owner((f"DELETE FROM {TABLE} WHERE id = %s", [int(pk)]))
    return {}


def tamper_restore(pk):
    """Put the original message back (undo tamper_update) so the next attack starts intact."""
    n = AuditEvent.objects.filter(pk=int(pk)).values_list("parameters", flat=True).get()["n"]
    _as_table_owner((f"UPDATE {TABLE} SET message = %s WHERE id = %s", [f"event {n}", int(pk)]))
    return {}


def tamper_rehash(pk):
    """Rewrite one event and recompute every hash after it: only the signed checkpoint sees it."""
    pk = int(pk)
    with transaction.atomic():
        sql(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        sql(f"UPDATE {TABLE} SET message = 'rewritten' WHERE id = %s", [pk])
        prev = AuditEvent.objects.filter(pk__lt=pk).order_by("-pk").values_list("hash", flat=True).first()
        columns = ("pk", *audit_chain.HASHED_FIELDS)
        updates = []
        for row in AuditEvent.objects.filter(pk__gte=pk).order_by("pk").values_list(*columns).iterator(chunk_size=5000):
            values = dict(zip(audit_chain.HASHED_FIELDS, row[1:]))
            values["prev_hash"] = prev
            prev = audit_chain.event_hash(values)
            updates.append((values["prev_hash"], prev, row[0]))
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {TABLE} SET prev_hash = %s, hash = %s WHERE id = %s", updates)
        sql(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")
    return {"rehashed": len(updates)}


if __name__ == "__main__":
    step, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(globals()[step](arg)))
