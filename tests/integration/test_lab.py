"""The lab itself, proven against real libvirtd/QEMU/sshd in namespaces."""

from __future__ import annotations

import subprocess
import threading
import time

import libvirt
import pytest

from lab import hosts
from lab.heartbeat import report
from lab.hosts import ssh_argv
from lab_support import knob

pytestmark = pytest.mark.lab

libvirt.registerErrorHandler(lambda ctx, err: None, None)

LIVE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


def sh(host: dict, argv: list[str], check=False) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(host["address"], argv), capture_output=True, text=True, timeout=30, check=check)


def conn(host: dict) -> libvirt.virConnect:
    return libvirt.open(host["libvirt_uri"])


def where(lab_hosts: list[dict], guest: str) -> dict[str, str]:
    """Ask every host about the guest: {host name: state}."""
    found = {}
    for h in lab_hosts:
        c = conn(h)
        try:
            dom = c.lookupByName(guest)
            state, _ = dom.state()
            found[h["name"]] = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                                libvirt.VIR_DOMAIN_SHUTOFF: "shutoff"}.get(state, str(state))
        except libvirt.libvirtError:
            pass
        finally:
            c.close()
    return found


def a_guest(status: dict) -> tuple[dict, str]:
    """A running heartbeat guest and the host it runs on now."""
    for h in status["hosts"]:
        for g, st in h["guest_states"].items():
            if g.startswith("hb-") and st == "running":
                return h, g
    raise AssertionError("no running heartbeat guest in the lab")


def other_host(status: dict, *not_these: dict) -> dict:
    names = {h["name"] for h in not_these}
    return next(h for h in status["hosts"] if h["name"] not in names)


def wait_beats(guest: str, since: float, count: int, timeout: float = 10.0) -> None:
    """Wait until the guest has printed ``count`` heartbeats after ``since``."""
    deadline = time.monotonic() + timeout
    while report(guest, since=since).beats < count:
        assert time.monotonic() < deadline, f"{guest}: fewer than {count} heartbeats in {timeout} s"
        time.sleep(0.05)


def migrate(src: dict, dst: dict, guest: str, flags: int = LIVE, params: dict | None = None):
    c = conn(src)
    try:
        dom = c.lookupByName(guest)
        dom.migrateToURI3(dst["libvirt_uri"], params or {}, flags)
    finally:
        c.close()


# ---------------------------------------------------------------------------
def test_hosts_are_distinct_and_resolve_each_other(lab):
    assert len(lab["hosts"]) >= 3 and lab["up"]
    names, uuids = set(), set()
    for h in lab["hosts"]:
        assert sh(h, ["hostname"], check=True).stdout.strip() == h["name"]
        c = conn(h)
        try:
            names.add(c.getHostname())
            uuids.add(c.getCapabilities().split("<uuid>")[1].split("</uuid>")[0])
        finally:
            c.close()
        for other in lab["hosts"]:
            out = sh(h, ["getent", "hosts", other["name"]], check=True).stdout
            assert out.split()[0] == other["address"]
        # Lab traffic stays on the machine: no default route, no forwarding.
        routes = subprocess.run(["ip", "-n", h["netns"], "route"], capture_output=True, text=True).stdout
        assert "default" not in routes
        fwd = subprocess.run(["ip", "netns", "exec", h["netns"], "cat", "/proc/sys/net/ipv4/ip_forward"],
                             capture_output=True, text=True).stdout.strip()
        assert fwd == "0"
    assert len(names) == len(uuids) == len(lab["hosts"])


def test_shared_storage_is_the_same_file_everywhere(lab):
    marker = f"{lab['shared_path']}/marker-{time.time_ns()}"
    first, *rest = lab["hosts"]
    sh(first, ["sh", "-c", f"echo from-{first['name']} > {marker}"], check=True)
    try:
        for h in rest:
            assert sh(h, ["cat", marker], check=True).stdout.strip() == f"from-{first['name']}"
            fstype = sh(h, ["findmnt", "-n", "-o", "FSTYPE", "-T", marker], check=True).stdout.strip()
            assert fstype == "fuse.glusterfs"
    finally:
        sh(first, ["rm", "-f", marker])


def test_live_migration_keeps_heartbeat_continuous(lab_now):
    src, guest = a_guest(lab_now)
    dst = other_host(lab_now, src)
    t0 = time.time()
    wait_beats(guest, t0, 5)  # beats before the move, to measure the gap around it
    migrate(src, dst, guest)
    wait_beats(guest, time.time(), 10)  # and after it, on the destination
    try:
        assert where(lab_now["hosts"], guest) == {dst["name"]: "running"}
        rep = report(guest, since=t0)
        assert rep.continuous, rep
        assert rep.beats >= 10
        assert rep.max_gap_s < 1.0, rep
        assert rep.last_beat_age_s < 0.5
    finally:
        migrate(dst, src, guest)
    assert where(lab_now["hosts"], guest) == {src["name"]: "running"}


