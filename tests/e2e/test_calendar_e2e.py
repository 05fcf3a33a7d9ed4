"""In a real browser: the maintenance calendar. An operator clicks a day to create a window,
drags it to another day, sees it on the host page; the overrun banner appears live on an open
page when a window's end passes with its host not emptied. Screenshots of the month and week
views for a person to look at.

No lab: the host is an inventory row the portal cannot contact (its host key is not trusted),
so the window's start is refused with its reason and the host is still not empty at the end.
The tick is driven from a manage.py process with the times the test chooses; its live warning
goes through redis to daphne like any other.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from e2e_support import console_errors, login
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOST = "e2e-cal-h1"


def shell(portal, code: str) -> str:
    return portal.manage("shell", "-c", code).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def host_id(portal):
    return int(shell(portal, (
        "from hosts.models import Host; "
        f"print(Host.objects.create(name='{HOST}', address='192.0.2.77', status='pending_trust').pk)")))


def window_times(portal, window_id: int) -> dict:
    return json.loads(shell(portal, (
        "import json; from calendar_app.models import MaintenanceWindow as W; "
        f"w = W.objects.get(pk={window_id}); print(json.dumps({{'start': w.start.isoformat(), 'seq': w.sequence}}))")))


def drag(page, source, target) -> None:
    """Press on ``source``, move in steps (FullCalendar follows pointer moves), release on ``target``."""
    a, b = source.bounding_box(), target.bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(a["x"] + a["width"] / 2 + 5, a["y"] + a["height"] / 2 + 5, steps=3)
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=15)
    page.mouse.up()


def test_create_by_clicking_a_day_drag_it_see_it_on_the_host_page_and_the_live_overrun(
        page, portal, host_id, screenshots):
    errors = console_errors(page)
    login(page, portal)
    from datetime import date

    day = date.today() + timedelta(days=3)
    later = day + timedelta(days=2)
    page.goto("/maintenance/calendar/")
    cell = page.locator(f'td.fc-daygrid-day[data-date="{day.isoformat()}"]')
    expect(cell).to_be_visible()
    cell.click(position={"x": 20, "y": 40})
    expect(page).to_have_url(re.compile(r"/maintenance/windows/new/\?date=" + day.isoformat()))
    expect(page.locator("#id_start")).to_have_value(f"{day.isoformat()}T02:00")
    page.fill("#id_title", "Firmware <update> & co")  # markup: refused, shown back escaped
    page.get_by_label(HOST).check()
    page.click("#window-form button[type=submit]")
    expect(page.locator('[data-error-for="title"]')).to_contain_text("may not contain markup")
    assert [e for e in errors if "400 (Bad Request)" not in e] == [], errors  # the refused form answers 400
    errors.clear()
    page.fill("#id_title", "Firmware update")
    page.click("#window-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/maintenance/windows/\d+/$"))
    window_id = int(re.search(r"/windows/(\d+)/", page.url).group(1))
    expect(page.locator("h1")).to_contain_text("Firmware update")

    page.goto("/maintenance/calendar/")
    event = page.locator(f'.fc-event[data-window="{window_id}"]')
    expect(event).to_be_visible()
    expect(event).to_have_attribute("data-status", "scheduled")
    drag(page, event, page.locator(f'td.fc-daygrid-day[data-date="{later.isoformat()}"]'))
    expect(page.locator("#calendar-message")).to_contain_text("Moved")
    expect(page.locator(f'[data-window-when="{window_id}"]')).to_contain_text(f"{later.isoformat()} 02:00")
    moved = window_times(portal, window_id)
    assert moved["start"].startswith(f"{later.isoformat()}T02:00") and moved["seq"] == 1, moved
    expect(page.locator(f'td.fc-daygrid-day[data-date="{later.isoformat()}"] .fc-event')).to_have_count(1)
    page.screenshot(path=str(screenshots / "calendar-month.png"), full_page=True)

    page.click(".fc-timeGridWeek-button")
    expect(page.locator(".fc-timegrid")).to_be_visible()
    page.screenshot(path=str(screenshots / "calendar-week.png"), full_page=True)

    page.goto(f"/hosts/{host_id}/")
    expect(page.locator("#host-windows")).to_contain_text("Firmware update")
    page.goto("/hosts/")
    expect(page.locator("#hosts-table")).to_contain_text(HOST)

    # A window whose host cannot be emptied: at its end every open page hears of the overrun.
    made = int(shell(portal, (
        "from datetime import timedelta; from django.utils import timezone; from calendar_app import services; "
        "from core.actors import Actor; from hosts.models import Host; now = timezone.now(); "
        f"w = services.window_create(spec=services.WindowSpec(title='Overnight', hosts=[Host.objects.get(name='{HOST}')], "
        "start=now + timedelta(seconds=5), end=now + timedelta(minutes=10), cutoff_minutes=1), actor=Actor.system()); "
        "print(w.pk)")))
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    tick = ("from datetime import timedelta; from calendar_app import ticker; from calendar_app.models import "
            f"MaintenanceWindow as W; w = W.objects.get(pk={made}); ")
    shell(portal, tick + "print(ticker.calendar_tick(now=w.start + timedelta(seconds=1)))")
    # The worker runs the start: refused (the host cannot be contacted), and said so.
    banner = page.locator("#live-warnings")
    expect(banner.locator('[data-warning-kind="start-refused"]')).to_contain_text("was not put into maintenance",
                                                                                  timeout=30000)
    shell(portal, tick + "print(ticker.calendar_tick(now=w.end))")
    expect(banner.locator('[data-warning-kind="overrun"]')).to_contain_text("Overrun")
    expect(banner.locator('[data-warning-kind="overrun"]')).to_contain_text(HOST)
    page.screenshot(path=str(screenshots / "calendar-overrun-banner.png"), full_page=True)
    page.goto(f"/maintenance/windows/{made}/")
    expect(page.locator("#occurrences [data-status]").first).to_have_attribute("data-status", "incomplete")
    page.screenshot(path=str(screenshots / "calendar-window-page.png"), full_page=True)
    # Two statuses side by side: today's incomplete window and the scheduled one.
    page.goto("/maintenance/calendar/")
    expect(page.locator('.fc-event[data-status="incomplete"]')).to_have_count(1)
    expect(page.locator('.fc-event[data-status="scheduled"]')).to_have_count(1)
    page.screenshot(path=str(screenshots / "calendar-month-statuses.png"), full_page=True)

    # In my own zone: the 02:00 UTC window is at 03:00 in Berlin (winter).
    page.fill("#id_zone", "Europe/Berlin")
    page.click("#zone-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Times are shown in Europe/Berlin")
    expect(page.locator(f'.fc-event[data-window="{window_id}"]')).to_contain_text("03:00 - 05:00")
    assert errors == [], errors
