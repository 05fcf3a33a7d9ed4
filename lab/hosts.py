"""Bring lab hosts up and down.

One lab host = a network namespace (veth into the ``vmplab0`` bridge, no
default route, no forwarding, no NAT), private mount and UTS namespaces with
their own copies of the libvirt directories, ``/run``, ``/etc/hosts`` and
``/etc/hostname``, and its own ``virtlogd``, ``libvirtd`` (TCP listener on the
host's address, lab only) and ``sshd`` (key auth with the lab key pair).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import config, guests, recorder
from lab.config import HostSpec
from lab.system import (
    LabError,
    check_prerequisites,
    in_host,
    is_mounted,
    link_exists,
    netns_list,
    netns_pids,
    pid_alive,
    read_pid,
    run,
    terminate,
)

INIT_SCRIPT = """#!/bin/bash
# Runs as PID 1 of nothing: the anchor of lab host {name}'s namespaces.
set -eu
H={hdir}
hostname {hostname}
mount --bind $H/hostname /etc/hostname
mount --bind $H/hosts /etc/hosts
mount --bind $H/etc-libvirt /etc/libvirt
mount --bind $H/var-lib-libvirt /var/lib/libvirt
mount --bind $H/var-cache-libvirt /var/cache/libvirt
mount --bind $H/var-log /var/log
mount --bind $H/run /run
mount --bind $H/srv /srv
mount --bind $H/mnt /mnt
mount --bind $H/fstab /etc/fstab
mount --bind $H/local-sbin /usr/local/sbin
[ -d /etc/ganesha ] && mount --bind $H/etc-ganesha /etc/ganesha
[ -d /var/lib/nfs ] && mount --bind $H/var-lib-nfs /var/lib/nfs
[ -e /sbin/mount.nfs ] && mount --bind $H/mount.nfs /sbin/mount.nfs
mkdir -p /run/sshd /run/libvirt
{shared_action}
virtlogd -d
libvirtd -d --listen -p /run/libvirtd.pid
/usr/sbin/sshd -f $H/sshd_config -E $H/sshd.log
touch $H/ready
exec sleep infinity
"""

LIBVIRTD_CONF = """
# --- VMPortal lab (never a product default) ---
listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "{host_uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """
# --- VMPortal lab ---
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
migration_address = "{address}"
migration_host = "{address}"
cgroup_controllers = [ ]
"""

SSHD_CONFIG = """# VMPortal lab sshd for {name}
ListenAddress {address}
Port 22
HostKey {host_key}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile {authorized_keys}
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
"""


# ---------------------------------------------------------------- state file
def load_state() -> dict | None:
    try:
        return json.loads(config.paths().state_file.read_text())
    except (OSError, ValueError):
        return None


def save_state(state: dict) -> None:
    path = config.paths().state_file
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def host_state(name: str) -> dict:
    state = load_state()
    if not state:
        raise LabError("the lab is not up: run `python -m lab up`")
    for h in state["hosts"]:
        if h["name"] == name:
            return h
    raise LabError(f"no lab host named {name!r}; hosts: {', '.join(h['name'] for h in state['hosts'])}")


def anchor_pid(name: str) -> int:
    pid = host_state(name)["anchor_pid"]
    if not pid_alive(pid):
        raise LabError(f"lab host {name} is not running (its namespace anchor {pid} is gone)")
    return pid


def is_up(state: dict | None = None) -> bool:
    state = state if state is not None else load_state()
    return bool(state) and all(pid_alive(h["anchor_pid"]) for h in state["hosts"])


# ---------------------------------------------------------------- keys
def ensure_keys(specs: list[HostSpec]) -> None:
    p = config.paths()
    p.ssh_dir.mkdir(parents=True, exist_ok=True)
    p.host_keys_dir.mkdir(parents=True, exist_ok=True)
    if not p.ssh_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmportal-lab", "-f", str(p.ssh_key)])
    p.authorized_keys.write_text(Path(f"{p.ssh_key}.pub").read_text())
    known = []
    for spec in specs:
        key = p.host_keys_dir / f"{spec.name}_ed25519"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.name, "-f", str(key)])
        pub = Path(f"{key}.pub").read_text().split()
        known.append(f"{spec.address} {pub[0]} {pub[1]}")
    (p.ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")


def hosts_file(specs: list[HostSpec], hidden: set[str] = frozenset()) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{s.address}\t{s.name}" for s in specs if s.name not in hidden]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- one host
def prepare_host_dir(spec: HostSpec, specs: list[HostSpec]) -> Path:
    p = config.paths()
    hdir = p.host_dir(spec.name)
    if hdir.exists():
        shutil.rmtree(hdir)
    hdir.mkdir(parents=True)
    shutil.copytree("/etc/libvirt", hdir / "etc-libvirt", symlinks=True)
    etc = hdir / "etc-libvirt"
    # No default network (it would want a bridge and dnsmasq) and no stray guests.
    for leftover in list((etc / "qemu").glob("*.xml")) + list((etc / "qemu" / "networks" / "autostart").glob("*")):
        leftover.unlink()
    with open(etc / "libvirtd.conf", "a") as f:
        f.write(LIBVIRTD_CONF.format(address=spec.address, host_uuid=spec.host_uuid))
    with open(etc / "qemu.conf", "a") as f:
        f.write(QEMU_CONF.format(address=spec.address))
    var_lib = hdir / "var-lib-libvirt"
    shutil.copytree("/var/lib/libvirt", var_lib, symlinks=True)
    (var_lib / "images").mkdir(exist_ok=True)
    cache = hdir / "var-cache-libvirt"
    cache.mkdir()
    if p.capabilities_cache.exists():
        shutil.copytree(p.capabilities_cache, cache / "qemu" / "capabilities")
    (hdir / "var-log" / "libvirt").mkdir(parents=True)
    (hdir / "run").mkdir()
    # Private /srv, /mnt, /etc/fstab and NFS state: what an admin (or the
    # portal's storage wizard) changes there stays inside this host.
    (hdir / "srv").mkdir()
    (hdir / "mnt").mkdir()
    (hdir / "fstab").write_text("# /etc/fstab of lab host " + spec.name + "\n")
    for src, dst in (("/etc/ganesha", "etc-ganesha"), ("/var/lib/nfs", "var-lib-nfs")):
        if Path(src).is_dir():
            shutil.copytree(src, hdir / dst, symlinks=True)
    # Lab stand-ins for what a namespace on this kernel lacks (see lab/README.md).
    (hdir / "local-sbin").mkdir()
    bin_dir = Path(__file__).resolve().parent / "bin"
    shutil.copy(bin_dir / "systemctl", hdir / "local-sbin" / "systemctl")
    mount_nfs = (bin_dir / "mount.nfs").read_text().replace("@STATE_DIR@", str(p.root))
    (hdir / "mount.nfs").write_text(mount_nfs)
    (hdir / "mount.nfs").chmod(0o755)
    (hdir / "hostname").write_text(spec.name + "\n")
    (hdir / "hosts").write_text(hosts_file(specs))
    (hdir / "sshd_config").write_text(
        SSHD_CONFIG.format(
            name=spec.name,
            address=spec.address,
            host_key=p.host_keys_dir / f"{spec.name}_ed25519",
            authorized_keys=p.authorized_keys,
        )
    )
    (hdir / "init.sh").write_text(
        INIT_SCRIPT.format(name=spec.name, hostname=spec.name, hdir=hdir, shared_action="")
    )
    return hdir


def create_network(spec: HostSpec) -> None:
    run(["ip", "netns", "add", spec.netns])
    run(["ip", "link", "add", spec.veth, "type", "veth", "peer", "name", "eth0", "netns", spec.netns])
    run(["ip", "link", "set", spec.veth, "master", config.BRIDGE, "up"])
    run(["ip", "-n", spec.netns, "addr", "add", f"{spec.address}/{config.NETMASK_BITS}", "dev", "eth0"])
    run(["ip", "-n", spec.netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", spec.netns, "link", "set", "lo", "up"])


def launch_host(spec: HostSpec, hdir: Path) -> int:
    log = open(hdir / "init.log", "w")
    proc = subprocess.Popen(
        [
            "nsenter", f"--net=/run/netns/{spec.netns}", "--",
            "unshare", "--mount", "--uts", "--propagation", "private", "--",
            "/bin/bash", str(hdir / "init.sh"),
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc.pid


def wait_host_ready(spec: HostSpec, hdir: Path, anchor: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (hdir / "ready").exists():
        if not pid_alive(anchor):
            raise LabError(f"{spec.name} failed to start: {(hdir / 'init.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise LabError(f"{spec.name} did not start within {timeout} s; see {hdir / 'init.log'}")
        time.sleep(0.02)
    # libvirtd answers, and its lazy QEMU capability probe is done (~4 s cold).
    last = ""
    while time.monotonic() < deadline:
        proc = run(["virsh", "-q", "-c", spec.libvirt_uri, "domcapabilities", "--virttype", "qemu"], check=False, timeout=20)
        if proc.returncode == 0:
            break
        last = proc.stderr.strip()
        time.sleep(0.1)
    else:
        raise LabError(f"libvirtd on {spec.name} does not answer: {last}")
    p = config.paths()
    while time.monotonic() < deadline:
        proc = run(ssh_argv(spec.address, ["hostname"]), check=False, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip() == spec.name:
            return
        last = proc.stderr.strip()
        time.sleep(0.1)
    raise LabError(f"sshd on {spec.name} does not accept the lab key: {last}; see {p.host_dir(spec.name) / 'sshd.log'}")


def ssh_argv(address: str, argv: list[str]) -> list[str]:
    """The ssh command line that runs argv on a lab host with the lab key."""
    import shlex

    p = config.paths()
    return [
        "ssh", "-i", str(p.ssh_key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
        "-o", f"UserKnownHostsFile={p.ssh_dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        f"root@{address}", shlex.join(argv),
    ]


# ---------------------------------------------------------------- shared storage
def mount_shared() -> int:
    """Mount the shared storage once in the root namespace, before the hosts exist.

    bindfs with ``subtype=glusterfs`` is a FUSE mount of type ``fuse.glusterfs``,
    which libvirt treats as shared storage, so migrating a guest whose disk is
    on it needs no ``--unsafe``. Every host namespace inherits the same mount.
    """
    p = config.paths()
    p.shared_backing.mkdir(parents=True, exist_ok=True)
    p.shared.mkdir(parents=True, exist_ok=True)
    if is_mounted(p.shared):
        return read_pid(p.root / "bindfs.pid") or 0
    p.logs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["bindfs", "-f", "-o", "subtype=glusterfs,fsname=vmplab-shared", str(p.shared_backing), str(p.shared)],
        stdin=subprocess.DEVNULL, stdout=open(p.logs / "bindfs.log", "a"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (p.root / "bindfs.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while not is_mounted(p.shared):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"bindfs could not mount the shared storage: {(p.logs / 'bindfs.log').read_text()[-500:]}")
        time.sleep(0.02)
    (p.shared / ".vmplab-shared").write_text("lab shared storage\n")
    return proc.pid


def unmount_shared() -> None:
    p = config.paths()
    if is_mounted(p.shared):
        run(["umount", "-l", str(p.shared)], check=False)
    pid = read_pid(p.root / "bindfs.pid")
    if pid:
        terminate([pid])
    (p.root / "bindfs.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------- up / down
def guard_subnet() -> None:
    """Keep lab addresses on this machine while the lab is down (see config.GUARD_ROUTE_METRIC).

    Idempotent; needs root. Installed before anything of the lab starts and left after down.
    """
    run(["ip", "route", "replace", "unreachable", config.SUBNET, "metric", str(config.GUARD_ROUTE_METRIC)])


def subnet_guarded() -> bool:
    out = subprocess.run(["ip", "route", "show", "type", "unreachable", config.SUBNET],
                         capture_output=True, text=True, check=False).stdout
    return f"metric {config.GUARD_ROUTE_METRIC}" in out


def up(count: int = 3, guests_per_host: int = 1, log=print) -> dict:
    """Bring up ``count`` hosts with heartbeat guests. Idempotent."""
    if not 1 <= count <= config.MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {config.MAX_HOSTS}")
    check_prerequisites()
    guard_subnet()
    state = load_state()
    if is_up(state):
        log(f"lab already up with {len(state['hosts'])} hosts; nothing changed")
        return state
    if state or leftovers():
        log("cleaning up what a previous lab left behind")
        down(log=lambda *_: None)
    started = time.monotonic()
    specs = config.host_specs(count)
    p = config.paths()
    p.root.mkdir(parents=True, exist_ok=True)
    try:
        if not guests.guests_built():
            log("building guests")
            guests.build_guests()
        for stale in (p.hosts, p.serial, p.disks, p.heartbeats):
            shutil.rmtree(stale, ignore_errors=True)
        ensure_keys(specs)
        (p.root / "hosts.map").write_text("".join(f"{s.address} {s.name}\n" for s in specs))
        run(["ip", "link", "add", config.BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{config.BRIDGE_ADDRESS}/{config.NETMASK_BITS}", "dev", config.BRIDGE])
        run(["ip", "link", "set", config.BRIDGE, "up"])
        mount_shared()
        recorder.start()
        hosts = []
        for spec in specs:
            hdir = prepare_host_dir(spec, specs)
            create_network(spec)
            anchor = launch_host(spec, hdir)
            hosts.append({
                "name": spec.name, "index": spec.index, "address": spec.address,
                "libvirt_uri": spec.libvirt_uri, "host_uuid": spec.host_uuid,
                "anchor_pid": anchor, "netns": spec.netns, "home_guests": [],
            })
        state = {"hosts": hosts, "shared_path": str(p.shared), "started_at": time.time()}
        save_state(state)
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda sh: wait_host_ready(sh[0], p.host_dir(sh[0].name), sh[1]["anchor_pid"]),
                          zip(specs, hosts)))
        log(f"hosts answer after {time.monotonic() - started:.1f} s")
        if not p.capabilities_cache.exists():
            src = p.host_dir(specs[0].name) / "var-cache-libvirt" / "qemu" / "capabilities"
            if src.exists():
                shutil.copytree(src, p.capabilities_cache)
        for spec, h in zip(specs, hosts):
            for k in range(1, guests_per_host + 1):
                name = f"hb-{spec.name}-{k}"
                start_guest(h, guests.GuestSpec(name=name).with_uuid())
                h["home_guests"].append(name)
        save_state(state)
        wait_heartbeats([g for h in hosts for g in h["home_guests"]], since=state["started_at"])
    except BaseException:
        log("lab up failed; removing what was created")
        down(log=lambda *_: None)
        raise
    state["ready_s"] = round(time.monotonic() - started, 2)
    save_state(state)
    log(f"lab up: {count} hosts, {count * guests_per_host} guests heartbeating, ready in {state['ready_s']} s")
    return state


def start_guest(host: dict, spec: guests.GuestSpec, *, start: bool = True) -> None:
    recorder.ensure_socket(spec.name)
    directory = config.paths().host_dir(host["name"]) / "var-lib-libvirt" / "images"
    disk = guests.prepare_disk(spec, directory=directory)
    if spec.kind in ("local-disk", "linux-local"):
        # The host sees its private /var/lib/libvirt/images, not the state copy.
        disk = Path("/var/lib/libvirt/images") / disk.name
    guests.define_and_start(host["libvirt_uri"], spec, disk, start=start)


def guest_disk_files(name: str) -> list[Path]:
    """Every disk file the lab may have made for guest ``name``, on any host."""
    p = config.paths()
    files = [p.disks / f"{name}.img", p.shared / f"{name}.qcow2"]
    files += [p.host_dir(h["name"]) / "var-lib-libvirt" / "images" / f"{name}.qcow2"
              for h in (load_state() or {"hosts": []})["hosts"]]
    return files


def remove_guest(name: str, *, delete_disks: bool = True) -> None:
    """Destroy and undefine ``name`` wherever it is now (it may have migrated), and delete its disks."""
    for h in (load_state() or {"hosts": []})["hosts"]:
        run(["virsh", "-q", "-c", h["libvirt_uri"], "destroy", name], check=False)
        run(["virsh", "-q", "-c", h["libvirt_uri"], "undefine", name], check=False)
    if delete_disks:
        for f in guest_disk_files(name):
            f.unlink(missing_ok=True)


def wait_heartbeats(names: list[str], since: float, timeout: float = 20.0) -> None:
    from lab.heartbeat import read_beats

    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if not read_beats(n, since)}
        time.sleep(0.05)
    if pending:
        raise LabError(f"no heartbeat from {', '.join(sorted(pending))} within {timeout} s")


def leftovers() -> list[str]:
    found = [f"netns {ns}" for ns in netns_list() if ns.startswith("labh")]
    if link_exists(config.BRIDGE):
        found.append(f"bridge {config.BRIDGE}")
    p = config.paths()
    if is_mounted(p.shared):
        found.append(f"mount {p.shared}")
    if recorder.running_pid():
        found.append("heartbeat recorder")
    return found


def down(log=print) -> None:
    """Stop everything the lab started. Safe when nothing runs."""
    p = config.paths()
    state = load_state() or {"hosts": []}
    namespaces = {h["netns"] for h in state["hosts"]} | {ns for ns in netns_list() if ns.startswith("labh")}
    for ns in sorted(namespaces):
        pids = netns_pids(ns)
        for h in state["hosts"]:
            if h["netns"] == ns and pid_alive(h["anchor_pid"]):
                pids.append(h["anchor_pid"])
        terminate(sorted(set(pids)))
        run(["ip", "netns", "del", ns], check=False)
    pid = recorder.running_pid()
    if pid:
        terminate([pid])
    p.recorder_pid.unlink(missing_ok=True)
    unmount_shared()
    if link_exists(config.BRIDGE):
        run(["ip", "link", "del", config.BRIDGE], check=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(link_exists(f"vl-labh{i}") for i in range(1, config.MAX_HOSTS + 1)):
        time.sleep(0.05)
    p.state_file.unlink(missing_ok=True)
    for stale in (p.hosts, p.serial, p.disks):
        shutil.rmtree(stale, ignore_errors=True)
    if os.geteuid() == 0:
        guard_subnet()
    log("lab down" if state["hosts"] or namespaces else "lab was not running; nothing to do")


# ---------------------------------------------------------------- status
def list_guests(uri: str) -> dict[str, str]:
    proc = run(["virsh", "-q", "-c", uri, "list", "--all"], check=False, timeout=10)
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2].strip()
    return out


def status() -> dict:
    state = load_state()
    p = config.paths()
    if not state:
        return {"up": False, "state_dir": str(p.root), "hosts": [], "leftovers": leftovers()}
    hosts = []
    for h in state["hosts"]:
        alive = pid_alive(h["anchor_pid"])
        libvirtd = read_pid(p.host_dir(h["name"]) / "run" / "libvirtd.pid")
        guest_states = list_guests(h["libvirt_uri"]) if alive else {}
        hosts.append({
            "name": h["name"],
            "address": h["address"],
            "libvirt_uri": h["libvirt_uri"],
            "host_uuid": h["host_uuid"],
            "ssh_user": "root",
            "ssh_port": 22,
            "ssh_key": str(p.ssh_key),
            "ssh_known_hosts": str(p.ssh_dir / "known_hosts"),
            "running": alive,
            "libvirtd_running": bool(alive and libvirtd and pid_alive(libvirtd)),
            "guests": sorted(guest_states),
            "guest_states": guest_states,
            "netns": h["netns"],
        })
    return {
        "up": all(h["running"] for h in hosts),
        "state_dir": str(p.root),
        "shared_path": state.get("shared_path"),
        "ready_s": state.get("ready_s"),
        "hosts": hosts,
    }
