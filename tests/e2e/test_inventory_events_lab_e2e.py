"""In a real browser against the lab: a guest paused, resumed, forced off and started with
libvirt (as `virsh suspend/resume/destroy/start` would) shows its new state on the open
inventory page by itself, through the event watcher (`manage.py watch_hosts`), the channel
layer and the page's live patch. Each of the 20 events is timed from the libvirt call (and from its
return) to the moment the page's badge changed (a MutationObserver in the page keeps the time); the
figures are written to var/inventory_events.txt. The issue's goal (p95 <= 2 s) is reported
there, not asserted: the test asserts that every event arrives and the page ends true.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import console_errors, login, onboard_lab, stop
from lab_support import heartbeat_guest
from playwright.sync_api import expect

from hosts.adapters import libvirt as lv
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.timeout(300)]

PROJECT = Path(__file__).resolve().parents[2]
REPORT = PROJECT / "var" / "inventory_events.txt"
EVENT_TIMEOUT_MS = 20000

# Records when the guest's state badge changed text, whatever re-drew it (a patch or a re-fetch).
OBSERVE = """name => {
  const row = () => [...document.querySelectorAll('#vms-table tr')].find(r => r.textContent.includes(name));
  const text = () => { const b = row() && row().querySelector('[data-live-vm-state]'); return b ? b.textContent.trim() : null; };
  window.__stateChanges = [];
  let last = text();
  new MutationObserver(() => {
    const now = text();
    if (now !== last) { last = now; window.__stateChanges.push({t: Date.now(), text: now}); }
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
  return last;
}"""


@pytest.fixture(scope="module")
def watcher(portal):
    """The portal's event watcher, as `make run` runs it, for this module's portal."""
    log_path = portal.workdir / "watcher.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "watch_hosts"], cwd=PROJECT, env=portal.env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield log_path
    finally:
        stop(proc, timeout=15)


def change_after(page, since_ms: float, text: str) -> float:
    """Milliseconds from ``since_ms`` to the first change of the badge to ``text`` after it."""
    handle = page.wait_for_function(
        "([since, text]) => (window.__stateChanges || []).find(c => c.t >= since && c.text === text) || null",
        arg=[since_ms, text], timeout=EVENT_TIMEOUT_MS,
    )
    return handle.json_value()["t"] - since_ms


def test_lifecycle_events_reach_the_open_inventory_page(page, portal, lab, watcher, screenshots):
    host = lab["hosts"][0]
    errors = console_errors(page)
    with heartbeat_guest(host, prefix="ev") as (name, domain_uuid):
        onboard_lab(portal)
        # The watcher has an event connection to the guest's host before the first event.
        wait_until(lambda: f"watching {host['name']} at" in watcher.read_text(), timeout=60,
                   what=f"the watcher to watch {host['name']}")
        login(page, portal)
        page.goto(f"/hosts/?q={name}")
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
        assert page.evaluate(OBSERVE, name) == "Running"

        steps = [("suspend", "Paused"), ("resume", "Running"), ("destroy", "Shut off"), ("create", "Running")]
        latencies: list[tuple[str, float]] = []
        with lv.open_connection(host["libvirt_uri"]) as conn:
            dom = conn.lookupByUUIDString(domain_uuid)
            for _ in range(5):
                for call, shown in steps:
                    before = time.time() * 1000
                    getattr(dom, call)()
                    returned = time.time() * 1000
                    # From the call (libvirt's own time included) and from its return.
                    from_call = change_after(page, before, shown)
                    latencies.append((call, from_call, from_call - (returned - before)))
            assert dom.isActive() and dom.state()[0] == 1  # running, as the page says
        expect(page.locator("#vms-table [data-live-vm-state]").first).to_have_text("Running")
        page.screenshot(path=screenshots / "inventory-live-events.png", full_page=True)

    def figures(values: list[float]) -> str:
        values = sorted(values)
        p95 = values[max(0, round(0.95 * len(values)) - 1)]
        return f"median {statistics.median(values):.0f} ms, p95 {p95:.0f} ms, max {values[-1]:.0f} ms"

    calls = list(dict.fromkeys(c for c, _, _ in latencies))
    lines = [
        f"lifecycle event on {host['name']} -> inventory page badge, {len(latencies)} events "
        f"(suspend, resume, destroy, start x 5)",
        f"from the libvirt call: {figures([v for _, v, _ in latencies])} (goal: p95 <= 2000 ms)",
        f"from the call's return: {figures([max(0.0, r) for _, _, r in latencies])}",
        "from the call, by call: " + ", ".join(
            f"{call} {statistics.median([v for c, v, _ in latencies if c == call]):.0f} ms" for call in calls),
    ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    assert len(latencies) == 20
    assert not errors, errors
