"""In a real browser, without the lab: a host's load chart marks the host's migrations on its
time axis and lists them as links; a migration's transfer chart is drawn by uPlot from its
samples, with the same numbers (and the adaptive policy's steps) in the table behind it; a live
sample's forecast shows on a running migration's page. The rows are made in the portal's
database (hosts on loopback addresses that nothing contacts)."""

import json
import re

import pytest
from e2e_support import console_errors, login
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SEED = """
import json, uuid
from datetime import timedelta
from django.utils import timezone
from hosts.models import Host, HostLoad
from migrations_app.models import Migration, MigrationSample
now = timezone.now()
a = Host.objects.create(name='chart-a', address='127.0.0.21', libvirt_uri='qemu+ssh://root@127.0.0.21/system')
b = Host.objects.create(name='chart-b', address='127.0.0.22', libvirt_uri='qemu+ssh://root@127.0.0.22/system')
bucket = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
for i in range(96):  # eight hours of five-minute points
    HostLoad.objects.create(host=a, step_s=300, at=bucket - timedelta(minutes=5 * i),
                            memory_used_kib=(4 + (i % 7)) * 1024 * 1024, memory_free_kib=8 * 1024 * 1024,
                            cpu_pct=10 + (i * 7) % 60)
ids = []
for hours, name in ((6, 'web-<b>1</b>'), (2, 'db-2')):
    m = Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name=name, source=a, destination=b, options={},
                                 status='succeeded', created=now - timedelta(hours=hours),
                                 ended=now - timedelta(hours=hours) + timedelta(seconds=9),
                                 total_time_ms=8500, downtime_ms=120)
    ids.append(m.pk)
m = Migration.objects.get(pk=ids[-1])
remaining = 1024 * 1024 * 1024
for k in range(40):  # 8 s of samples, a new pass every 2 s
    remaining = max(0, remaining - 30 * 1024 * 1024)
    MigrationSample.objects.create(migration=m, elapsed_ms=200 * k, stats={
        'memory_total': 1024 * 1024 * 1024, 'memory_remaining': remaining, 'memory_processed': 0,
        'memory_iteration': 1 + k // 10, 'memory_bps': 150 * 1024 * 1024, 'memory_dirty_rate': 2000 + 100 * k,
        'memory_page_size': 4096, 'data_remaining': remaining, 'data_total': 1024 * 1024 * 1024})
live = Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name='dirty-3', source=a, destination=b,
                                options={'allow_postcopy': True}, status='migrating', phase='Sending memory',
                                created=now - timedelta(seconds=30), started=now - timedelta(seconds=29),
                                migration_started=now - timedelta(seconds=28), heartbeat=now)
for k in range(30):  # a guest that dirties memory as fast as it is sent; the policy acted at 4 s and 5 s
    stats = {'memory_total': 1024 ** 3, 'memory_remaining': 600 * 1024 * 1024, 'memory_iteration': 1 + k // 6,
             'memory_bps': 100 * 1024 * 1024, 'memory_dirty_rate': 25600, 'memory_page_size': 4096,
             'data_remaining': 600 * 1024 * 1024}
    if k in (20, 25):
        stats['adaptive_step'] = 1 if k == 20 else 2
    MigrationSample.objects.create(migration=live, elapsed_ms=200 * k, stats=stats)
print(json.dumps({'host': a.pk, 'migrations': ids, 'live': live.pk}))
"""

SAMPLE = """
from core import broadcast
from migrations_app.payloads import sample_payload
broadcast.migration_progress({pk}, sample_payload(6200, {{'memory_total': 1024 ** 3, 'memory_remaining': 500 * 1024 * 1024,
    'memory_iteration': 6, 'memory_bps': 100 * 1024 * 1024, 'memory_dirty_rate': 25600, 'memory_page_size': 4096,
    'data_remaining': 500 * 1024 * 1024}}, forecast='In post-copy: the guest runs on the destination while its last pages follow.'))
"""


def test_load_chart_marks_migrations_and_the_transfer_chart_is_drawn_by_uplot(page, portal, screenshots):
    errors = console_errors(page)
    seeded = json.loads(portal.manage("shell", "-c", SEED).stdout.strip().splitlines()[-1])
    login(page, portal)

    page.goto(f"/hosts/{seeded['host']}/")
    marks = page.locator(".load-history .load-marks")
    expect(marks).to_be_visible()
    links = marks.locator("a")
    expect(links).to_have_count(3)  # two that ended and one that runs
    # The guest's name is text, never markup.
    expect(links.first).to_contain_text("web-<b>1</b>: chart-a → chart-b (succeeded)")
    expect(page.locator(".load-history .load-chart canvas").first).to_be_visible()
    page.locator(".load-history").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "host-load-with-migrations.png", full_page=True)

    links.filter(has_text="db-2").click()
    expect(page).to_have_url(re.compile(rf"/migrations/{seeded['migrations'][-1]}/$"))
    expect(page.locator("#migration-chart .uplot canvas").first).to_be_visible()
    expect(page.locator("#chart-empty")).to_be_hidden()
    page.locator("#migration-chart").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "migration-transfer-chart.png", full_page=True)
    page.click("#migration-chart ~ details summary")
    rows = page.locator("#migration-samples-table tbody tr")
    expect(rows).to_have_count(40)
    expect(rows.last.locator("td").nth(4)).to_have_text("4")  # the pass of the last sample

    # A running migration: the policy's steps are in the table (and marked on the chart), and a
    # live sample says what happens next.
    page.goto(f"/migrations/{seeded['live']}/")
    expect(page.locator("#migration-chart .uplot canvas").first).to_be_visible()
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    portal.manage("shell", "-c", SAMPLE.format(pk=seeded["live"]))
    forecast = page.locator('#progress [data-live-field="forecast"]')
    expect(forecast).to_have_text("In post-copy: the guest runs on the destination while its last pages follow.")
    page.click("#migration-chart ~ details summary")
    steps = page.locator("#migration-samples-table tbody tr td:nth-child(6)")
    expect(steps.filter(has_text="downtime raised")).to_have_count(1)
    expect(steps.filter(has_text="post-copy")).to_have_count(1)
    page.locator("#progress").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "migration-adaptive-steps.png", full_page=True)
    assert not errors, errors
