"""In a real browser against the lab: the fleet page. Two heartbeat guests of ours on labh1 make
it the busiest host; the page explains the balance recommendation in numbers, each host's load
chart and sparkline draw from measured lab data with a table behind it, an operator applies it and
lands on the run's page; the migrations list charts those migrations and a click on a point opens
one. Where guests run is asked of libvirt.
"""

from __future__ import annotations

import contextlib
import re

import pytest
from e2e_support import console_errors, login, onboard_lab
from lab import config
from lab_support import heartbeat_guest, where
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def small_budget(portal_template):
    """Set before this module's portal starts: a budget where a heartbeat guest is a quarter of a host."""
    portal_template.env["VMPORTAL_FLEET_MEMORY_BUDGET_MIB"] = str(4 * config.HEARTBEAT_MEMORY_MIB)
    yield
    portal_template.env.pop("VMPORTAL_FLEET_MEMORY_BUDGET_MIB", None)


@pytest.fixture(scope="module")
def busy(small_budget, lab, portal):
    src = lab["hosts"][0]
    with contextlib.ExitStack() as stack:
        beats = [stack.enter_context(heartbeat_guest(src, prefix="e2e-bal")) for _ in range(2)]
        onboard_lab(portal)
        portal.manage("inventory_refresh", "--wait")  # a second refresh: CPU deltas for the charts
        yield {"host": src["name"], "heartbeat": beats}


def test_fleet_page_explains_charts_and_applies(busy, lab, portal, page, screenshots):
    errors = console_errors(page)
    login(page, portal)
    page.goto("/fleet/")
    rec = page.locator("article.recommendation").first
    expect(rec).to_contain_text(f"{busy['host']} at")
    expect(rec).to_contain_text("bring the spread from")
    expect(page.locator(".load-chart .uplot").first).to_be_visible()
    page.locator(".load-history details summary").first.click()
    expect(page.locator(".load-table tbody tr").first).to_be_visible()
    expect(page.locator("#fleet-hosts .sparkline .uplot").first).to_be_visible()
    expect(page.locator("#fleet-hosts .sparkline-text").first).to_contain_text("mem ")
    page.screenshot(path=str(screenshots / "fleet.png"), full_page=True)
    moves = rec.locator("tbody").first.locator("tr")
    names = [moves.nth(i).locator("td").first.inner_text() for i in range(moves.count())]
    rec.locator("input[name=confirm]").check()
    with page.expect_navigation():
        rec.locator("form[action$='/apply/'] button[type=submit]").click()
    assert re.search(r"/maintenance/\d+/$", page.url), page.url
    expect(page.locator("body")).to_contain_text("Succeeded", timeout=240000)
    page.screenshot(path=str(screenshots / "fleet-applied.png"), full_page=True)
    ours = {n: u for n, u in busy["heartbeat"]}
    for name in names:
        if name in ours:
            assert busy["host"] not in where(lab["hosts"], ours[name])
    # The migrations list charts them; a click on a point opens that migration.
    page.goto("/migrations/")
    points = page.locator('.migration-history [data-chart="points"] .uplot')
    expect(points).to_be_visible()
    expect(page.locator('.migration-history [data-chart="histogram"] .uplot')).to_be_visible()
    page.screenshot(path=str(screenshots / "migration-history.png"), full_page=True)
    spot = page.evaluate("""() => {
        const box = document.querySelector('.migration-history [data-chart="points"]');
        const u = box._chart, i = u.data[0].length - 1, r = u.over.getBoundingClientRect();
        const y = u.data[1][i] != null ? u.valToPos(u.data[1][i], "s") : u.valToPos(u.data[2][i], "ms");
        return {x: r.left + u.valToPos(u.data[0][i], "x"), y: r.top + y};
    }""")
    page.mouse.move(spot["x"] - 20, spot["y"])
    page.mouse.move(spot["x"], spot["y"], steps=4)
    page.wait_for_function("""() => document.querySelector('.migration-history [data-chart="points"]')
        ._chart.cursor.idx !== null""")
    with page.expect_navigation():
        page.mouse.click(spot["x"], spot["y"])
    assert re.search(r"/migrations/\d+/$", page.url), page.url
    assert not [e for e in errors if "Content Security Policy" in e], errors