def test_guest_on_shared_disk_migrates_without_unsafe(lab_now):
    src = lab_now["hosts"][0]
    dst = lab_now["hosts"][1]
    with knob("shared-disk-guest", src) as g:
        migrate(src, dst, g["guest"])
        assert where(lab_now["hosts"], g["guest"]) == {dst["name"]: "running"}
        migrate(dst, src, g["guest"])


def test_knob_cpu_model_unknown_on_destination(lab_now):
    src, dst, ok = lab_now["hosts"][:3]
    with knob("cpu-guest", src) as g, knob("cpu-model-unknown", dst):
        with pytest.raises(libvirt.libvirtError, match="Unknown CPU model EPYC-Milan"):
            migrate(src, dst, g["guest"])
        assert where(lab_now["hosts"], g["guest"]) == {src["name"]: "running"}
        c = conn(dst)
        try:
            cpu = "<cpu mode='custom' match='exact'><model>EPYC-Milan</model></cpu>"
            with pytest.raises(libvirt.libvirtError, match="Unknown CPU model"):
                c.compareHypervisorCPU(None, "x86_64", None, "qemu", cpu, 0)
        finally:
            c.close()
        # A host that knows the model accepts the guest.
        migrate(src, ok, g["guest"])
        assert where(lab_now["hosts"], g["guest"]) == {ok["name"]: "running"}
        migrate(ok, src, g["guest"])


def test_knob_same_uuid_is_the_same_host_for_libvirt(lab_now):
    src, guest = a_guest(lab_now)
    dst = other_host(lab_now, src)
    with knob("same-uuid", dst, as_host=src["name"]):
        with pytest.raises(libvirt.libvirtError, match="Attempt to migrate guest to the same host"):
            migrate(src, dst, guest)
        assert where(lab_now["hosts"], guest) == {src["name"]: "running"}


def test_knob_same_hostname(lab_now):
    a, b = lab_now["hosts"][:2]
    with knob("same-hostname", b, as_host=a["name"]):
        assert sh(b, ["hostname"], check=True).stdout.strip() == a["name"]
        c = conn(b)
        try:
            assert c.getHostname() == a["name"]
        finally:
            c.close()
    assert sh(b, ["hostname"], check=True).stdout.strip() == b["name"]


def test_knob_hide_host_from_etc_hosts(lab_now):
    a, b, hidden = lab_now["hosts"][:3]
    with knob("hide-host", hidden):
        res = sh(a, ["getent", "hosts", hidden["name"]])
        assert res.returncode == 2 and res.stdout == ""
        assert sh(b, ["getent", "hosts", a["name"]], check=True).stdout.split()[0] == a["address"]
    assert sh(a, ["getent", "hosts", hidden["name"]], check=True).stdout.split()[0] == hidden["address"]


def test_knob_no_shared_storage(lab_now):
    src, dst = lab_now["hosts"][:2]
    with knob("shared-disk-guest", src) as g, knob("no-shared", dst):
        res = sh(dst, ["findmnt", "-n", lab_now["shared_path"]])
        assert res.returncode != 0
        with pytest.raises(libvirt.libvirtError, match="No such file or directory|Could not open|Cannot access"):
            migrate(src, dst, g["guest"])
        assert where(lab_now["hosts"], g["guest"]) == {src["name"]: "running"}
    assert sh(dst, ["findmnt", "-n", "-o", "FSTYPE", lab_now["shared_path"]], check=True).stdout.strip() == "fuse.glusterfs"


