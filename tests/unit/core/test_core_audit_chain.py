"""The audit hash chain: every write path but audit_record() refused, every tamper detected."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core import audit_chain, audit_triggers
from core.actors import Actor
from core.audit import audit_record
from core.audit_retention import audit_retention_apply
from core.audit_verify import verify_chain
from core.choices import AuditResultChoices
from core.models import AppendOnlyError, AuditCheckpoint, AuditDeletePermit, AuditEvent
from tests.race_support import connections_for_race

TABLE = "core_auditevent"


def record(n: int, **kwargs) -> list[AuditEvent]:
    return [audit_record(actor=Actor.system(), action=kwargs.get("action", "test.thing"), result=AuditResultChoices.OK,
                         parameters={"n": i, "password": "p"}, message=f"event {i}") for i in range(n)]


def raw(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def events(db):
    return record(5)


@pytest.fixture
def no_triggers(db):
    """Someone with DDL rights on the database (the test's transaction puts the triggers back)."""
    audit_triggers.remove(connection)
    yield
    audit_triggers.install(connection)


def only_break(report):
    assert not report.ok
    return report.first_break


def test_events_link_into_one_chain(events):
    assert events[0].prev_hash == audit_chain.GENESIS_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    report = verify_chain()
    assert report.ok and report.events == 5 and report.last_id == events[-1].pk


def test_hash_covers_what_the_database_gives_back(events):
    # Redacted parameters, normalised IPv6 and time zones all hash the same once reloaded.
    e = audit_record(actor=Actor(source_ip="2001:DB8::0:1", name="x"), action="t.ipv6", result="ok",
                     parameters={"nested": {"b": [1, 2.5, None], "a": True}, "tuple": (1, 2)})
    assert verify_chain().ok
    assert AuditEvent.objects.get(pk=e.pk).source_ip == "2001:db8::1"


@pytest.mark.parametrize("time, text", [
    (datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt_timezone.utc), "2026-12-01T10:00:00Z"),  # SQLite, whole second
    (datetime(2026, 12, 1, 10, 0, 0, 5, tzinfo=dt_timezone.utc), "2026-12-01T10:00:00.000005Z"),
    (datetime(2026, 12, 1, 11, 0, 0, 250000, tzinfo=dt_timezone(timedelta(hours=1))), "2026-12-01T10:00:00.250000Z"),
])
@pytest.mark.parametrize("parameters, text_parameters", [
    ({"b": [1, 2.5, None], "a": {"z": "é✓", "y": True}}, '{"a": {"y": true, "z": "\\u00e9\\u2713"}, "b": [1, 2.5, null]}'),
    ({}, "{}"),
])
def test_verifier_row_hash_equals_the_writers(time, text, parameters, text_parameters):
    """The verifier hashes the database's text (UtcIso time, JSON parameters); the writer Python objects."""
    values = {name: f"v-{name}" for name in audit_chain.HASHED_FIELDS}
    values.update(time=time, parameters=parameters, actor_id=7, target_id=None)
    row = tuple(text if n == "time" else text_parameters if n == "parameters" else values[n]
                for n in audit_chain.HASHED_FIELDS)
    assert audit_chain.stored_row_hash(row) == audit_chain.event_hash(values)


@pytest.mark.parametrize("attempt", [
    "save_existing", "save_new_with_existing_pk", "force_update", "update_fields", "queryset_update",
    "bulk_update", "update_or_create", "delete", "queryset_delete", "bulk_create", "bulk_create_update_conflicts",
    "create_unchained",
])
def test_orm_refuses_every_write_path(events, attempt):
    target = AuditEvent.objects.get(pk=events[2].pk)
    fields = dict(actor_label="mallory", action="test.thing", result="ok", message="forged", hash="f" * 64)
    attempts = {
        "save_existing": lambda: (setattr(target, "message", "x"), target.save()),
        "save_new_with_existing_pk": lambda: AuditEvent(pk=target.pk, **fields).save(),
        "force_update": lambda: AuditEvent(**fields).save(force_update=True),
        "update_fields": lambda: AuditEvent(**fields).save(update_fields=["message"]),
        "queryset_update": lambda: AuditEvent.objects.filter(pk=target.pk).update(message="x"),
        "bulk_update": lambda: AuditEvent.objects.bulk_update([target], ["message"]),
        "update_or_create": lambda: AuditEvent.objects.update_or_create(pk=target.pk, defaults={"message": "x"}),
        "delete": lambda: target.delete(),
        "queryset_delete": lambda: AuditEvent.objects.filter(pk=target.pk).delete(),
        "bulk_create": lambda: AuditEvent.objects.bulk_create([AuditEvent(**fields)]),
        "bulk_create_update_conflicts": lambda: AuditEvent.objects.bulk_create(
            [AuditEvent(pk=target.pk, **fields)], update_conflicts=True, unique_fields=["id"], update_fields=["message"]),
        "create_unchained": lambda: AuditEvent.objects.create(actor_label="m", action="t", result="ok"),
    }
    with pytest.raises(AppendOnlyError):
        attempts[attempt]()
    assert AuditEvent.objects.get(pk=target.pk).message == "event 2"
    assert AuditEvent.objects.count() == 5 and verify_chain().ok


