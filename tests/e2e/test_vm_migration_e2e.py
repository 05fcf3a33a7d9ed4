"""In a real browser against the lab: the migration wizard from a guest's page to a finished
migration with its chart, and the Migrate back button. The worker (rqworker default
migrations) runs the preflights and the migration; the page follows over the websocket.

Uses a heartbeat guest of its own (removed afterwards wherever it ended up) on the lab's
third host, migrated to the first (other engineers' knobs mostly hit the second).
"""

from __future__ import annotations

import re

import pytest
from e2e_support import console_errors, login, onboard_lab
from lab_support import heartbeat_guest, knob, unique, where
from playwright.sync_api import expect

from lab import hosts as lab_hosts

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(300)]


def open_wizard(page, portal, name):
    login(page, portal)
    page.click(f"#vms-table >> text={name}")
    expect(page.locator("h1")).to_contain_text(name)
    page.click("#migrate-button")
    expect(page.locator("h1")).to_contain_text(f"Migrate {name}")


@pytest.fixture
def lab_guest(lab, portal):
    """Lab hosts onboarded into the module's portal, and a heartbeat guest of ours on the third one."""
    src, dst = lab["hosts"][2], lab["hosts"][0]
    with heartbeat_guest(src, prefix="e2e") as (name, domain_uuid):
        onboard_lab(portal)
        yield {"name": name, "uuid": domain_uuid, "src": src["name"], "dst": dst["name"]}


def test_wizard_happy_path(page, portal, lab_guest, screenshots):
    errors = console_errors(page)
    name, src, dst = lab_guest["name"], lab_guest["src"], lab_guest["dst"]
    # From the inventory to the guest's page, then Migrate.
    open_wizard(page, portal, name)
    expect(page.locator("#id_mode_0")).to_be_checked()
    expect(page.locator("#id_undefine_source")).to_be_checked()
    page.screenshot(path=screenshots / "migration-wizard.png", full_page=True)

    # Every other host is checked in the background; the list fills in by itself.
    page.click("#check-destinations")
    expect(page.locator("h1")).to_contain_text(f"Where should {name} go?")
    row = page.locator(f'tr[data-candidate="{dst}"]')
    expect(row.locator(".badge")).to_have_text(re.compile("pass|warn"), timeout=60000)
    expect(page.locator("#candidates-table[data-pending]")).to_have_count(0, timeout=60000)
    page.screenshot(path=screenshots / "migration-destinations.png", full_page=True)

    # The grid for the chosen destination, then confirm.
    row.locator("text=Choose").click()
    expect(page.locator("#preflight-grid")).to_contain_text("host-identity")
    expect(page.locator("#preflight-grid")).to_contain_text("ports")
    expect(page.locator("#virsh-command")).to_contain_text("migrate --live --p2p --persistent --undefinesource")
    expect(page.locator("#confirm-migration")).to_be_enabled()
    page.screenshot(path=screenshots / "migration-grid.png", full_page=True)
    page.click("#confirm-migration")

    # The migration page follows the job live until it succeeds, with its chart and figures.
    expect(page).to_have_url(re.compile(r"/migrations/\d+/$"))
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    expect(page.locator("[data-migration-status]").first).to_have_text("Succeeded", timeout=120000)
    expect(page.locator("#result-downtime")).to_have_text(re.compile(r"\d+ ms"))
    # The guest's own pause follows the success (after both inventories are refreshed) and fills in live.
    expect(page.locator("#result-heartbeat")).to_contain_text("continuous", timeout=60000)
    expect(page.locator("#migration-chart")).to_be_visible()
    expect(page.locator("#chart-empty")).to_be_hidden()
    expect(page.locator("#migrate-back")).to_have_text(f"Migrate back to {src}")
    expect(page.locator("#migration-audit")).to_contain_text("migration.outcome")
    page.wait_for_timeout(500)  # let the chart settle after the last redraw
    page.screenshot(path=screenshots / "migration-done.png", full_page=True)

    # Migrate back opens the wizard with the same options and the source preselected.
    page.click("#migrate-back")
    expect(page.locator(".alert-info")).to_contain_text(f"Migrating back to {src}")
    assert not errors, errors


@pytest.fixture
def dirty_guest(lab, portal):
    """A guest that rewrites ~96 MiB of memory in a loop, on the lab's third host."""
    src, dst = lab["hosts"][2], lab["hosts"][0]
    name = unique("e2e-dirty")
    try:
        with knob("dirty-guest", src, guest=name) as made:
            onboard_lab(portal)
            yield {"name": name, "uuid": made["uuid"], "src": src["name"], "dst": dst["name"]}
    finally:
        lab_hosts.remove_guest(name)


def test_live_progress_chart_and_abort(page, portal, lab, dirty_guest, screenshots):
    """A migration limited to 16 MiB/s of a guest dirtying far more: the page shows passes,
    rates and the chart live; Abort keeps the guest on its source."""
    errors = console_errors(page)
    name, src, dst = dirty_guest["name"], dirty_guest["src"], dirty_guest["dst"]
    open_wizard(page, portal, name)
    page.fill("#id_bandwidth_mibps", "16")
    page.click("#check-destinations")
    row = page.locator(f'tr[data-candidate="{dst}"]')
    expect(row.locator(".badge")).to_have_text(re.compile("pass|warn"), timeout=60000)
    row.locator("text=Choose").click()
    expect(page.locator("#virsh-command")).to_contain_text("--bandwidth 16")
    page.click("#confirm-migration")

    expect(page.locator("[data-migration-status]").first).to_have_text("Migrating", timeout=60000)
    expect(page.locator('[data-live-field="iteration"]')).to_have_text(re.compile(r"^[2-9]$"), timeout=90000)
    expect(page.locator(".progress-text")).to_contain_text(re.compile(r"of memory sent, pass [2-9]"))
    expect(page.locator('[data-live-field="bps"]')).to_have_text(re.compile(r"MiB/s"))
    expect(page.locator("#chart-empty")).to_be_hidden()
    page.wait_for_timeout(1500)
    page.screenshot(path=screenshots / "migration-live.png", full_page=True)

    page.click("#abort-migration")
    expect(page.locator("[data-migration-status]").first).to_have_text("Aborted", timeout=60000)
    expect(page.locator(".alert-warn").first).to_contain_text(f"stayed on {src}")
    page.wait_for_timeout(500)
    page.screenshot(path=screenshots / "migration-aborted.png", full_page=True)
    assert where(lab["hosts"], dirty_guest["uuid"]) == {src: "running"}
    assert not errors, errors
