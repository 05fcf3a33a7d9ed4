"""The adapters against the real lab: libvirtd/QEMU and sshd in network namespaces.

Guests may move while other lab tests run, so where a guest is now is always
asked of libvirt, never taken from the ``lab`` fixture's guest lists.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from hosts.adapters import facts
from hosts.adapters import libvirt as lv
from hosts.adapters.errors import DomainNotFound, HostKeyMismatch, HostKeyUnknown
from hosts.adapters.ssh import HostKeyInfo, SSHSession, SSHTarget, fetch_host_key, generate_keypair

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


def private_key(host: dict) -> str:
    return Path(host["ssh_key"]).read_text()


def target(host: dict, pinned_host_key: str | None) -> SSHTarget:
    return SSHTarget(
        address=host["address"],
        port=host["ssh_port"],
        user=host["ssh_user"],
        private_key_pem=private_key(host),
        pinned_host_key=pinned_host_key,
    )


def ssh_uri(host: dict) -> str:
    return f"qemu+ssh://{host['ssh_user']}@{host['address']}/system"


@pytest.fixture(scope="module")
def hosts(lab) -> list[dict]:
    assert len(lab["hosts"]) >= 2
    return lab["hosts"]


@pytest.fixture(scope="module")
def pins(hosts) -> dict[str, str]:
    """Trust on first use: each host's key as fetch_host_key reads it."""
    return {h["name"]: fetch_host_key(h["address"], h["ssh_port"]).openssh for h in hosts}


def running_heartbeat_guest(hosts: list[dict]) -> tuple[dict, lv.DomainInfo]:
    for host in hosts:
        with lv.open_connection(host["libvirt_uri"]) as conn:
            for dom in lv.list_domains(conn):
                if dom.name.startswith("hb-") and dom.state == "running":
                    return host, dom
    raise AssertionError("no running heartbeat guest in the lab")


# --- libvirt reads ----------------------------------------------------------


def test_host_facts_from_every_lab_host(hosts):
    all_facts = {}
    for host in hosts:
        with lv.open_connection(host["libvirt_uri"]) as conn:
            all_facts[host["name"]] = lv.get_host_facts(conn)
    for name, f in all_facts.items():
        assert f.hostname == name
        assert "qemu" in f.domain_types
        assert f.hypervisor == "QEMU"
        assert re.fullmatch(r"\d+\.\d+\.\d+", f.libvirt_version)
        assert re.fullmatch(r"\d+\.\d+\.\d+", f.hypervisor_version)
        assert f.arch == "x86_64" and f.cpus >= 1
        assert any(m.startswith("pc") for m in f.machine_types)
        assert 0 < f.memory_free_kib <= f.memory_total_kib
        uuid.UUID(f.host_uuid)
    # distinct identities: libvirt refuses to migrate between "the same" host
    assert len({f.hostname for f in all_facts.values()}) == len(hosts)
    assert len({f.host_uuid for f in all_facts.values()}) == len(hosts)
    for host in hosts:
        if host.get("host_uuid"):
            assert all_facts[host["name"]].host_uuid == host["host_uuid"]