def test_database_trigger_refuses_raw_update_and_delete(events):
    for sql in (f"UPDATE {TABLE} SET message = 'x' WHERE id = %s", f"DELETE FROM {TABLE} WHERE id = %s"):
        with pytest.raises(DatabaseError), transaction.atomic():
            raw(sql, [events[1].pk])
    audit_chain.checkpoint_write()
    for sql in ("UPDATE core_auditcheckpoint SET event_hash = 'x'", "DELETE FROM core_auditcheckpoint"):
        with pytest.raises(DatabaseError), transaction.atomic():
            raw(sql)
    assert AuditEvent.objects.get(pk=events[1].pk).message == "event 1" and verify_chain().ok


def test_raw_update_is_detected_as_changed(events, no_triggers):
    raw(f"UPDATE {TABLE} SET message = 'nothing happened' WHERE id = %s", [events[2].pk])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("changed", events[2].pk)


def test_raw_delete_is_detected_as_deleted(events, no_triggers):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [events[2].pk])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("deleted", events[3].pk)
    assert f"#{events[1].pk}" in brk.message


def test_inserted_event_with_a_valid_hash_is_detected(events, no_triggers):
    # A forger who knows the hash function slips an event in after #1, linked to it.
    forged = AuditEvent(actor_label="mallory", action="test.thing", result="ok", message="forged",
                        time=events[1].time, prev_hash=events[1].hash, action_family="test")
    forged.hash = audit_chain.event_hash(audit_chain.hashed_values(forged))
    raw(f"UPDATE {TABLE} SET id = id + 100 WHERE id > %s", [events[1].pk])  # make room after #1
    forged.save()
    raw(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [events[1].pk + 1, forged.pk])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("inserted", events[1].pk + 1)


def test_inserted_event_with_a_wrong_hash_is_detected(events, no_triggers):
    raw(f"UPDATE {TABLE} SET id = id + 100 WHERE id > %s", [events[1].pk])
    raw(f"INSERT INTO {TABLE} (id, time, actor_label, action, action_family, target_type, target_id, target_label, "
        f"parameters, result, message, request_id, prev_hash, hash) VALUES (%s, %s, 'mallory', 'test.x', 'test', '', "
        f"'', '', '{{}}', 'ok', 'forged', '', %s, %s)", [events[1].pk + 1, timezone.now(), events[1].hash, "e" * 64])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("inserted", events[1].pk + 1)


def test_swapped_events_are_detected_as_reordered(events, no_triggers):
    a, b = events[1].pk, events[2].pk
    raw(f"UPDATE {TABLE} SET id = -1 WHERE id = %s", [a])
    raw(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [a, b])
    raw(f"UPDATE {TABLE} SET id = %s WHERE id = -1", [b])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("reordered", a)


def _rehash_everything_from(pk: int) -> None:
    """The attack a hash chain alone cannot see: change a row, then recompute every hash after it."""
    prev = AuditEvent.objects.filter(pk__lt=pk).order_by("-pk").values_list("hash", flat=True).first()
    prev = prev or audit_chain.GENESIS_HASH
    for event in AuditEvent.objects.filter(pk__gte=pk).order_by("pk"):
        event.prev_hash = prev
        prev = audit_chain.event_hash(audit_chain.hashed_values(event))
        raw(f"UPDATE {TABLE} SET message = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [event.message, event.prev_hash, prev, event.pk])


def test_recomputed_hashes_are_caught_by_the_signed_checkpoint(events, no_triggers):
    cp = audit_chain.checkpoint_write()
    raw(f"UPDATE {TABLE} SET message = 'rewritten' WHERE id = %s", [events[2].pk])
    _rehash_everything_from(events[2].pk)
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("changed", cp.event_id) and "rewritten and rehashed" in brk.message


def test_forged_checkpoint_and_a_wrong_key_are_caught(events, no_triggers, settings):
    audit_chain.checkpoint_write()
    raw("UPDATE core_auditcheckpoint SET event_hash = %s", ["a" * 64])
    assert only_break(verify_chain()).kind == "checkpoint"


def test_deleted_tail_is_caught_by_the_checkpoint(events, no_triggers):
    audit_chain.checkpoint_write()
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [events[-1].pk])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("deleted", events[-1].pk)


def test_checkpoint_file_outside_the_database_catches_a_wiped_checkpoint_table(events, no_triggers, settings,
                                                                                 tmp_path, django_capture_on_commit_callbacks):
    settings.VMPORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "checkpoints.jsonl")
    with django_capture_on_commit_callbacks(execute=True):
        audit_chain.checkpoint_write()
    line = json.loads((tmp_path / "checkpoints.jsonl").read_text())
    assert line["event_id"] == events[-1].pk and len(line["signature"]) == 64
    raw("DELETE FROM core_auditcheckpoint")
    raw(f"UPDATE {TABLE} SET message = 'rewritten' WHERE id = %s", [events[1].pk])
    _rehash_everything_from(events[1].pk)
    brk = only_break(verify_chain())
    assert brk.kind == "changed" and "file checkpoint" in brk.message


