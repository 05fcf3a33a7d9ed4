"""In a real browser against the lab: an admin makes a host group and an operator for it; the
operator sees only the group's hosts, migrates a guest inside it, and a forged POST on a host
outside it is refused (403, audited).

The group holds the lab's third and first hosts (the guest moves 3 → 1, as in the migration
browser test); the second host stays outside it.
"""

from __future__ import annotations

import re

import pytest
from e2e_support import login, onboard_lab
from lab_support import heartbeat_guest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(300)]

OPERATOR_PASSWORD = "team operator pass 42"


def test_group_operator_sees_and_migrates_inside_and_is_refused_outside(page, browser, portal, lab, screenshots):
    src, outside, dst = lab["hosts"][2]["name"], lab["hosts"][1]["name"], lab["hosts"][0]["name"]
    with heartbeat_guest(lab["hosts"][2], prefix="e2e-grp") as (name, _uuid):
        onboard_lab(portal)
        login(page, portal)
        outside_url = page.locator(f"#hosts-table a:text-is('{outside}')").get_attribute("href")

        # The admin adds the operator (no global role) and a group with its hosts and grant.
        page.goto("/people/new/")
        page.fill("#id_username", "opal")
        page.select_option("#id_role", "")
        page.fill("#id_password", OPERATOR_PASSWORD)
        page.click("section.card button[type=submit]")
        expect(page.locator("h1")).to_have_text("opal")
        page.goto("/hosts/groups/")
        page.fill("#group-form #id_name", "team-blue")
        page.locator("#group-form label", has_text=src).locator("input").check()
        page.locator("#group-form label", has_text=dst).locator("input").check()
        page.click("#group-form button[type=submit]")
        page.select_option("#grant-form #id_group", label="team-blue")
        page.select_option("#grant-form #id_user", label="opal")
        page.select_option("#grant-form #id_role", "Operator")
        page.click("#grant-form button[type=submit]")
        expect(page.locator("#groups-table")).to_contain_text("opal (Operator)")
        page.screenshot(path=screenshots / "host-groups.png", full_page=True)

        # The operator sees the group's hosts only.
        context = browser.new_context(base_url=portal.url, viewport={"width": 1360, "height": 900})
        op = context.new_page()
        op.goto("/login/")
        op.fill("#id_username", "opal")
        op.fill("#id_password", OPERATOR_PASSWORD)
        op.click("button[type=submit]")
        expect(op).to_have_url(re.compile(r"/hosts/$"))
        hosts = op.locator("#hosts-table")
        expect(hosts).to_contain_text(src)
        expect(hosts).to_contain_text(dst)
        expect(hosts).not_to_contain_text(outside)
        op.screenshot(path=screenshots / "host-groups-operator-inventory.png", full_page=True)

        # A forged POST on the host outside the group: 403.
        token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
        forged = op.request.post(f"{outside_url}refresh/", headers={"X-CSRFToken": token,
                                                                     "Referer": portal.url + "/hosts/"})
        assert forged.status == 403

        # The guest inside the group migrates, and only the group's hosts are offered.
        op.click(f"#vms-table >> text={name}")
        op.click("#migrate-button")
        op.click("#check-destinations")
        expect(op.locator("h1")).to_contain_text(f"Where should {name} go?")
        expect(op.locator(f'tr[data-candidate="{outside}"]')).to_have_count(0)
        row = op.locator(f'tr[data-candidate="{dst}"]')
        expect(row.locator(".badge")).to_have_text(re.compile("pass|warn"), timeout=60000)
        row.locator("text=Choose").click()
        op.click("#confirm-migration")
        expect(op.locator("[data-migration-status]").first).to_have_text("Succeeded", timeout=120000)
        op.screenshot(path=screenshots / "host-groups-operator-migrated.png", full_page=True)
        context.close()

        # The refusal is in the audit.
        page.goto("/audit/?action=request.refused")
        expect(page.locator("body")).to_contain_text("request.refused")
