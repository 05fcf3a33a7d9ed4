"""In a real browser against the lab: the NFS wizard's happy path, from the form to the green grid.

daphne + redis + rqworker (tests/e2e/conftest.py) with the lab's hosts onboarded; the jobs run in
the worker and the page follows them over websockets. NFS-Ganesha on the last lab host serves
the other two. Everything changed on the lab hosts is undone at the end (unique paths).
Screenshots: var/e2e-screenshots/storage-*.png.
"""

from __future__ import annotations

import re
import subprocess
import time

import libvirt
import pytest
from playwright.sync_api import expect

from lab.hosts import ssh_argv
from storage import libvirt_pool
from storage.plan import managed_block, pool_name_for

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(600)]

GANESHA_CONF = "/etc/ganesha/ganesha.conf"
FSTAB = "/etc/fstab"


def sh(host: dict, argv: list[str], check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(host["address"], argv), capture_output=True, text=True, timeout=60, check=check, input=input)


def login(page, portal):
    page.goto("/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", portal.admin_password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/hosts/$"))


def write(host: dict, path: str, text: str) -> None:
    """Replace a file's content in place (tee truncates): the lab's /etc/fstab is a bind-mounted file."""
    sh(host, ["tee", path], check=True, input=text)


def drop_block(host: dict, path: str, kind: str, item: str) -> None:
    """Remove our marked block, only ours (other tests may use the same file at the same time)."""
    text = sh(host, ["cat", path], check=True).stdout
    block = managed_block(text, kind, item)
    if block:
        write(host, path, text.replace(block, "", 1))


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
    for client in clients:
        sh(client, ["umount", mount])
        drop_block(client, FSTAB, "mount", mount)
        for stamp in paths["stamps"]:
            sh(client, ["rm", "-f", f"{FSTAB}.vmportal-{client['name']}-{stamp}"])
        sh(client, ["rmdir", mount])
        conn = libvirt.open(client["libvirt_uri"])
        try:
            libvirt_pool.stop_and_undefine(conn, pool_name_for(mount))
        finally:
            conn.close()
    drop_block(server, GANESHA_CONF, "export", export)
    for stamp in paths["stamps"]:
        sh(server, ["rm", "-f", f"{GANESHA_CONF}.vmportal-{server['name']}-{stamp}"])
    conf = sh(server, ["cat", GANESHA_CONF], check=True).stdout
    if "EXPORT" in "\n".join(line.split("#", 1)[0] for line in conf.splitlines()):
        sh(server, ["systemctl", "restart", "nfs-ganesha"])
    else:
        sh(server, ["systemctl", "stop", "nfs-ganesha"])
        sh(server, ["systemctl", "stop", "rpcbind"])
    sh(server, ["rm", "-rf", "--one-file-system", export])
    assert sh(server, ["test", "-e", export]).returncode != 0
    for client in clients:
        assert f"vmportal mount {mount}" not in sh(client, ["cat", FSTAB], check=True).stdout


def remember_stamp(page, paths) -> None:
    """The plan's backup stamp, so the cleanup removes exactly this test's backups."""
    match = re.search(r"vmportal-HOST-(\d{8}T\d{6}Z)", page.locator("#plan h2").inner_text())
    assert match, "no backup stamp on the plan"
    paths["stamps"].add(match.group(1))


def test_nfs_wizard_happy_path_with_grid(page, portal, lab_paths, screenshots):
    console_errors = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    server, clients = lab_paths["server"], lab_paths["clients"]
    login(page, portal)

    page.click("nav.mainnav >> text=Storage")
    expect(page.locator("h1")).to_have_text("Shared storage")
    page.click("text=New NFS share")
    expect(page.locator("h1")).to_have_text("New NFS share")

    # A bad path is refused field by field, before anything runs.
    page.select_option("#id_server", label=f"{server['name']} ({server['address']})")
    for client in clients:
        page.check(f"#field-clients label:has-text('{client['name']} ') input")
    page.fill("#id_export_path", "/srv/x;reboot")
    page.fill("#id_mount_path", "/etc")
    page.click("button:has-text('Read the hosts and show the plan')")
    expect(page.locator("#field-export_path .error")).to_contain_text("';'")
    expect(page.locator("#field-mount_path .error")).to_contain_text("system directory")

    page.screenshot(path=screenshots / "storage-wizard-errors.png", full_page=True)

    page.goto("/storage/new/")
    page.select_option("#id_server", label=f"{server['name']} ({server['address']})")
    for client in clients:
        page.check(f"#field-clients label:has-text('{client['name']} ') input")
    page.fill("#id_export_path", lab_paths["export"])
    page.fill("#id_mount_path", lab_paths["mount"])
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
    assert not console_errors, console_errors


def test_a_failing_step_shows_its_output_and_fix_and_plan_again_resumes(page, portal, lab_paths, screenshots):
    server, clients = lab_paths["server"], lab_paths["clients"]
    login(page, portal)
    page.goto("/storage/new/")
    page.select_option("#id_server", label=f"{server['name']} ({server['address']})")
    for client in clients:
        page.check(f"#field-clients label:has-text('{client['name']} ') input")
    page.fill("#id_export_path", lab_paths["export"])
    page.fill("#id_mount_path", lab_paths["mount"])
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
