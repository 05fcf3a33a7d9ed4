"""Small wrappers over the host tools the lab drives (ip, nsenter, virsh...)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class LabError(Exception):
    """A lab operation failed; the message says what to do about it."""


def run(argv: list[str], *, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def in_host(anchor_pid: int, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv inside a lab host's network, mount and UTS namespaces."""
    return run(["nsenter", "-t", str(anchor_pid), "-n", "-m", "-u", "--", *argv], **kwargs)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pids: list[int], *, grace: float = 3.0) -> None:
    """TERM the given PIDs, then KILL whatever is left after ``grace`` seconds."""
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    if proc.returncode != 0:
        return []
    return [int(x) for x in proc.stdout.split()]


def netns_list() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", name], check=False).returncode == 0


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


REQUIRED_TOOLS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "bindfs": "bindfs",
    "tc": "iproute2",
    "iptables": "iptables",
}


def check_prerequisites() -> None:
    """Fail with a clear message (what is missing, how to get it) before creating anything."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces, mounts, libvirtd): run it as root")
    missing = {}
    for tool, package in REQUIRED_TOOLS.items():
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            missing.setdefault(package, []).append(tool)
    if missing:
        pkgs = " ".join(sorted(missing))
        tools = ", ".join(t for ts in missing.values() for t in ts)
        problems.append(f"missing tools ({tools}): install them with `apt-get install -y {pkgs}`")
    if not Path("/dev/fuse").exists():
        problems.append("/dev/fuse is missing: the shared storage (bindfs) needs FUSE")
    if problems:
        raise LabError("cannot bring the lab up:\n  - " + "\n  - ".join(problems))
