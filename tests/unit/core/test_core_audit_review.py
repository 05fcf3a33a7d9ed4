"""The audit page: filters in the query string, keyset pages, live rows, event page, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from core import audit_chain
from core.actors import Actor
from core.audit import audit_record
from core.audit_pages import audit_page
from core.filtersets import filtered_events
from core.models import AuditCheckpoint, AuditEvent, Job

AUDIT = reverse("core:audit")


def at(minutes_ago: float, action: str, **kwargs) -> AuditEvent:
    return audit_chain.append(AuditEvent(time=timezone.now() - timedelta(minutes=minutes_ago), action=action,
                                         actor_label=kwargs.pop("actor_label", "system"),
                                         result=kwargs.pop("result", "ok"), **kwargs))


@pytest.fixture
def trail(db):
    """A day and a half of events of a few kinds, oldest first."""
    return {
        "old_login": at(60 * 36, "auth.login", actor_label="ada", source_ip="198.51.100.7", request_id="r1"),
        "mig_start": at(60 * 5, "migration.start", target_type="migration", target_id="7", target_label="db-7"),
        "mig_refused": at(60 * 2, "migration.request", result="refused", actor_label="otto",
                          target_type="virtualmachine", target_id="3", target_label="db-7",
                          message="Refused: destination is in maintenance"),
        "host_add": at(30, "host.add", actor_label="cli:root", target_type="host", target_id="1", target_label="labh2"),
        "mig_end": at(10, "migration.finish", target_type="migration", target_id="7", target_label="db-7",
                      message="db-7 now runs on labh2"),
        "migx": at(5, "migrationx.other"),
    }


def pks(params) -> list[int]:
    filterset, queryset = filtered_events(params)
    assert filterset.is_valid(), filterset.errors
    return list(queryset.order_by("-time", "-pk").values_list("pk", flat=True))


@pytest.mark.parametrize("params,expected", [
    ({"action": "migration.*"}, ["mig_end", "mig_refused", "mig_start"]),
    ({"action": "migration.start"}, ["mig_start"]),
    ({"period": "1h"}, ["migx", "mig_end", "host_add"]),
    ({"period": "24h", "action": "migration.*"}, ["mig_end", "mig_refused", "mig_start"]),
    ({"period": "7d"}, ["migx", "mig_end", "host_add", "mig_refused", "mig_start", "old_login"]),
    ({"actor": "otto"}, ["mig_refused"]),
    ({"target_type": "migration", "target": "7"}, ["mig_end", "mig_start"]),
    ({"target": "db-7"}, ["mig_end", "mig_refused", "mig_start"]),
    ({"targets": "host:1,virtualmachine:3"}, ["host_add", "mig_refused"]),
    ({"result": "refused"}, ["mig_refused"]),
    ({"source": "cli"}, ["host_add"]),
    ({"source": "web"}, ["old_login"]),
    ({"ip": "198.51.100.7"}, ["old_login"]),
    ({"q": "MAINTENANCE"}, ["mig_refused"]),
])
def test_filters_combine(trail, params, expected):
    assert pks(params) == [trail[name].pk for name in expected]


def test_from_to_range(trail):
    now = timezone.now()
    params = {"since": (now - timedelta(hours=3)).isoformat(), "until": (now - timedelta(minutes=20)).isoformat()}
    assert pks(params) == [trail["host_add"].pk, trail["mig_refused"].pk]


@pytest.mark.parametrize("params", [
    {"since": "yesterday-ish"}, {"ip": "not-an-ip"}, {"period": "1y"}, {"result": "maybe"},
    {"action": "migration.*; DROP TABLE"}, {"targets": "host"}, {"targets": ",".join(f"host:{i}" for i in range(201))},
    {"job": "-4"}, {"q": "x" * 201},
])
def test_hostile_filters_select_nothing_and_say_why(trail, viewer_client, params):
    filterset, queryset = filtered_events(params)
    assert not filterset.is_valid() and not queryset.exists()
    response = viewer_client.get(AUDIT, params)
    assert response.status_code == 200 and "The filter is not valid" in response.content.decode()
    export = viewer_client.get(reverse("core:audit_export", args=["csv"]), params)
    assert export.status_code == 200 and b"".join(export.streaming_content).decode().count("\n") == 1  # header only


def test_keyset_pages_walk_every_event_once_both_ways(db):
    base = timezone.now() - timedelta(hours=1)
    # Several events share a time: the id breaks the tie.
    made = [audit_chain.append(AuditEvent(time=base + timedelta(seconds=i // 3), action="t.page", actor_label="s",
                                          result="ok")) for i in range(23)]
    newest_first = [e.pk for e in sorted(made, key=lambda e: (e.time, e.pk), reverse=True)]
    qs = AuditEvent.objects.all()
    seen, page, pages = [], audit_page(qs, size=5), []
    while True:
        pages.append(page)
        seen += [e.pk for e in page.events]
        if not page.older:
            break
        page = audit_page(qs, older=page.older, size=5)
    assert seen == newest_first and len(pages) == 5 and pages[0].is_first and not pages[-1].is_first
    back = audit_page(qs, newer=pages[-1].newer, size=5)
    assert [e.pk for e in back.events] == [e.pk for e in pages[-2].events]
    top = audit_page(qs, newer=pages[1].newer, size=5)
    assert [e.pk for e in top.events] == [e.pk for e in pages[0].events] and top.is_first


def test_page_never_uses_offset(trail, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        audit_page(AuditEvent.objects.all(), older=f"{10**15}-999", size=2)
    assert queries.captured_queries and not any("OFFSET" in q["sql"] for q in queries.captured_queries)


def test_audit_page_shows_filtered_rows_with_pager(trail, viewer_client):
    response = viewer_client.get(AUDIT, {"action": "migration.*"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "migration.finish" in html and "host.add" not in html and "migrationx.other" not in html
    assert 'data-audit-socket="/ws/audit/"' in html and "action=migration.%2A" in html


def test_live_rows_come_only_when_they_match_the_filter(trail, viewer_client):
    top = trail["migx"].pk
    match = audit_record(actor=Actor.system(), action="migration.abort", result="ok", message="aborted")
    audit_record(actor=Actor.system(), action="host.refresh", result="ok")
    html = viewer_client.get(reverse("core:audit_rows"), {"action": "migration.*", "after": top}).content.decode()
    assert f'data-event-id="{match.pk}"' in html and html.count("data-event-id") == 1
    assert "data-event-id" not in viewer_client.get(reverse("core:audit_rows"), {"after": "x"}).content.decode()


def test_event_page_has_fields_redacted_parameters_before_after_request_and_neighbours(trail, viewer_client, admin):
    event = audit_record(actor=Actor(user=admin, source_ip="192.0.2.1", request_id="req-42"), action="user.change",
                         result="ok", target=admin, message="ada changed",
                         parameters={"changes": {"is_staff": [False, True]}, "password": "hunter2"})
    sibling = audit_record(actor=Actor(user=admin, request_id="req-42"), action="user.group_add", result="ok")
    html = viewer_client.get(reverse("core:audit_event", args=[event.pk])).content.decode()
    assert "hunter2" not in html and "[redacted]" in html
    assert 'id="audit-changes"' in html and "is_staff" in html and "False" in html and "True" in html
    assert "req-42" in html and f'data-event-id="{sibling.pk}"' in html  # same request, and around it
    assert f'data-event-id="{event.pk - 1}"' in html and event.hash in html
    assert viewer_client.get(reverse("core:audit_event", args=[999999])).status_code == 404


def _csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_export_csv_and_jsonl_hold_exactly_the_filtered_rows(trail, viewer_client):
    params = {"action": "migration.*", "period": "24h"}
    response = viewer_client.get(reverse("core:audit_export", args=["csv"]), params)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = _csv_rows(response)
    assert [int(r["id"]) for r in rows] == pks(params)
    assert rows[0]["time"].endswith("Z") and "T" in rows[0]["time"] and rows[0]["action"] == "migration.finish"
    lines = b"".join(viewer_client.get(reverse("core:audit_export", args=["jsonl"]), params).streaming_content)
    docs = [json.loads(line) for line in lines.decode().splitlines()]
    assert [d["id"] for d in docs] == pks(params) and docs[0]["parameters"] == {}
    assert viewer_client.get(reverse("core:audit_export", args=["xml"])).status_code == 404


@pytest.mark.parametrize("hostile", ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                                     "\tx", "\rx"])
def test_export_csv_defuses_formulas_and_jsonl_keeps_them(db, viewer_client, hostile):
    """A user name tried at login, a guest's name or a message starting like a formula."""
    audit_record(actor=Actor(name=hostile), action="t.hostile", result="ok", message=hostile,
                 parameters={"tried": hostile})
    row = _csv_rows(viewer_client.get(reverse("core:audit_export", args=["csv"]), {"action": "t.hostile"}))[0]
    assert row["actor"] == "'" + hostile and row["message"] == "'" + hostile
    assert json.loads(row["parameters"]) == {"tried": hostile}  # starts with "{": no formula
    lines = b"".join(viewer_client.get(reverse("core:audit_export", args=["jsonl"]),
                                       {"action": "t.hostile"}).streaming_content).decode().splitlines()
    doc = json.loads(lines[0])
    assert doc["actor"] == hostile and doc["message"] == hostile


