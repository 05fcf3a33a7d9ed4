"""In a real browser against the lab: save a running guest's state with a note from its page, see
it listed on the guest's card and in the saved-states list, restore it from the state's page; the
real worker does the work and the guest's heartbeat counter goes on from where it stopped.
Screenshots: var/e2e-screenshots/guest-state-*.png.
"""

from __future__ import annotations

import time

import pytest
from e2e_support import console_errors, login, onboard_lab
from lab.heartbeat import report
from lab_support import heartbeat_guest, sh
from playwright.sync_api import expect

from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(300)]
NOTE = "before upgrading <postgres> 15 -> 16"


def reload_until(page, selector: str, text: str) -> None:
    def shows():
        page.reload()
        return text in page.locator(selector).inner_text()

    wait_until(shows, timeout=60, what=f"{selector} to show {text!r}", interval=0.5)


def test_save_with_a_note_then_restore_from_the_guest_page(page, portal, lab, screenshots):
    lab_host = lab["hosts"][0]
    directory = f"/var/lib/libvirt/vmportal-e2e-{time.time_ns()}"
    errors = console_errors(page)
    with heartbeat_guest(lab_host, prefix="e2e-save") as (name, _uuid):
        try:
            onboard_lab(portal)
            login(page, portal)
            page.click(f"#hosts-table a:text-is('{lab_host['name']}')")
            page.click(f"a:text-is('{name}')")
            page.fill("#save-form input[name=directory]", directory)
            page.fill("#save-form input[name=note]", NOTE)
            page.click("#save-form button[type=submit]")
            expect(page.locator("h1")).to_contain_text(f"of {name}")
            reload_until(page, "#state-status", "Saved")
            at_save = report(name).last_counter
            page.screenshot(path=screenshots / "guest-state-saved.png", full_page=True)

            page.goto("/saved-states/")
            row = page.locator("#saved-states-table tr", has_text=name)
            expect(row).to_contain_text(NOTE)
            expect(row).to_contain_text("Saved")
            page.screenshot(path=screenshots / "guest-state-list.png", full_page=True)
            row.locator("a").first.click()
            since = time.time()
            page.click("#restore-form button[type=submit]")
            reload_until(page, "#restores-table", "Restored")
            wait_until(lambda: (report(name, since=since).last_counter or 0) >= at_save + 3, timeout=30,
                       what=f"{name} to count on after the restore")
            assert report(name, since=since).first_counter in (at_save + 1, at_save + 2)
            page.screenshot(path=screenshots / "guest-state-restored.png", full_page=True)
            assert errors == []
        finally:
            sh(lab_host, ["rm", "-rf", "--", directory])
