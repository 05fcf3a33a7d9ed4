"""The inventory with many hosts in a real browser: pages of rows, and a live event refreshes a
page only when it names a host the page shows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import console_errors, login
from playwright.sync_api import expect

from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PROJECT = Path(__file__).resolve().parents[2]


def host_ids(portal, *names):
    out = portal.manage("shell", "-c", "import json; from hosts.models import Host; "
                        f"print(json.dumps(dict(Host.objects.filter(name__in={list(names)!r}).values_list('name', 'pk'))))")
    return json.loads(out.stdout.strip().splitlines()[-1])


def inventory_event(portal, host_id: int) -> None:
    portal.manage("shell", "-c", f"from core import broadcast; broadcast.inventory_changed(host_id={host_id})")


def pumping(page, predicate):
    """predicate, after letting Playwright deliver the page's events (it does so only in its own calls)."""
    return lambda: page.evaluate("0") == 0 and predicate()


def test_an_event_refreshes_only_pages_that_show_its_host(page, portal, screenshots):
    # 60 hosts of 2 guests, on loopback addresses, never contacted (no job is queued for them).
    subprocess.run([sys.executable, "bench/synthetic_inventory.py", "--hosts", "60", "--guests-per-host", "2"],
                   cwd=PROJECT, env=portal.env, check=True, capture_output=True)
    ids = host_ids(portal, "syn-0003", "syn-0050")
    errors = console_errors(page)
    login(page, portal)
    fetches, frames = [], []
    # This page's refreshes only (the page the login opened may still be refreshing once).
    page.on("request", lambda r: fetches.append(r.url) if "/hosts/partials/inventory/?sort=name" in r.url else None)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    page.goto("/hosts/?sort=name")
    expect(page.locator("#hosts-table tbody tr")).to_have_count(25)  # syn-0000 … syn-0024
    expect(page.locator("#vms-table tbody tr")).to_have_count(50)
    expect(page.locator("#hosts-pager")).to_contain_text("Hosts 1–25 of 60")
    # The socket's first state refreshes the rows once (nothing missed between render and connect).
    wait_until(pumping(page, lambda: any("inventory.state" in f for f in frames) and len(fetches) == 1), timeout=15,
               what="the first refresh")

    inventory_event(portal, ids["syn-0050"])  # not on this page
    wait_until(pumping(page, lambda: any(f'"host_ids": [{ids["syn-0050"]}]' in f for f in frames)), timeout=15,
               what="the event about a host not shown")
    # Starting the next command takes far longer than the page's 250 ms window, so a refresh
    # for the first event would come before the second event is even sent.
    inventory_event(portal, ids["syn-0003"])  # on this page
    wait_until(pumping(page, lambda: len(fetches) == 2), timeout=15, what="the refresh for a host shown")
    wait_until(pumping(page, lambda: any(f'"host_ids": [{ids["syn-0003"]}]' in f for f in frames)), timeout=5, what="the event")
    assert len(fetches) == 2, fetches
    expect(page.locator("#hosts-table tbody tr")).to_have_count(25)

    # vm.state: the guest's badge on screen takes its new state, and the rows are fetched once more.
    vm_id = json.loads(portal.manage(
        "shell", "-c", "from hosts.models import VirtualMachine as V; from core import broadcast; "
        "vm = V.objects.filter(host__name='syn-0003').order_by('pk').first(); vm.state = 'paused'; vm.save(); "
        "broadcast.vm_state(vm); print(vm.pk)").stdout.strip().splitlines()[-1])
    expect(page.locator(f'#vms-table [data-live-vm-state="{vm_id}"]')).to_have_text("Paused")
    wait_until(pumping(page, lambda: len(fetches) == 3), timeout=15, what="the refresh after vm.state")
    page.screenshot(path=str(screenshots / "inventory_scale.png"))
    assert not errors, errors


# Records every change of one guest's state badge, whatever re-drew it (a patch or a swap).
BADGE_CHANGES = """vmId => {
  const text = () => { const b = document.querySelector(`#vms-table [data-live-vm-state="${vmId}"]`); return b ? b.textContent.trim() : null; };
  window.__badge = [text()];
  new MutationObserver(() => { const now = text(); if (now !== window.__badge[window.__badge.length - 1]) window.__badge.push(now); })
    .observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def set_state(portal, vm_id: int, state: str) -> None:
    portal.manage("shell", "-c", "from hosts.models import VirtualMachine as V; from core import broadcast; "
                  f"vm = V.objects.get(pk={vm_id}); vm.state = {state!r}; vm.save(); broadcast.vm_state(vm)")


def test_rows_fetched_before_a_newer_event_do_not_take_the_badge_back(page, portal):
    """Paused, then Running again while the page's fetch for the pause is still under way: the
    rows that fetch brings (rendered Paused) must not put the badge back to Paused, and one
    more fetch follows."""
    subprocess.run([sys.executable, "bench/synthetic_inventory.py", "--hosts", "1", "--guests-per-host", "1",
                    "--prefix", "race"], cwd=PROJECT, env=portal.env, check=True, capture_output=True)
    vm_id = json.loads(portal.manage(
        "shell", "-c", "from hosts.models import VirtualMachine as V; "
        "vm = V.objects.get(host__name='race-0000'); vm.name = 'race-guest'; vm.state = 'running'; vm.save(); "
        "print(vm.pk)").stdout.strip().splitlines()[-1])
    errors = console_errors(page)
    login(page, portal)
    held, fetches = [], []

    def hold_partial(route):
        fetches.append(route.request.url)
        if len(fetches) == 2:  # the fetch after the pause: rendered now (Paused), answered later
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.goto("/hosts/?q=race-guest")
    badge = page.locator(f'#vms-table [data-live-vm-state="{vm_id}"]')
    expect(badge).to_have_text("Running")
    page.evaluate(BADGE_CHANGES, vm_id)
    page.route("**/hosts/partials/inventory/**", hold_partial)
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    # The socket's first state fetches the rows once; the pause's fetch is the one held.
    wait_until(pumping(page, lambda: len(fetches) >= 1), timeout=15, what="the first refresh")
    set_state(portal, vm_id, "paused")
    expect(badge).to_have_text("Paused")
    wait_until(pumping(page, lambda: len(held) == 1), timeout=15, what="the refresh after the pause")
    set_state(portal, vm_id, "running")
    expect(badge).to_have_text("Running")  # patched from the event while the fetch is under way
    route, stale = held[0]
    assert "Paused" in stale.text()
    route.fulfill(response=stale)
    # The stale rows are swapped in and take the newer event again; one more fetch follows.
    wait_until(pumping(page, lambda: len(fetches) == 3), timeout=15, what="the fetch after the stale one")
    expect(badge).to_have_text("Running")
    assert page.evaluate("window.__badge") == ["Running", "Paused", "Running"]
    assert not errors, errors
