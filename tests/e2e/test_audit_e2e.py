"""In a real browser: filter the audit trail by action family and time range, open an event,
export the filtered CSV and find in it exactly the rows the page showed."""

import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest
from e2e_support import console_errors, login
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# Events at known ages (hours ago): migrations inside and outside the window, and others.
SEED = """
from datetime import timedelta
from django.utils import timezone
from core import audit_chain
from core.models import AuditEvent
now = timezone.now()
for hours, action, label in [(50, 'migration.start', 'db-old'), (30, 'migration.start', 'db-7'),
                             (20, 'migration.finish', 'db-7'), (10, 'host.refresh', 'labh2'),
                             (6, 'migration.request', 'web-1'), (5, 'migrationx.other', 'x'),
                             (2, 'migration.abort', 'web-1'), (1, 'vm.start', 'web-1')]:
    audit_chain.append(AuditEvent(time=now - timedelta(hours=hours), actor_label='otto', action=action,
                                  target_type='virtualmachine', target_id='3', target_label=label,
                                  parameters={'options': {'live': True}, 'password': '[redacted]'},
                                  result='ok', message=f'{action} {label}'))
"""


def test_filter_open_and_export_exactly_what_is_shown(page, portal, screenshots):
    errors = console_errors(page)
    portal.manage("shell", "-c", SEED)
    login(page, portal)
    page.goto("/audit/")
    now = datetime.now(timezone.utc)
    page.fill("#id_action", "migration.*")
    page.fill("#id_since", (now - timedelta(hours=36)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("#id_until", (now - timedelta(hours=1, minutes=30)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#audit-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"action=migration\.\*"))
    rows = page.locator("#audit-rows tr[data-event-id]")
    expect(rows).to_have_count(4)
    shown = [rows.nth(i).get_attribute("data-event-id") for i in range(4)]
    actions = [rows.nth(i).locator("td.mono").inner_text() for i in range(4)]
    assert actions == ["migration.abort", "migration.request", "migration.finish", "migration.start"]
    page.screenshot(path=screenshots / "audit-filtered.png", full_page=True)

    # The event's page: its fields, parameters (redacted) and the events around it.
    rows.nth(1).locator("a").first.click()
    expect(page).to_have_url(re.compile(rf"/audit/{shown[1]}/$"))
    expect(page.locator("#audit-event-fields")).to_contain_text("migration.request")
    expect(page.locator("#audit-parameters")).to_contain_text("[redacted]")
    expect(page.locator("#audit-around tr.audit-current")).to_contain_text(f"#{shown[1]}")
    page.screenshot(path=screenshots / "audit-event.png", full_page=True)
    page.go_back()

    with page.expect_download() as download_info:
        page.click("#export-csv")
    text = open(download_info.value.path(), encoding="utf-8").read()
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in exported] == shown
    assert all(r["time"].endswith("Z") for r in exported)
    assert not errors, errors


def test_live_events_appear_only_when_they_match_the_filter(page, portal):
    login(page, portal)
    page.goto("/audit/?action=migration.*")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    rows = page.locator("#audit-rows tr[data-event-id]")
    before = rows.count()
    portal.manage("shell", "-c", "from core.audit import audit_record; from core.actors import Actor; "
                                 "audit_record(actor=Actor.cli(), action='host.refresh', result='ok', message='no'); "
                                 "audit_record(actor=Actor.cli(), action='migration.abort', result='ok', message='live one')")
    expect(rows).to_have_count(before + 1, timeout=10000)
    expect(rows.first).to_contain_text("live one")
    expect(page.locator("#audit-rows")).not_to_contain_text("host.refresh")
