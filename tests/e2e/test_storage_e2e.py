"""In a real browser against the lab: the NFS wizard's happy path, from the form to the green grid.

daphne + redis + rqworker (tests/e2e/conftest.py) with the lab's hosts onboarded; the jobs run in
the worker and the page follows them over websockets. NFS-Ganesha on the middle lab host serves
the other two. Everything changed on the lab hosts is undone at the end (unique paths).
Screenshots: var/e2e-screenshots/storage-*.png.
"""

from __future__ import annotations

import re
import time

import pytest
from e2e_support import console_errors, login
from lab_support import sh, undo_share
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(600)]


@pytest.fixture
def lab_paths(lab, portal):
    """Server: the middle lab host (the integration test serves from the last, the lab's own NFS
    test from the first), clients: the others. Undoes this test's share, and only it, afterwards."""
    portal.manage("lab_onboard")
    hosts = lab["hosts"]
    server = hosts[len(hosts) // 2]
    clients = [h for h in hosts if h is not server]
    unique = time.time_ns()
    export, mount = f"/srv/vmp-e2e-{unique}", f"/mnt/vmp-e2e-{unique}"
    paths = {"server": server, "clients": clients, "export": export, "mount": mount, "stamps": set()}
    yield paths
    undo_share(server, clients, export, mount, paths["stamps"])


def remember_stamp(page, paths) -> None:
    """The plan's backup stamp, so the cleanup removes exactly this test's backups."""
    match = re.search(r"vmportal-HOST-(\d{8}T\d{6}Z)", page.locator("#plan h2").inner_text())
    assert match, "no backup stamp on the plan"
    paths["stamps"].add(match.group(1))


def fill_wizard(page, paths, *, export: str | None = None, mount: str | None = None) -> None:
    """The share form: this test's server and clients, and its paths unless others are given."""
    server = paths["server"]
    page.select_option("#id_server", label=f"{server['name']} ({server['address']})")
    for client in paths["clients"]:
        page.check(f"#field-clients label:has-text('{client['name']} ') input")
    page.fill("#id_export_path", export or paths["export"])
    page.fill("#id_mount_path", mount or paths["mount"])


def test_nfs_wizard_happy_path_with_grid(page, portal, lab_paths, screenshots):
    errors = console_errors(page)
    server, clients = lab_paths["server"], lab_paths["clients"]
    login(page, portal)

    page.click("nav.mainnav >> text=Storage")
    expect(page.locator("h1")).to_have_text("Shared storage")
    page.click("text=New NFS share")
    expect(page.locator("h1")).to_have_text("New NFS share")

    # A bad path is refused field by field, before anything runs.
    fill_wizard(page, lab_paths, export="/srv/x;reboot", mount="/etc")
    page.click("button:has-text('Read the hosts and show the plan')")
    expect(page.locator("#field-export_path .error")).to_contain_text("';'")
    expect(page.locator("#field-mount_path .error")).to_contain_text("system directory")

    page.screenshot(path=screenshots / "storage-wizard-errors.png", full_page=True)

    page.goto("/storage/new/")
    fill_wizard(page, lab_paths)
    page.screenshot(path=screenshots / "storage-wizard.png", full_page=True)
    page.click("button:has-text('Read the hosts and show the plan')")

    # The plan (dry run) arrives from the worker; the page updates itself.
    expect(page.locator("#dry-run-banner")).to_contain_text("Nothing has changed on any host yet", timeout=120_000)
    remember_stamp(page, lab_paths)
    expect(page.locator("#plan")).to_contain_text("systemctl restart nfs-ganesha")
    expect(page.locator("#plan")).to_contain_text(f"mount -t nfs -o vers=4.1 {server['address']}:{lab_paths['export']} {lab_paths['mount']}")
    expect(page.locator("#plan")).to_contain_text("No active firewall")
    page.screenshot(path=screenshots / "storage-plan.png", full_page=True)

    page.click("#apply-plan")
    expect(page.locator("[data-setup-status]")).to_have_attribute("data-setup-status", "applying", timeout=30_000)
    expect(page.locator("[data-job-log]")).to_contain_text("▶", timeout=60_000)
    expect(page.locator(".plan-step .badge.step-changed").first).to_be_visible(timeout=60_000)
    page.screenshot(path=screenshots / "storage-progress.png", full_page=True)

    expect(page.locator("#grid")).to_contain_text("all green", timeout=240_000)
    expect(page.locator("[data-setup-status]")).to_have_attribute("data-setup-status", "succeeded")
    rows = page.locator("#grid tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i).locator(".cell-no")).to_have_count(0)
    expect(page.locator("#grid")).to_contain_text(server["name"])
    page.locator("#grid").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "storage-grid.png", full_page=True)

    # The share is on the client's host page.
    page.goto("/hosts/")
    page.click(f"#hosts-table >> text={clients[0]['name']}")
    expect(page.locator("#host-shares")).to_contain_text(lab_paths["mount"])
    expect(page.locator("#host-shares")).to_contain_text("Ready")
    page.locator("#host-shares").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "storage-host-page.png", full_page=True)
    assert not errors, errors


def test_a_failing_step_shows_its_output_and_fix_and_plan_again_resumes(page, portal, lab_paths, screenshots):
    server, clients = lab_paths["server"], lab_paths["clients"]
    login(page, portal)
    page.goto("/storage/new/")
    fill_wizard(page, lab_paths)
    page.click("button:has-text('Read the hosts and show the plan')")
    expect(page.locator("#dry-run-banner")).to_be_visible(timeout=120_000)
    remember_stamp(page, lab_paths)

    # Between the plan and the apply, a file appears where the mount point should be.
    blocker = clients[-1]
    sh(blocker, ["touch", lab_paths["mount"]], check=True)
    try:
        page.click("#apply-plan")
        expect(page.locator("#failure")).to_contain_text(f"{blocker['name']} · Create the mount point", timeout=240_000)
        expect(page.locator("#failure")).to_contain_text("File exists")
        expect(page.locator("#failure")).to_contain_text("What to do:")
        expect(page.locator(f"[data-step='{blocker['name']}:mount-dir'] .badge")).to_have_text("failed")
        page.screenshot(path=screenshots / "storage-failure.png", full_page=True)
    finally:
        sh(blocker, ["rm", "-f", lab_paths["mount"]], check=True)

    page.click("button:has-text('Plan again')")
    expect(page.locator("#dry-run-banner")).to_be_visible(timeout=120_000)
    remember_stamp(page, lab_paths)
    page.click("#apply-plan")
    expect(page.locator("#grid")).to_contain_text("all green", timeout=240_000)
    expect(page.locator("#setup-done")).to_contain_text("already done")
    expect(page.locator(f"[data-step='{server['name']}:export-config'] .badge")).to_have_text("already done")
    expect(page.locator(f"[data-step='{blocker['name']}:mount-dir'] .badge")).to_have_text("done")