def test_export_csv_leaves_ordinary_text_alone(trail, viewer_client):
    rows = _csv_rows(viewer_client.get(reverse("core:audit_export", args=["csv"])))
    assert rows and not any(r["message"].startswith("'") or r["actor"].startswith("'") for r in rows)


def test_export_is_audited_and_checkpointed(trail, viewer_client, viewer):
    b"".join(viewer_client.get(reverse("core:audit_export", args=["csv"]), {"actor": "otto"}).streaming_content)
    event = AuditEvent.objects.get(action="audit.export")
    assert event.actor == viewer and event.parameters == {"format": "csv", "filters": {"actor": "otto"},
                                                          "up_to_id": event.pk - 1}
    cp = AuditCheckpoint.objects.get(kind="export")
    assert cp.event_id == event.pk - 1 and audit_chain.checkpoint_signature_ok(cp)


def test_export_streams_more_rows_than_one_chunk(db, viewer_client, monkeypatch):
    from core import audit_export

    monkeypatch.setattr(audit_export, "CHUNK", 7)
    for i in range(30):
        at(30 - i, "t.bulk")
    rows = _csv_rows(viewer_client.get(reverse("core:audit_export", args=["csv"]), {"action": "t.bulk"}))
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30


def test_audit_export_command(trail, capsys):
    call_command("audit_export", "--action", "migration.*", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["id"]) for r in rows] == pks({"action": "migration.*"})
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    call_command("audit_export", "--since", since, "--format", "jsonl")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The first export's own event is in the hour; the second one's is not in its own export.
    assert [d["action"] for d in lines] == ["audit.export", "migrationx.other", "migration.finish", "host.add"]
    assert AuditEvent.objects.filter(action="audit.export", actor_label__startswith="cli:").count() == 2
    with pytest.raises(CommandError, match="--since"):
        call_command("audit_export", "--since", "soon")