def test_periodic_checkpoint_at_most_every_n_minutes(events, settings):
    settings.VMPORTAL_AUDIT_CHECKPOINT_MINUTES = 10
    first = audit_chain.checkpoint_if_due()
    assert first is not None and first.event_id == events[-1].pk and first.kind == "periodic"
    record(1)
    assert audit_chain.checkpoint_if_due() is None  # too soon
    later = audit_chain.checkpoint_if_due(now=timezone.now() + timedelta(minutes=11))
    assert later is not None and later.event_id == events[-1].pk + 1
    assert audit_chain.checkpoint_if_due(now=timezone.now() + timedelta(minutes=30)) is None  # head did not move


def test_retention_is_the_one_sanctioned_delete(events):
    old = timezone.now() - timedelta(days=40)
    # Backdate the first three through the chain: new events with old times.
    with transaction.atomic():
        audit_triggers.remove(connection)
        raw(f"DELETE FROM {TABLE}")
        audit_triggers.install(connection)
    old_events = [audit_chain.append(AuditEvent(time=old + timedelta(minutes=i), actor_label="system",
                                                action="test.old", result="ok")) for i in range(3)]
    new_events = record(2)
    outcome = audit_retention_apply(days=30, actor=Actor.cli())
    assert (outcome.removed, outcome.first_id, outcome.last_id) == (3, old_events[0].pk, old_events[-1].pk)
    assert not AuditEvent.objects.filter(pk__lte=old_events[-1].pk).exists()
    assert not AuditDeletePermit.objects.exists()
    kinds = list(AuditCheckpoint.objects.order_by("pk").values_list("kind", flat=True))
    assert kinds == ["periodic", "retention"]
    event = AuditEvent.objects.get(action="audit.retention")
    assert event.parameters["removed"] == 3 and event.actor_label.startswith("cli:")
    report = verify_chain()
    assert report.ok and report.first_id == new_events[0].pk
    # Without the permit, the trigger still refuses deletes.
    with pytest.raises(DatabaseError), transaction.atomic():
        raw(f"DELETE FROM {TABLE} WHERE id = %s", [new_events[0].pk])


def test_retention_anchor_catches_a_deleted_oldest_event(events, no_triggers):
    raw(f"DELETE FROM {TABLE} WHERE id = %s", [events[0].pk])
    brk = only_break(verify_chain())
    assert (brk.kind, brk.event_id) == ("deleted", events[1].pk)


def test_audit_verify_command_exit_codes_and_json(events, no_triggers, capsys):
    call_command("audit_verify")
    assert "intact: 5 events" in capsys.readouterr().out
    call_command("audit_verify", "--json")
    assert json.loads(capsys.readouterr().out)["ok"] is True
    raw(f"UPDATE {TABLE} SET message = 'x' WHERE id = %s", [events[3].pk])
    with pytest.raises(CommandError) as failed:
        call_command("audit_verify", "--json")
    out = json.loads(capsys.readouterr().out)
    assert failed.value.returncode == 1 and f"#{events[3].pk}" in str(failed.value) and "changed" in str(failed.value)
    assert out["ok"] is False and out["breaks"][0] == {"kind": "changed", "event_id": events[3].pk,
                                                       "message": f"Event #{events[3].pk} no longer matches its hash."}


def test_existing_events_get_hashes_in_the_data_migration(db):
    from importlib import import_module

    from django.db.migrations.loader import MigrationLoader

    # The models as that migration sees them (plain managers, as when it first ran).
    apps = MigrationLoader(connection).project_state(("core", "0003_audit_chain_fields")).apps
    record(3)
    with transaction.atomic():
        audit_triggers.remove(connection)
        raw(f"UPDATE {TABLE} SET prev_hash = '', hash = '', action_family = ''")
        import_module("core.migrations.0004_audit_chain_existing_events").chain_existing(apps, None)
        audit_triggers.install(connection)
    assert not AuditEvent.objects.filter(hash="").exists() and verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain(tmp_path):
    record(1)
    race = connections_for_race(tmp_path)
    writers, each = 6, 15

    def write():
        for i in range(each):
            with transaction.atomic():
                audit_record(actor=Actor.system(), action="test.race", result="ok", message=str(i))
        return verify_chain()

    results = race.race([write] * writers)
    assert not [r for r in results if isinstance(r, Exception)], results
    final = race.run(verify_chain)
    assert final.ok and final.events == 1 + writers * each
    hashes = race.run(lambda: list(AuditEvent.objects.values_list("prev_hash", flat=True)))
    assert len(set(hashes)) == len(hashes)  # no two events after the same one: no fork
