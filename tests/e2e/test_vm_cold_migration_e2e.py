"""In a real browser against the lab: a shut-off Linux guest cold-migrated from its page.

The guest (its own, "e2ecold-" name) has a local qcow2 disk on labh1; it is booted once by the
lab knob, forced off, and moved to labh2's own storage with "start afterwards". The worker
(rqworker default) runs the move; the page follows the job over the websocket until it
reloads as Succeeded. The guest is removed afterwards wherever it ended up, disks included.
"""

from __future__ import annotations

import re
import uuid

import pytest
from e2e_support import console_errors, login, onboard_lab
from lab_support import run_knob, where
from playwright.sync_api import expect

from lab import hosts as lab_hosts
from lab.system import run

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(420)]


def lab_host(lab: dict, name: str) -> dict:
    return next(h for h in lab["hosts"] if h["name"] == name)


@pytest.fixture
def shut_off_guest(lab, portal):
    """A Linux guest of ours on labh1 with a local qcow2 disk, booted once, then forced off."""
    src = lab_host(lab, "labh1")
    name = f"e2ecold-{uuid.uuid4().hex[:6]}"
    try:
        made = run_knob("linux-guest", src["name"], guest=name, disk="local")
        run(["virsh", "-q", "-c", src["libvirt_uri"], "destroy", name])
        onboard_lab(portal)
        yield {"name": name, "uuid": made["uuid"], "src": "labh1", "dst": "labh2"}
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)


def test_cold_migration_from_the_guest_page(page, portal, lab, shut_off_guest, screenshots):
    errors = console_errors(page)
    name, src, dst = shut_off_guest["name"], shut_off_guest["src"], shut_off_guest["dst"]
    login(page, portal)
    page.click(f"#vms-table >> text={name}")
    expect(page.locator("h1")).to_contain_text(name)
    expect(page.locator("h1 .badge")).to_have_text("Shut off")

    # The form: every host (its own one only moves the disks onto a share), storage, start.
    page.click("#cold-migrate-button")
    expect(page.locator("h1")).to_contain_text(f"Cold-migrate {name}")
    destinations = page.locator("#field-destination label.radio")
    expect(destinations.filter(has_text=f"{src}: this host — only move its disks onto shared storage")).to_have_count(1)
    destinations.filter(has_text=re.compile(rf"^\s*{dst}(\s|$)")).locator("input").check()
    own_storage = page.locator('#field-share input[value=""]')
    expect(own_storage).to_be_checked()
    page.check("#id_start")
    page.screenshot(path=screenshots / "cold-wizard.png", full_page=True)
    page.click("#cold-submit")

    # The page follows the job live, reloads when it ends, and says where the guest is.
    expect(page).to_have_url(re.compile(r"/migrations/cold/\d+/$"))
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    expect(page.locator("[data-cold-status]")).to_have_text("Succeeded", timeout=240000)
    # The record ends first (the live region shows it), then the job refreshes both hosts'
    # inventory and ends: the page reloads with the outcome in its audit trail.
    expect(page.locator("#cold-audit")).to_contain_text("migration.cold.outcome", timeout=120000)
    expect(page.locator("#cold-job [data-job-status]")).to_have_text("Succeeded")
    expect(page.locator("#cold-job")).not_to_have_attribute("data-reload-on-finish", "")
    expect(page.locator("#cold-outcome")).to_contain_text(f"Defined on {dst} (running)")
    expect(page.locator("#cold-outcome")).to_contain_text(f"Not defined on {src} any more")
    grid = page.locator("#cold-checks #preflight-grid")
    for check in ("state", "identity", "disks", "storage", "destination"):
        expect(grid).to_contain_text(check)
    expect(grid.locator(".badge.verdict-fail")).to_have_count(0)
    files = page.locator("#cold-files")
    expect(files.locator("[data-sha-verified]")).to_have_count(1)
    expect(files).to_contain_text(f"/var/lib/libvirt/images/{name}.qcow2 → {dst}:/var/lib/libvirt/images/{name}.qcow2")
    # Default: the disk went host to host with a one-time key, not through the portal.
    expect(files.locator("[data-via=direct]")).to_have_text(f"streamed from {src} to {dst}")
    expect(files).to_contain_text("MiB/s")
    expect(page.locator("#cold-copied")).to_contain_text("MiB")
    expect(page.locator("#cold-speed")).to_contain_text("MiB/s")
    expect(page.locator("#cold-log")).to_contain_text("matches on both sides")
    expect(page.locator("#cold-migrate-back")).to_have_text(f"Migrate back to {src}")
    page.screenshot(path=screenshots / "cold-done.png", full_page=True)
    assert where(lab["hosts"], shut_off_guest["uuid"]) == {dst: "running"}

    # Migrate back opens the form again, with the former source preselected.
    page.click("#cold-migrate-back")
    expect(page.locator("#cold-back")).to_contain_text(f"back to {src}")
    expect(page.locator("#field-destination input:checked")).to_have_count(1)
    expect(page.locator("#field-destination label.radio", has=page.locator("input:checked"))).to_contain_text(src)
    # The guest runs now: the form says so and does not submit.
    expect(page.locator("#cold-submit")).to_be_disabled()
    assert not errors, errors