def test_knob_local_disk_is_unsafe_to_migrate(lab_now):
    src, dst = lab_now["hosts"][:2]
    with knob("local-disk-guest", src) as g:
        with pytest.raises(libvirt.libvirtError, match="Migration without shared storage is unsafe"):
            migrate(src, dst, g["guest"])
        with pytest.raises(libvirt.libvirtError, match="Storage pool not found"):
            migrate(src, dst, g["guest"], LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
        assert where(lab_now["hosts"], g["guest"]) == {src["name"]: "running"}


def test_knob_duplicate_name_on_destination(lab_now):
    src, guest = a_guest(lab_now)
    dst = other_host(lab_now, src)
    with knob("duplicate-name", dst, guest=guest):
        with pytest.raises(libvirt.libvirtError, match="already exists"):
            migrate(src, dst, guest)
        assert where(lab_now["hosts"], guest) == {src["name"]: "running", dst["name"]: "shutoff"}


def test_knob_block_migration_ports(lab_now):
    src, guest = a_guest(lab_now)
    dst = other_host(lab_now, src)
    with knob("block-ports", dst):
        with pytest.raises(libvirt.libvirtError, match="Connection refused|Failed to connect|unable to connect"):
            migrate(src, dst, guest)
        assert where(lab_now["hosts"], guest) == {src["name"]: "running"}
        # Tunnelled migration goes through libvirtd's own connection, not those ports.
        migrate(src, dst, guest, LIVE | libvirt.VIR_MIGRATE_TUNNELLED)
        assert where(lab_now["hosts"], guest) == {dst["name"]: "running"}
        migrate(dst, src, guest, LIVE | libvirt.VIR_MIGRATE_TUNNELLED)


def test_knob_libvirtd_stop_and_restart(lab_now):
    src, guest = a_guest(lab_now)
    dst = other_host(lab_now, src)
    with knob("libvirtd-stop", dst):
        with pytest.raises(libvirt.libvirtError, match="Connection refused|unable to connect"):
            libvirt.open(dst["libvirt_uri"])
        with pytest.raises(libvirt.libvirtError, match="Connection refused|unable to connect"):
            migrate(src, dst, guest)
        assert where([src], guest) == {src["name"]: "running"}
    # Back, and the guests it ran survived the restart.
    after = hosts.status()
    assert next(h for h in after["hosts"] if h["name"] == dst["name"])["guest_states"] == dst["guest_states"]


def job_sampler(host: dict, guest: str, stop: threading.Event, samples: list):
    c = conn(host)
    try:
        dom = c.lookupByName(guest)
        while not stop.is_set():
            try:
                st = dom.jobStats()
            except libvirt.libvirtError:
                st = {}
            if st.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE:
                samples.append((time.monotonic(), st))
            time.sleep(0.25)
    finally:
        c.close()


def test_knob_dirty_guest_does_not_converge_on_a_throttled_link_and_abort_keeps_it(lab_now):
    src, dst = lab_now["hosts"][:2]
    with knob("dirty-guest", src) as g, knob("throttle", src, rate="200mbit"):
        guest = g["guest"]
        stop, samples, errors = threading.Event(), [], []
        sampler = threading.Thread(target=job_sampler, args=(src, guest, stop, samples))
        sampler.start()

        def run():
            try:
                migrate(src, dst, guest)
            except libvirt.libvirtError as exc:
                errors.append(exc)

        mig = threading.Thread(target=run)
        mig.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if samples and samples[-1][1].get("memory_iteration", 0) >= 3:
                break
            time.sleep(0.2)
        c = conn(src)
        try:
            c.lookupByName(guest).abortJob()
        finally:
            c.close()
        mig.join(30)
        stop.set()
        sampler.join(5)
        # QEMU reports the cancel as "aborted", or, when the abort cuts the channel mid-write, as the
        # write failing ("Broken pipe"); either way the migration did not happen and the guest stays.
        assert errors and errors[0].get_error_code() in (
            libvirt.VIR_ERR_OPERATION_ABORTED, libvirt.VIR_ERR_OPERATION_FAILED), errors
        c = conn(src)
        try:
            assert c.lookupByName(guest).isActive(), "the aborted guest no longer runs on its source"
        finally:
            c.close()
        late = [s for _, s in samples if s.get("memory_iteration", 0) >= 2]
        assert late, f"never reached a second iteration: {samples[-1:]}"
        # Each new pass starts with ~the whole working set dirty again: not converging.
        start_of_pass = {}
        for s in late:
            it = s["memory_iteration"]
            start_of_pass[it] = max(start_of_pass.get(it, 0), s["memory_remaining"])
        assert min(start_of_pass.values()) > 32 * 1024 * 1024, start_of_pass
        # The link really is throttled: well under 200 Mbit/s plus margin.
        (t0, first), (t1, last) = samples[0], samples[-1]
        rate = (last["memory_processed"] - first["memory_processed"]) / max(t1 - t0, 0.1)
        assert rate < 30e6, rate
        assert where(lab_now["hosts"], guest) == {src["name"]: "running"}
        assert report(guest, since=time.time() - 2).beats >= 1


def test_throttle_limits_the_hosts_bandwidth(lab_now):
    a, b = lab_now["hosts"][:2]
    payload = 2 * 1024 * 1024
    cmd = ["sh", "-c", f"head -c {payload} /dev/urandom | ssh -i {lab_now['hosts'][0]['ssh_key']} "
           f"-o BatchMode=yes -o UserKnownHostsFile={a['ssh_known_hosts']} root@{b['address']} 'cat > /dev/null'"]
    start = time.monotonic()
    sh(a, cmd, check=True)
    fast = time.monotonic() - start
    with knob("throttle", a, rate="4mbit"):
        start = time.monotonic()
        sh(a, cmd, check=True)
        slow = time.monotonic() - start
    assert slow > 3.0 > fast, (fast, slow)


GANESHA_CONF = """NFS_CORE_PARAM { Protocols = 3, 4; }
NFSV4 { Graceless = true; }
EXPORT {
  Export_Id = 77; Path = "%(path)s"; Pseudo = "%(path)s"; Protocols = 3, 4; Transports = TCP;
  # Ganesha 4 ignores Clients at EXPORT level: grant access only in a CLIENT block.
  Access_Type = None; Squash = root_squash;
  CLIENT { Clients = 10.77.0.0/24; Access_Type = RW; }
  FSAL { Name = VFS; }
}
"""


def test_real_ganesha_server_and_lab_client_mount(lab_now):
    server, *clients = lab_now["hosts"][:3]
    export = f"/srv/labtest-{time.time_ns()}"
    mnt = f"/mnt/labtest-{time.time_ns()}"
    conf = GANESHA_CONF % {"path": export}
    sh(server, ["sh", "-c", f"cp /etc/ganesha/ganesha.conf /etc/ganesha/ganesha.conf.labtest; mkdir -p {export}"], check=True)
    try:
        subprocess.run(ssh_argv(server["address"], ["sh", "-c", "cat > /etc/ganesha/ganesha.conf"]),
                       input=conf, text=True, check=True, timeout=30)
        sh(server, ["systemctl", "restart", "nfs-ganesha"], check=True)
        assert sh(server, ["systemctl", "is-active", "nfs-ganesha"]).stdout.strip() == "active"
        for c in clients:
            # Real MOUNT protocol answer from ganesha, asked from the client host.
            assert export in sh(c, ["showmount", "-e", server["name"]], check=True).stdout
            sh(c, ["mkdir", "-p", mnt], check=True)
            sh(c, ["mount", "-t", "nfs", f"{server['name']}:{export}", mnt], check=True)
            assert sh(c, ["findmnt", "-n", "-o", "FSTYPE", mnt], check=True).stdout.strip() == "fuse.glusterfs"
        sh(clients[0], ["sh", "-c", f"echo hello-from-{clients[0]['name']} > {mnt}/marker"], check=True)
        for c in clients[1:]:
            assert sh(c, ["cat", f"{mnt}/marker"], check=True).stdout.strip() == f"hello-from-{clients[0]['name']}"
        assert sh(server, ["cat", f"{export}/marker"], check=True).stdout.strip() == f"hello-from-{clients[0]['name']}"
        # An export the server does not have is refused, as a real mount would be.
        res = sh(clients[0], ["mount", "-t", "nfs", f"{server['name']}:/srv/not-exported", mnt])
        assert res.returncode == 32 and "access denied by server" in res.stderr
        # Private per host: the export exists on the server only.
        assert sh(clients[0], ["test", "-d", export]).returncode != 0
    finally:
        for c in clients:
            sh(c, ["umount", mnt])
            sh(c, ["rmdir", mnt])
        sh(server, ["systemctl", "stop", "nfs-ganesha"])
        sh(server, ["sh", "-c", f"mv /etc/ganesha/ganesha.conf.labtest /etc/ganesha/ganesha.conf; rm -rf {export}"])


def test_linux_guest_on_shared_disk_live_migrates_and_keeps_its_counter_on_disk(lab_now):
    src, dst = lab_now["hosts"][1:3]
    with knob("linux-guest", src, disk="shared") as g:
        guest = g["guest"]
        t0 = time.time()
        wait_beats(guest, t0, 10)
        migrate(src, dst, guest)
        wait_beats(guest, time.time(), 10)
        assert where(lab_now["hosts"], guest) == {dst["name"]: "running"}
        rep = report(guest, since=t0)
        assert rep.continuous and rep.max_gap_s < 1.0, rep
        # The counter is persisted on the guest's own disk: a cold boot resumes from it.
        last = report(guest).last_counter
        c = conn(dst)
        try:
            dom = c.lookupByName(guest)
            dom.destroy()
            t1 = time.time()
            dom.create()
        finally:
            c.close()
        deadline = time.time() + 60
        while time.time() < deadline and not report(guest, since=t1).beats:
            time.sleep(0.2)
        first = report(guest, since=t1).first_counter
        assert first is not None and last - 10 <= first <= last + 1, (first, last)