def test_domains_are_listed_with_heartbeat_guests_running(lab, hosts):
    running: dict[str, lv.DomainInfo] = {}
    for host in hosts:
        with lv.open_connection(host["libvirt_uri"]) as conn:
            for dom in lv.list_domains(conn):
                assert dom.state in lv.DOMAIN_STATES
                uuid.UUID(dom.uuid)
                if dom.state == "running":
                    assert dom.name not in running, f"{dom.name} runs on two hosts"
                    assert dom.id is not None and dom.id > 0
                    running[dom.name] = dom
    heartbeat = {name for h in lab["hosts"] for name in h["guests"] if name.startswith("hb-")}
    assert heartbeat, "the lab defines heartbeat guests"
    assert heartbeat <= set(running)
    for name in heartbeat:
        dom = running[name]
        assert dom.domain_type == "qemu" and dom.arch == "x86_64"
        assert dom.vcpus >= 1 and dom.memory_kib > 0
        assert dom.disks and all(d.target for d in dom.disks)
        assert all(re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", n.mac) for n in dom.nics)


def test_unknown_guest_is_domain_not_found(hosts):
    with lv.open_connection(hosts[0]["libvirt_uri"]) as conn:
        with pytest.raises(DomainNotFound):
            lv.destroy_domain(conn, str(uuid.uuid4()))


# --- SSH and host key trust ---------------------------------------------------


def test_fetch_host_key_matches_the_labs_known_hosts(hosts, pins):
    for host in hosts:
        known = Path(host["ssh_known_hosts"]).read_text().splitlines()
        expected = {
            HostKeyInfo.from_openssh(" ".join(line.split()[1:])).openssh
            for line in known
            if line.split() and line.split()[0] == host["address"]
        }
        assert pins[host["name"]] in expected
    assert len(set(pins.values())) == len(hosts)


def test_ssh_runs_hostname_on_each_host_with_the_pinned_key(hosts, pins):
    for host in hosts:
        with SSHSession(target(host, pins[host["name"]])) as ssh:
            result = ssh.run(["hostname"])
            assert ssh.host_key.openssh == pins[host["name"]]
        assert result.stdout.strip() == host["name"]
        assert result.exit_status == 0


def test_wrong_or_missing_pin_is_refused(hosts, pins):
    host = hosts[0]
    actual = HostKeyInfo.from_openssh(pins[host["name"]]).fingerprint
    with pytest.raises(HostKeyMismatch) as mismatch:
        with SSHSession(target(host, generate_keypair()[1])):
            pass
    assert mismatch.value.actual_fingerprint == actual
    # another lab host's genuine key is just as wrong here
    with pytest.raises(HostKeyMismatch):
        with SSHSession(target(host, pins[hosts[1]["name"]])):
            pass
    with pytest.raises(HostKeyUnknown) as unknown:
        with SSHSession(target(host, None)):
            pass
    assert unknown.value.fingerprint == actual


def test_hostile_arguments_stay_literal_on_a_lab_host(hosts, pins):
    args = ["a; hostname", "$(hostname)", "`hostname`", "*", "it's"]
    with SSHSession(target(hosts[0], pins[hosts[0]["name"]])) as ssh:
        out = ssh.run(["printf", "%s\\n", *args]).stdout
    assert out.splitlines() == args


def test_facts_over_ssh(lab, hosts, pins):
    host = hosts[0]
    others = [h for h in hosts if h is not host]
    with SSHSession(target(host, pins[host["name"]])) as ssh:
        release = facts.read_os_release(ssh)
        storage = facts.storage_kind(ssh, [lab["shared_path"], f"{lab['shared_path']}/not-yet.qcow2", "/etc"])
        names = facts.resolve_names(ssh, [h["name"] for h in others] + ["no-such-host.invalid"])
    assert release.id and release.version_id and release.pretty_name
    assert storage[lab["shared_path"]].shared
    assert storage[f"{lab['shared_path']}/not-yet.qcow2"] == storage[lab["shared_path"]]
    assert not storage["/etc"].shared
    for other in others:
        assert names[other["name"]] == [other["address"]]
    assert names["no-such-host.invalid"] == []


# --- libvirt over SSH with the pinned key --------------------------------------


def test_qemu_ssh_verifies_the_pinned_key(hosts, pins, tmp_path):
    for host in hosts:
        with lv.open_connection(ssh_uri(host), ssh_target=target(host, pins[host["name"]]),
                                known_hosts_dir=str(tmp_path)) as conn:
            assert list(tmp_path.iterdir()) == []  # key material gone once connected
            facts_over_ssh = lv.get_host_facts(conn)  # a large reply (capabilities XML)
            domains = lv.list_domains(conn)
        with lv.open_connection(host["libvirt_uri"]) as conn:
            assert facts_over_ssh.host_uuid == lv.get_host_facts(conn).host_uuid
            assert {d.uuid for d in domains} == {d.uuid for d in lv.list_domains(conn)}
        assert facts_over_ssh.hostname == host["name"]

    host = hosts[0]
    with pytest.raises(HostKeyMismatch) as exc:
        with lv.open_connection(ssh_uri(host), ssh_target=target(host, pins[hosts[1]["name"]]),
                                known_hosts_dir=str(tmp_path)):
            pytest.fail("libvirt connected despite a wrong pin")
    assert exc.value.actual_fingerprint == HostKeyInfo.from_openssh(pins[host["name"]]).fingerprint
    with pytest.raises(HostKeyUnknown):
        with lv.open_connection(ssh_uri(host), ssh_target=target(host, None)):
            pass
    assert list(tmp_path.iterdir()) == []


# --- lifecycle events -------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "ssh"])
def test_event_watcher_sees_suspend_and_resume(hosts, pins, transport):
    host, guest = running_heartbeat_guest(hosts)
    uri = host["libvirt_uri"] if transport == "tcp" else ssh_uri(host)
    ssh_target = target(host, pins[host["name"]]) if transport == "ssh" else None
    events: queue.Queue = queue.Queue()
    disconnects: list = []

    def next_event_for_guest(timeout: float) -> lv.DomainEvent:
        deadline = time.monotonic() + timeout
        while True:
            got_uri, event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert got_uri == uri
            if event.domain_uuid == guest.uuid:
                return event

    with lv.EventWatcher() as watcher:
        watcher.watch(uri, lambda u, e: events.put((u, e)), lambda u, r: disconnects.append(r),
                      ssh_target=ssh_target)
        with lv.open_connection(host["libvirt_uri"]) as conn:
            lv.suspend_domain(conn, guest.uuid)
            try:
                suspended = next_event_for_guest(15)
            finally:
                lv.resume_domain(conn, guest.uuid)
            resumed = next_event_for_guest(15)
            assert lv.get_domain(conn, guest.uuid).state == "running"
    assert (suspended.event, suspended.detail, suspended.domain_name) == ("suspended", "paused", guest.name)
    assert (resumed.event, resumed.detail) == ("resumed", "unpaused")
    assert disconnects == []


def _ssh_children() -> set[int]:
    """PIDs of ssh processes this test process started (libvirt's qemu+ssh tunnels)."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if fields[1] == me and comm == "ssh":
            found.add(int(entry.name))
    return found


def test_event_watcher_reports_a_lost_connection_and_can_reconnect(hosts, pins):
    """Kill the ssh tunnel under a watched qemu+ssh connection (our own child
    process): the disconnect callback fires, and unwatch + watch gets events again."""
    host, guest = running_heartbeat_guest(hosts)
    uri = ssh_uri(host)
    ssh_target = target(host, pins[host["name"]])
    events: queue.Queue = queue.Queue()
    disconnects: queue.Queue = queue.Queue()

    with lv.EventWatcher() as watcher:
        before = _ssh_children()
        watcher.watch(uri, lambda u, e: events.put(e), lambda u, r: disconnects.put((u, r)), ssh_target=ssh_target)
        (tunnel,) = _ssh_children() - before
        os.kill(tunnel, signal.SIGTERM)
        got_uri, reason = disconnects.get(timeout=30)
        assert got_uri == uri and reason in {"eof", "error", "keepalive"}

        watcher.unwatch(uri)
        watcher.watch(uri, lambda u, e: events.put(e), lambda u, r: disconnects.put((u, r)), ssh_target=ssh_target)
        with lv.open_connection(host["libvirt_uri"]) as conn:
            lv.suspend_domain(conn, guest.uuid)
            lv.resume_domain(conn, guest.uuid)
        seen = []
        deadline = time.monotonic() + 15
        while ("resumed", "unpaused") not in seen and time.monotonic() < deadline:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event.domain_uuid == guest.uuid:
                seen.append((event.event, event.detail))
        assert seen == [("suspended", "paused"), ("resumed", "unpaused")]
    # Closing the watcher ends its tunnel: libvirt's event loop thread ends and reaps the ssh process a
    # moment after close() returns (EventWatcher.close), so it is awaited, not looked for at once.
    deadline = time.monotonic() + 10
    while not _ssh_children() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ssh_children() <= before


def test_large_outputs_arrive_whole_even_when_many_run_at_once(hosts, pins):
    """sshd may send the exit status before the last output: run() waits for EOF."""
    from concurrent.futures import ThreadPoolExecutor

    host = hosts[0]

    def one(size: int) -> tuple[int, int]:
        with SSHSession(target(host, pins[host["name"]])) as session:
            res = session.run(["sh", "-c", 'head -c "$1" /dev/zero | tr "\\0" x; head -c "$1" /dev/zero >&2', "_", str(size)])
            # Count the command's own stderr bytes (NULs): root's login shell on a busy machine
            # may add complaints of its own there (a shell hook that cannot rehash, say).
            return len(res.stdout), res.stderr.count("\0")

    sizes = [37 * 1024, 100_000, 250_000] * 6
    with ThreadPoolExecutor(max_workers=9) as pool:
        got = list(pool.map(one, sizes))
    assert got == [(s, s) for s in sizes]
