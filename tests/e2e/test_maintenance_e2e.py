"""In a real browser against the lab: host maintenance from the host page. An operator opens the
plan (the local-disk guest is a blocker, with its fix), chooses to shut that guest down for the
maintenance, confirms, watches the rows complete, sees the host's "empty" banner, exits and
watches the guests come home. A viewer sees the plan but no buttons.

labh1 (the lab's first host) gets two heartbeat guests of ours and one guest with a writable
local disk; the lab's own guest on labh1 is part of the evacuation too. Where a guest runs is
asked of libvirt on every lab host. The worker (rqworker default migrations) runs the queue.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import urlparse

import pytest
from e2e_support import console_errors, login, onboard_lab
from lab_support import heartbeat_guest, knob, unique, where
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(600)]

VIEWER, VIEWER_PASSWORD = "vera", "e2e-viewer-password-1"


@pytest.fixture(scope="module")
def evacuee(lab, portal):
    """Our guests on labh1, onboarded: {"host", "heartbeat": [(name, uuid)…], "local": (name, uuid)}."""
    src = lab["hosts"][0]
    local = unique("e2e-local")
    with contextlib.ExitStack() as stack:
        beats = [stack.enter_context(heartbeat_guest(src, prefix="e2e-mnt")) for _ in range(2)]
        made = stack.enter_context(knob("local-disk-guest", src, guest=local))
        onboard_lab(portal)
        portal.manage("shell", "-c", (
            "from django.contrib.auth.models import Group, User; "
            f"u = User.objects.create_user('{VIEWER}', password='{VIEWER_PASSWORD}'); "
            "u.groups.add(Group.objects.get_or_create(name='Viewer')[0])"
        ))
        yield {"host": src["name"], "heartbeat": beats, "local": (local, made["uuid"])}


def open_host(page, name):
    page.goto("/hosts/")
    page.click(f"#hosts-table >> text={name}")
    expect(page.locator("h1")).to_contain_text(name)
    return int(re.search(r"/hosts/(\d+)/", page.url).group(1))


def confirm_plan(page, attempts: int = 3) -> None:
    """Confirm the plan shown. The lab's hosts share one kernel, so their free memory is nearly equal
    and moves between two gathers: spread may then pick the other host, the service refuses the
    changed plan and the page shows the new one, which is confirmed in turn."""
    for _ in range(attempts):
        with page.expect_navigation(timeout=60000):
            page.click("#confirm-maintenance")
        if re.search(r"/maintenance/\d+/$", page.url):
            return
        expect(page.locator(".plan-error")).to_contain_text("The plan changed since it was shown")
        expect(page.locator("#plan-blockers")).to_be_visible()  # the new plan, to confirm
    raise AssertionError(f"the plan changed at each of {attempts} confirms")


def test_viewer_sees_the_plan_but_no_buttons(page, portal, evacuee):
    errors = console_errors(page)
    page.goto("/login/")
    page.fill("#id_username", VIEWER)
    page.fill("#id_password", VIEWER_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/hosts/$"))
    host_id = open_host(page, evacuee["host"])
    expect(page.locator("#enter-maintenance")).to_have_count(0)
    page.goto(f"/maintenance/hosts/{host_id}/enter/")
    local = evacuee["local"][0]
    expect(page.locator("#plan-blockers")).to_contain_text(local, timeout=60000)
    for name, _ in evacuee["heartbeat"]:
        expect(page.locator(f'#plan-table tr[data-guest="{name}"]')).to_contain_text("Live migration")
    expect(page.locator("#confirm-maintenance")).to_have_count(0)
    expect(page.locator("#recalculate")).to_have_count(0)
    expect(page.locator("main form")).to_have_count(0)
    assert not errors, errors


def test_enter_maintenance_empty_banner_and_the_way_home(page, portal, lab, evacuee, screenshots):
    errors = console_errors(page)
    host, (local, local_uuid) = evacuee["host"], evacuee["local"]
    login(page, portal)
    host_id = open_host(page, host)
    expect(page.locator("#maintenance-banner")).to_have_count(0)

    # The plan: the local-disk guest cannot move; its fix is said before anything runs.
    page.click("#enter-maintenance")
    expect(page.locator("h1")).to_contain_text(f"Empty {host} for maintenance")
    blockers = page.locator("#plan-blockers")
    expect(blockers).to_contain_text(local)
    expect(blockers).to_contain_text("What to do:")
    for name, _ in evacuee["heartbeat"]:
        row = page.locator(f'#plan-table tr[data-guest="{name}"]')
        expect(row).to_contain_text("Live migration")
        expect(row.locator("select")).to_have_value("")  # automatic destination, overridable
    page.screenshot(path=screenshots / "maintenance-plan.png", full_page=True)

    # Recalculate follows the per-guest choices (and back again).
    local_row = page.locator(f'#plan-table tr[data-guest="{local}"]')
    local_row.locator('input[name="shutdown"]').check()
    page.click("#recalculate")
    expect(local_row).to_contain_text("Shut down, start after")
    expect(page.locator("#plan-blockers")).to_contain_text("Every running guest has a destination")
    local_row.locator('input[name="shutdown"]').uncheck()
    page.click("#recalculate")
    expect(page.locator("#plan-blockers")).to_contain_text(local)

    # Confirm: the evacuation page follows the rows live until they are settled.
    confirm_plan(page)
    evacuation_path = urlparse(page.url).path
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    # (The lab's tiny guests report no memory totals in libvirt's job stats, so their bars go from
    # 0 to 100 when each row settles; bars that move with the samples are tested in
    # tests/unit/maintenance/test_evacuation_live.py and test_maintenance_pages.py.)
    page.locator('#evacuation-items tr[data-item-status="running"]').first.wait_for(timeout=60000)
    page.screenshot(path=screenshots / "maintenance-evacuation-running.png", full_page=True)
    # The local-disk guest still runs there: incomplete, and the outcome says who and why.
    expect(page.locator("#evacuation-status")).to_have_text("Incomplete", timeout=240000)
    expect(page.locator("#evacuation-outcome")).to_contain_text(f"still on {host}: {local}")
    for name, _ in evacuee["heartbeat"]:
        expect(page.locator(f'#evacuation-items tr[data-item="{name}"]')).to_have_attribute("data-item-status", "succeeded")
        expect(page.locator(f'#evacuation-items tr[data-item="{name}"] progress')).to_have_attribute("value", "100")
    page.screenshot(path=screenshots / "maintenance-evacuation-done.png", full_page=True)
    for name, uuid in evacuee["heartbeat"]:
        found = where(lab["hosts"], uuid)
        assert host not in found and list(found.values()) == ["running"], (name, found)
    assert where(lab["hosts"], local_uuid) == {host: "running"}

    # The host page never calls it empty while a guest runs on it ...
    page.click("text=Host page")
    banner = page.locator("#maintenance-banner")
    expect(banner).to_contain_text("not empty")
    expect(banner).to_contain_text(local)
    page.screenshot(path=screenshots / "maintenance-host-not-empty.png", full_page=True)
    # ... and says so, live, once the admin has powered that guest off.
    page.click(f"#host-body a:text-is('{local}')")
    page.click("text=Force off")
    page.click(".confirm button[type=submit]")
    page.goto(f"/hosts/{host_id}/")
    expect(banner).to_contain_text(re.compile(rf"{host} is empty and in maintenance since \d\d:\d\d"), timeout=60000)
    expect(banner).to_contain_text("safe to power off")
    page.screenshot(path=screenshots / "maintenance-host-empty.png", full_page=True)

    # Exit: the way home, then watch it.
    page.click("#exit-maintenance")
    for name, _ in evacuee["heartbeat"]:
        expect(page.locator(f'#return-table tr[data-guest="{name}"]')).to_contain_text(f"→ {host}")
    expect(page.locator(f'#return-table tr[data-guest="{local}"]')).to_have_count(0)  # it never left
    page.screenshot(path=screenshots / "maintenance-exit.png", full_page=True)
    page.click("#exit-return")
    expect(page).to_have_url(re.compile(r"/maintenance/\d+/$"))
    expect(page.locator("#evacuation-status")).to_have_text("Succeeded", timeout=240000)
    expect(page.locator("#returns-link")).to_have_attribute("href", evacuation_path)
    page.screenshot(path=screenshots / "maintenance-return-done.png", full_page=True)
    for name, uuid in evacuee["heartbeat"]:
        assert where(lab["hosts"], uuid) == {host: "running"}, name
    page.click("text=Host page")
    expect(page.locator("#maintenance-banner")).to_have_count(0)
    expect(page.locator("#enter-maintenance")).to_be_visible()
    assert not errors, errors
