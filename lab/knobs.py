"""Knobs that turn a healthy lab into the failure cases admins meet.

Each knob changes one thing on one running host and can be undone with
``--undo``. They exist so preflight checks and reliability features are
tested against what libvirt and the hosts really do, not against mocks.

    python -m lab knob cpu-model-unknown  HOST          HOST's libvirt CPU map lacks EPYC-Milan (an older destination)
    python -m lab knob cpu-guest          HOST [--name]  a guest on HOST with CPU model EPYC-Milan
    python -m lab knob same-hostname      HOST --as OTHER
    python -m lab knob same-uuid          HOST --as OTHER  (a cloned host: same libvirt host UUID)
    python -m lab knob hide-host          HOST           HOST is missing from the other hosts' /etc/hosts
    python -m lab knob no-shared          HOST           HOST does not see the shared storage
    python -m lab knob local-disk-guest   HOST [--name]  a guest with a writable disk on HOST's local storage
    python -m lab knob shared-disk-guest  HOST [--name]  a guest with a writable qcow2 disk on the shared storage
    python -m lab knob linux-guest        HOST [--name] [--disk local|shared]  a Linux guest, counter kept on its disk
    python -m lab knob duplicate-name     HOST --name GUEST   define another guest called GUEST on HOST
    python -m lab knob throttle           HOST [--rate 4mbit]  limit HOST's outgoing bandwidth (tc)
    python -m lab knob dirty-guest        HOST [--name]  a guest rewriting ~96 MiB of memory in a loop
    python -m lab knob block-ports        HOST           reject TCP 49152-49215 (migration ports) into HOST
    python -m lab knob libvirtd-stop      HOST           stop HOST's libvirtd (--undo starts it again)
    python -m lab knob libvirtd-kill      HOST           kill -9 HOST's libvirtd, as a crash (--undo starts it again)
    python -m lab knob libvirtd-restart   HOST
    python -m lab knob host-down          HOST           HOST dies: sshd and libvirtd stop, its guests' QEMUs are killed (-9)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from lab import config, guests, hosts, recorder
from lab.system import LabError, in_host, netns_pids, pid_alive, read_pid, run, terminate

CPU_MODEL = "EPYC-Milan"
MIGRATION_PORTS = "49152:49215"

KNOBS = (
    "cpu-model-unknown", "cpu-guest", "same-hostname", "same-uuid", "hide-host", "no-shared",
    "local-disk-guest", "shared-disk-guest", "linux-guest", "duplicate-name", "throttle", "dirty-guest", "block-ports",
    "libvirtd-stop", "libvirtd-kill", "libvirtd-restart", "host-down",
)


def add_parser(sub) -> None:
    p = sub.add_parser("knob", help="inject a failure case into a running lab (see lab/README.md)")
    p.add_argument("knob", choices=KNOBS)
    p.add_argument("host")
    p.add_argument("--as", dest="as_host", help="the other host (same-hostname, same-uuid)")
    p.add_argument("--name", help="guest name (guest knobs, duplicate-name)")
    p.add_argument("--rate", default="4mbit", help="tc rate for throttle (default 4mbit)")
    p.add_argument("--disk", choices=("local", "shared"), default="local", help="linux-guest: where its qcow2 disk lives")
    p.add_argument("--undo", action="store_true", help="revert the knob")


def run_knob(args) -> dict | None:
    h = hosts.host_state(args.host)
    fn = globals()["knob_" + args.knob.replace("-", "_")]
    return fn(h, args)


# ---------------------------------------------------------------- libvirtd
def libvirtd_pid(h: dict) -> int | None:
    pid = read_pid(config.paths().host_dir(h["name"]) / "run" / "libvirtd.pid")
    return pid if pid and pid_alive(pid) else None


def stop_libvirtd(h: dict) -> None:
    pid = libvirtd_pid(h)
    if pid:
        terminate([pid], grace=10)


def start_libvirtd(h: dict, timeout: float = 20) -> None:
    """Start HOST's libvirtd as its init script does, and return once it answers on its TCP socket.

    After a kill -9 the old pid file and sockets are left behind: libvirtd takes them over
    (the pid file's lock died with the old daemon). A daemon that exits while starting is
    started again, and the error quotes its log.
    """
    if libvirtd_pid(h):
        return
    log = config.paths().host_dir(h["name"]) / "var-log" / "libvirt" / "libvirtd.log"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not libvirtd_pid(h):
            in_host(h["anchor_pid"], ["libvirtd", "-d", "--listen", "-p", "/run/libvirtd.pid"], check=False)
        answer = run(["virsh", "-q", "-c", h["libvirt_uri"], "domcapabilities", "--virttype", "qemu"],
                     check=False, timeout=15)
        if answer.returncode == 0:
            return
        last = answer.stderr.strip()
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
    raise LabError(f"libvirtd on {h['name']} did not come back within {timeout} s: {last}\n{tail}")


def kill_libvirtd(h: dict) -> None:
    """kill -9 HOST's libvirtd (its guests' QEMU processes live on, as after a daemon crash)."""
    pid = libvirtd_pid(h)
    if pid:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def _libvirtd_down(h, args, take_down) -> dict:
    """libvirtd taken down by ``take_down`` (--undo starts it again)."""
    (start_libvirtd if args.undo else take_down)(h)
    return {"host": h["name"], "libvirtd_running": bool(libvirtd_pid(h))}


def knob_libvirtd_stop(h, args):
    return _libvirtd_down(h, args, stop_libvirtd)


def knob_libvirtd_kill(h, args):
    return _libvirtd_down(h, args, kill_libvirtd)


def knob_libvirtd_restart(h, args):
    stop_libvirtd(h)
    start_libvirtd(h)
    return {"host": h["name"], "libvirtd_pid": libvirtd_pid(h)}


# ---------------------------------------------------------------- a host that dies
def _qemu_pids(h: dict) -> list[int]:
    found = []
    for pid in netns_pids(h["netns"]):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            found.append(pid)
    return found


def _sshd_pid(h: dict) -> int | None:
    pid = read_pid(config.paths().host_dir(h["name"]) / "run" / "sshd.pid")
    return pid if pid and pid_alive(pid) else None


def _running_guests(uri: str) -> list[str]:
    out = run(["virsh", "-q", "-c", uri, "list", "--name"], check=False, timeout=15)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _runs_elsewhere(h: dict, name: str) -> bool:
    for other in hosts.load_state()["hosts"]:
        if other["name"] != h["name"] and name in _running_guests(other["libvirt_uri"]):
            return True
    return False


def knob_host_down(h, args):
    """HOST stops answering and its guests die with it, like a power cut seen from outside.

    libvirtd and sshd stop first (TERM: libvirtd leaves the guests running), then every QEMU in
    the host's namespace is killed with SIGKILL, so nothing of the guests survives and libvirt
    cannot record a clean shutdown. The namespace, its address and virtlogd stay, so ``--undo``
    is a reboot without autostart: sshd and libvirtd start again (the killed guests are shut off
    there) and the lab's own guests that were running and run nowhere else are started again;
    a guest that runs on another host now is left shut off here.
    """
    marker = config.paths().host_dir(h["name"]) / "down.json"
    if args.undo:
        if not _sshd_pid(h):
            hdir = config.paths().host_dir(h["name"])
            in_host(h["anchor_pid"], ["/usr/sbin/sshd", "-f", str(hdir / "sshd_config"), "-E", str(hdir / "sshd.log")])
        start_libvirtd(h)
        was_running = json.loads(marker.read_text()) if marker.exists() else []
        restarted, left = [], []
        for name in was_running:
            if _runs_elsewhere(h, name):
                left.append(name)
                continue
            recorder.ensure_socket(name)
            if run(["virsh", "-q", "-c", h["libvirt_uri"], "start", name], check=False).returncode == 0:
                restarted.append(name)
        marker.unlink(missing_ok=True)
        return {"host": h["name"], "up": True, "restarted": restarted, "left_shut_off": left}
    running = _running_guests(h["libvirt_uri"]) if libvirtd_pid(h) else []
    if running or not marker.exists():
        marker.write_text(json.dumps(running))
    stop_libvirtd(h)
    sshd = _sshd_pid(h)
    if sshd:
        terminate([sshd], grace=5)
    killed = _qemu_pids(h)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    if any(pid_alive(p) for p in killed):
        raise LabError(f"QEMU processes of {h['name']} survived SIGKILL: {[p for p in killed if pid_alive(p)]}")
    return {"host": h["name"], "up": False, "guests_killed": running, "qemu_pids_killed": killed}


# ---------------------------------------------------------------- identity
def knob_same_hostname(h, args):
    other = h["name"] if args.undo else _other(args).get("name")
    in_host(h["anchor_pid"], ["hostname", other])
    (config.paths().host_dir(h["name"]) / "hostname").write_text(other + "\n")
    return {"host": h["name"], "hostname": other}


def knob_same_uuid(h, args):
    new_uuid = h["host_uuid"] if args.undo else _other(args)["host_uuid"]
    conf = config.paths().host_dir(h["name"]) / "etc-libvirt" / "libvirtd.conf"
    lines = [l for l in conf.read_text().splitlines() if not l.startswith("host_uuid")]
    lines.append(f'host_uuid = "{new_uuid}"')
    conf.write_text("\n".join(lines) + "\n")
    stop_libvirtd(h)
    start_libvirtd(h)
    return {"host": h["name"], "host_uuid": new_uuid}


def _other(args) -> dict:
    if not args.as_host:
        raise LabError("this knob needs --as OTHER_HOST")
    return hosts.host_state(args.as_host)


def knob_hide_host(h, args):
    state = hosts.load_state()
    specs = [config.HostSpec(x["index"]) for x in state["hosts"]]
    hidden = set() if args.undo else {h["name"]}
    for other in state["hosts"]:
        if other["name"] == h["name"]:
            continue
        # Rewrite in place: /etc/hosts inside the host is a bind mount of this inode.
        path = config.paths().host_dir(other["name"]) / "hosts"
        with open(path, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write(hosts.hosts_file(specs, hidden))
    return {"host": h["name"], "hidden_from_others": not args.undo}


# ---------------------------------------------------------------- storage
def knob_no_shared(h, args):
    shared = str(config.paths().shared)
    mounted = _mounted_in_host(h, shared)
    if args.undo and not mounted:
        # The same FUSE view again, started inside the host's namespaces.
        in_host(h["anchor_pid"], ["bindfs", "-o", "subtype=glusterfs,fsname=vmplab-shared",
                                  str(config.paths().shared_backing), shared])
    elif not args.undo and mounted:
        in_host(h["anchor_pid"], ["umount", "-l", shared])
    return {"host": h["name"], "shared_mounted": _mounted_in_host(h, shared)}


def _mounted_in_host(h: dict, path: str) -> bool:
    out = Path(f"/proc/{h['anchor_pid']}/mountinfo").read_text()
    return any(line.split()[4] == path for line in out.splitlines())


# ---------------------------------------------------------------- CPU
def knob_cpu_model_unknown(h, args):
    """Make HOST's libvirt not know CPU model EPYC-Milan, like an older release.

    A private copy of libvirt's CPU map without that model is bind-mounted
    over /usr/share/libvirt/cpu_map inside the host, then libvirtd restarts.
    """
    target = "/usr/share/libvirt/cpu_map"
    copy = config.paths().host_dir(h["name"]) / "cpu_map"
    mounted = _mounted_in_host(h, target)
    if args.undo:
        if mounted:
            in_host(h["anchor_pid"], ["umount", target])
    elif not mounted:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(target, copy)
        index = copy / "index.xml"
        index.write_text("\n".join(l for l in index.read_text().splitlines()
                                   if f"x86_{CPU_MODEL}.xml" not in l) + "\n")
        (copy / f"x86_{CPU_MODEL}.xml").unlink()
        in_host(h["anchor_pid"], ["mount", "--bind", str(copy), target])
    stop_libvirtd(h)
    start_libvirtd(h)
    return {"host": h["name"], "knows_cpu_model": args.undo, "cpu_model": CPU_MODEL}


# ---------------------------------------------------------------- guests
def _guest(h, args, kind: str, default: str, timeout: float = 20, **spec_kw):
    name = args.name or f"{default}-{h['name']}"
    if args.undo:
        hosts.remove_guest(name, delete_disks=False)  # wherever it is: it may have migrated
        return {"host": h["name"], "guest": name, "removed": True}
    spec = guests.GuestSpec(name=name, kind=kind, **spec_kw).with_uuid()
    hosts.start_guest(h, spec)
    hosts.wait_heartbeats([name], since=time.time() - 1, timeout=timeout)
    return {"host": h["name"], "guest": name, "uuid": spec.uuid}


def knob_cpu_guest(h, args):
    cpu = (f"<cpu mode='custom' match='exact' check='none'>"
           f"<model fallback='forbid'>{CPU_MODEL}</model></cpu>")
    return _guest(h, args, "heartbeat", "cpu", cpu_xml=cpu)


def knob_local_disk_guest(h, args):
    return _guest(h, args, "local-disk", "local")


def knob_shared_disk_guest(h, args):
    return _guest(h, args, "shared-disk", "shared")


def knob_linux_guest(h, args):
    """A Debian-kernel guest whose heartbeat counter lives on its own qcow2 disk."""
    from lab import linux_guest

    if not args.undo and not linux_guest.built():
        linux_guest.build()
    kind = "linux-shared" if args.disk == "shared" else "linux-local"
    return _guest(h, args, kind, "linux", memory_mib=linux_guest.MEMORY_MIB, timeout=60)


def knob_dirty_guest(h, args):
    return _guest(h, args, "dirty", "dirty", memory_mib=config.DIRTY_MEMORY_MIB)


def knob_duplicate_name(h, args):
    if not args.name:
        raise LabError("duplicate-name needs --name GUEST (the name to duplicate)")
    if args.undo:
        run(["virsh", "-q", "-c", h["libvirt_uri"], "undefine", args.name], check=False)
        return {"host": h["name"], "guest": args.name, "removed": True}
    spec = guests.GuestSpec(name=args.name).with_uuid()
    disk = guests.prepare_disk(guests.GuestSpec(name=f"{args.name}.dup-{h['name']}"))
    guests.define_and_start(h["libvirt_uri"], spec, disk, start=False)
    return {"host": h["name"], "guest": args.name, "uuid": spec.uuid, "state": "shut off"}


# ---------------------------------------------------------------- network
def knob_throttle(h, args):
    anchor = h["anchor_pid"]
    in_host(anchor, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
    if not args.undo:
        in_host(anchor, ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                         "rate", args.rate, "burst", "32kb", "latency", "400ms"])
    return {"host": h["name"], "egress_rate": None if args.undo else args.rate}


def knob_block_ports(h, args):
    rule = ["INPUT", "-p", "tcp", "--dport", MIGRATION_PORTS, "-j", "REJECT", "--reject-with", "tcp-reset"]
    anchor = h["anchor_pid"]
    present = in_host(anchor, ["iptables", "-C", *rule], check=False).returncode == 0
    if args.undo and present:
        in_host(anchor, ["iptables", "-D", *rule])
    elif not args.undo and not present:
        in_host(anchor, ["iptables", "-A", *rule])
    return {"host": h["name"], "blocked_ports": None if args.undo else MIGRATION_PORTS}