def test_chain_page_is_for_admins_and_verify_now_runs_a_job_with_progress(trail, viewer_client, admin_client,
                                                                         django_capture_on_commit_callbacks):
    url = reverse("core:audit_chain")
    assert viewer_client.get(url).status_code == 403
    html = admin_client.get(url).content.decode()
    assert "never" in html and str(AuditEvent.objects.count()) in html
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url)
    job = Job.objects.get(kind="audit.verify")
    assert response.status_code == 302 and response["Location"] == reverse("core:job_detail", args=[job.pk])
    assert job.status == "succeeded" and job.progress == 100 and job.result["events"] >= 6
    assert AuditEvent.objects.filter(action="audit.verify_requested", job=job).exists()
    assert "intact" in admin_client.get(url).content.decode()


def test_verify_job_fails_naming_the_break(trail, admin_client, django_capture_on_commit_callbacks):
    from django.db import connection

    from core import audit_triggers

    audit_triggers.remove(connection)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE core_auditevent SET message = 'x' WHERE id = %s", [trail["host_add"].pk])
    audit_triggers.install(connection)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("core:audit_chain"))
    job = Job.objects.get(kind="audit.verify")
    assert job.status == "failed" and f"#{trail['host_add'].pk}" in job.error and "changed" in job.error


def test_audit_panel_on_object_pages_links_to_the_filtered_list(trusted_host, viewer_client):
    host = trusted_host
    html = viewer_client.get(reverse("hosts:host_detail", args=[host.pk])).content.decode()
    assert 'id="audit-panel"' in html and f"targets=host%3A{host.pk}" in html


def test_audit_panel_tag_includes_children(db, trail):
    from django.template import Context, Template

    from django.contrib.auth.models import Group

    group = Group.objects.create(name="g1")
    html = Template("{% load audit_panel %}{% audit_panel group kids %}").render(Context({"group": group, "kids": []}))
    assert "group.create" in html and "targets=group%3A" in html
