"""What the browser test modules share: signing in, the page's console errors, the lab's hosts
in a module's portal, and stopping the processes a module started.

Imported by the test modules of this folder (pytest puts it on sys.path). What they share with
the lab's integration tests (own guests, knobs, where a guest is, undoing an NFS share) is in
tests/lab_support.py.
"""

from __future__ import annotations

import re
import subprocess

from playwright.sync_api import expect


def stop(proc: subprocess.Popen, *, timeout: float = 10) -> None:
    """Terminate a process the tests started, killing it if it does not end within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def login(page, portal) -> None:
    """Sign in as the portal's admin; the inventory opens."""
    page.goto("/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", portal.admin_password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/hosts/$"))


def console_errors(page) -> list[str]:
    """The page's console errors from now on; the list fills as they happen."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def onboard_lab(portal) -> None:
    """The lab's hosts in this module's portal, with their guests as they are now."""
    portal.manage("lab_onboard")
    portal.manage("inventory_refresh", "--wait")
