"""Database triggers that refuse UPDATE and DELETE on the audit tables (SQLite, PostgreSQL).

Installed by migration 0005; the ORM refuses these writes already (core.models), the triggers
also stop raw SQL. The one sanctioned delete is the retention command: it writes an
AuditDeletePermit row in its own transaction, which lets DELETE through for the events up to
that id, and removes it again before committing. The test suite's flush (core's `flush`
command) drops the triggers for the wipe and puts them back.
"""

from __future__ import annotations

SQLITE_INSTALL = [
    """CREATE TRIGGER IF NOT EXISTS core_auditevent_no_update BEFORE UPDATE ON core_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS core_auditevent_no_delete BEFORE DELETE ON core_auditevent
       WHEN NOT EXISTS (SELECT 1 FROM core_auditdeletepermit WHERE OLD.id <= up_to_id)
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused (manage.py audit_retention)'); END""",
    """CREATE TRIGGER IF NOT EXISTS core_auditcheckpoint_no_update BEFORE UPDATE ON core_auditcheckpoint
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS core_auditcheckpoint_no_delete BEFORE DELETE ON core_auditcheckpoint
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: DELETE refused'); END""",
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS core_auditevent_no_update",
    "DROP TRIGGER IF EXISTS core_auditevent_no_delete",
    "DROP TRIGGER IF EXISTS core_auditcheckpoint_no_update",
    "DROP TRIGGER IF EXISTS core_auditcheckpoint_no_delete",
]

POSTGRES_INSTALL = [
    """CREATE OR REPLACE FUNCTION core_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'core_auditevent' THEN
           IF EXISTS (SELECT 1 FROM core_auditdeletepermit WHERE OLD.id <= up_to_id) THEN
             RETURN OLD;
           END IF;
         END IF;
         RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
       END $$""",
    """CREATE TRIGGER core_auditevent_append_only BEFORE UPDATE OR DELETE ON core_auditevent
       FOR EACH ROW EXECUTE FUNCTION core_audit_append_only()""",
    """CREATE TRIGGER core_auditevent_no_truncate BEFORE TRUNCATE ON core_auditevent
       FOR EACH STATEMENT EXECUTE FUNCTION core_audit_append_only()""",
    """CREATE TRIGGER core_auditcheckpoint_append_only BEFORE UPDATE OR DELETE ON core_auditcheckpoint
       FOR EACH ROW EXECUTE FUNCTION core_audit_append_only()""",
    """CREATE TRIGGER core_auditcheckpoint_no_truncate BEFORE TRUNCATE ON core_auditcheckpoint
       FOR EACH STATEMENT EXECUTE FUNCTION core_audit_append_only()""",
]
POSTGRES_REMOVE = [
    "DROP TRIGGER IF EXISTS core_auditevent_append_only ON core_auditevent",
    "DROP TRIGGER IF EXISTS core_auditevent_no_truncate ON core_auditevent",
    "DROP TRIGGER IF EXISTS core_auditcheckpoint_append_only ON core_auditcheckpoint",
    "DROP TRIGGER IF EXISTS core_auditcheckpoint_no_truncate ON core_auditcheckpoint",
    "DROP FUNCTION IF EXISTS core_audit_append_only()",
]


def _statements(vendor: str, *, install: bool) -> list[str]:
    if vendor == "sqlite":
        return SQLITE_INSTALL if install else SQLITE_REMOVE
    if vendor == "postgresql":
        return POSTGRES_INSTALL if install else POSTGRES_REMOVE
    return []  # other databases: the ORM's refusal and the hash chain still hold


def install(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, install=True):
            cursor.execute(sql)


def remove(connection) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, install=False):
            cursor.execute(sql)


def installed(connection) -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name LIKE 'core_audit%'")
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'core_audit%'")
        else:
            return False
        return cursor.fetchone()[0] > 0
