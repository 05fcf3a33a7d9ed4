"""Bringing the lab up is fast and taking it down leaves nothing behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab import config, hosts
from lab.system import is_mounted, link_exists, netns_list, pid_alive

pytestmark = pytest.mark.lab


def lab_processes() -> list[str]:
    """Live (non-zombie) processes whose command line or namespace belongs to the lab."""
    root = str(config.paths().root)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if stat == "Z" or int(proc.name) == __import__("os").getpid():
            continue
        if root in cmd or "lab.recorder" in cmd:
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


def test_down_leaves_nothing_and_up_is_ready_quickly(lab_session, lab):
    if not lab_session.owned:
        pytest.skip("the lab was already running when the tests started (someone may be using it); "
                    "teardown is tested when the test session brings the lab up itself")
    before = hosts.load_state()
    try:
        anchors = [h["anchor_pid"] for h in before["hosts"]]
        hosts.down(log=lambda *_: None)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and lab_processes():
            time.sleep(0.1)
        assert lab_processes() == []
        assert not any(pid_alive(p) for p in anchors)
        assert [ns for ns in netns_list() if ns.startswith("labh")] == []
        assert not link_exists(config.BRIDGE)
        assert not any(link_exists(f"vl-labh{i}") for i in range(1, 10))
        assert not is_mounted(config.paths().shared)
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(config.paths().root) not in mounts
        # libvirt runs with cgroup_controllers = [] in the lab: no machine cgroups to leak.
        cg = subprocess.run(["sh", "-c", "find /sys/fs/cgroup -name '*qemu*' -o -name '*labh*' | head"],
                            capture_output=True, text=True).stdout.strip()
        assert cg == ""
        assert hosts.leftovers() == []
        # With the lab down its addresses stay on this machine: no route leads anywhere else.
        assert hosts.subnet_guarded()
        route = subprocess.run(["ip", "route", "get", before["hosts"][0]["address"]], capture_output=True, text=True)
        assert route.returncode != 0 and "No route to host" in route.stderr, route.stdout
    except BaseException:
        # A failed check above must not leave the rest of the run without a lab.
        hosts.down(log=lambda *_: None)
        hosts.up(len(before["hosts"]), log=lambda *_: None)
        raise

    # Down again on nothing is fine.
    hosts.down(log=lambda *_: None)

    started = time.monotonic()
    state = hosts.up(len(before["hosts"]), log=lambda *_: None)
    elapsed = time.monotonic() - started
    print(f"lab up ({len(before['hosts'])} hosts, built guests): ready in {elapsed:.2f} s")
    assert hosts.is_up(state)
    # The guard stays, and the bridge's own route wins over it while the lab is up.
    assert hosts.subnet_guarded()
    route = subprocess.run(["ip", "route", "get", state["hosts"][0]["address"]], capture_output=True, text=True)
    assert route.returncode == 0 and config.BRIDGE in route.stdout
    # Idempotent: up on a running lab changes nothing.
    again = hosts.up(len(before["hosts"]), log=lambda *_: None)
    assert [h["anchor_pid"] for h in again["hosts"]] == [h["anchor_pid"] for h in state["hosts"]]
