"""What the NFS wizard reads from each host before planning (read-only), and its parsers.

``gather_host_facts()`` runs plain read-only commands over an open ``SSHSession`` (cat, stat,
findmnt, dpkg-query/rpm, systemctl is-active, id, getent) and asks libvirt for its storage pools;
the parsing is in pure ``parse_*`` functions tested without a host. No Django here: the job code
in ``storage.nfs`` opens the sessions and stores the result.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from hosts.adapters.errors import AdapterError, CommandFailed, HostUnreachable
from hosts.adapters.facts import parse_os_release
from hosts.adapters.ssh import CommandResult

PROBE_TIMEOUT_S = 20.0
QEMU_CONF = "/etc/libvirt/qemu.conf"
FSTAB = "/etc/fstab"
EXPORTS = "/etc/exports"
GANESHA_CONF = "/etc/ganesha/ganesha.conf"

# Package names per distro family, for what each role needs.
DEBIAN = "debian"
RHEL = "rhel"
FAMILY_IDS = {
    DEBIAN: ("debian", "ubuntu"),
    RHEL: ("rhel", "fedora", "centos", "rocky", "almalinux", "alma", "ol"),
}
PACKAGES = {
    (DEBIAN, "ganesha"): ("nfs-ganesha", "nfs-ganesha-vfs", "rpcbind"),
    (DEBIAN, "kernel"): ("nfs-kernel-server",),
    (DEBIAN, "client"): ("nfs-common",),
    (RHEL, "ganesha"): ("nfs-ganesha", "nfs-ganesha-vfs", "rpcbind"),
    (RHEL, "kernel"): ("nfs-utils",),
    (RHEL, "client"): ("nfs-utils",),
}
BINARIES = ("/usr/bin/ganesha.nfsd", "/usr/sbin/rpc.nfsd", "/sbin/mount.nfs", "/usr/sbin/exportfs")
UNITS = ("nfs-ganesha", "nfs-server", "rpcbind", "firewalld")
# Who QEMU runs as when qemu.conf does not say (the distributions' build defaults).
DEFAULT_QEMU_IDENTITY = {DEBIAN: ("libvirt-qemu", "kvm"), RHEL: ("qemu", "qemu")}

Runner = Callable[..., CommandResult]


@dataclass(frozen=True)
class PathFacts:
    exists: bool = False
    is_dir: bool = False
    uid: int | None = None
    gid: int | None = None
    mode: str = ""  # as `stat -c %a` prints it, e.g. "2770"
    entries: int = 0  # directory entries (when not a mount point of its own)
    mount_fstype: str = ""  # set when the path is a mount point
    mount_source: str = ""


@dataclass(frozen=True)
class PoolFacts:
    name: str
    path: str
    active: bool
    autostart: bool
    type: str = "dir"


@dataclass(frozen=True)
class HostFacts:
    name: str
    address: str
    ssh_user: str = "root"
    os_id: str = ""
    os_id_like: str = ""
    os_pretty: str = ""
    packages: dict[str, bool] = field(default_factory=dict)
    binaries: dict[str, bool] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    ufw_active: bool = False
    selinux_enabled: bool = False
    qemu_user: str = ""
    qemu_group: str = ""
    qemu_uid: int | None = None
    qemu_gid: int | None = None
    files: dict[str, str | None] = field(default_factory=dict)
    paths: dict[str, PathFacts] = field(default_factory=dict)
    pools: tuple[PoolFacts, ...] = ()
    libvirt_error: str = ""

    @property
    def family(self) -> str | None:
        return distro_family(self.os_id, self.os_id_like)

    def installed(self, package: str) -> bool:
        return bool(self.packages.get(package))

    def active(self, unit: str) -> bool:
        return self.services.get(unit) == "active"

    def path(self, path: str) -> PathFacts:
        return self.paths.get(path, PathFacts())


def facts_to_json(facts: HostFacts) -> dict:
    return asdict(facts)


def facts_from_json(data: dict) -> HostFacts:
    return HostFacts(
        **{
            **data,
            "paths": {k: PathFacts(**v) for k, v in data.get("paths", {}).items()},
            "pools": tuple(PoolFacts(**p) for p in data.get("pools", ())),
        }
    )


# --------------------------------------------------------------------------
# Pure parsers and decisions


def distro_family(os_id: str, id_like: str = "") -> str | None:
    """'debian' or 'rhel' from os-release ID / ID_LIKE, or None if neither."""
    candidates = [os_id.lower(), *id_like.lower().split()]
    for candidate in candidates:
        for family, ids in FAMILY_IDS.items():
            if candidate in ids:
                return family
    return None


def _conf_value(raw: str) -> str:
    raw = raw.split("#", 1)[0].strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def parse_qemu_conf(text: str | None) -> tuple[str, str]:
    """The (user, group) set in qemu.conf, "" for each that is not set (commented out)."""
    user = group = ""
    for line in (text or "").splitlines():
        match = re.match(r"\s*(user|group)\s*=\s*(.+)$", line)
        if not match:
            continue
        value = _conf_value(match.group(2))
        if match.group(1) == "user" and not user:
            user = value
        elif match.group(1) == "group" and not group:
            group = value
    return user, group


def qemu_identity(conf_text: str | None, family: str | None) -> tuple[str, str]:
    """Who QEMU runs as: qemu.conf's user/group, else the distribution's default."""
    user, group = parse_qemu_conf(conf_text)
    default_user, default_group = DEFAULT_QEMU_IDENTITY.get(family or "", ("root", "root"))
    return user or default_user, group or default_group


def parse_stat(output: str) -> PathFacts | None:
    """`stat -c '%F|%u|%g|%a' PATH` → PathFacts (None on unexpected output)."""
    parts = output.strip().split("|")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return PathFacts(
        exists=True, is_dir=parts[0] == "directory", uid=int(parts[1]), gid=int(parts[2]), mode=parts[3]
    )


def parse_findmnt_fstype_source(output: str) -> tuple[str, str]:
    """`findmnt -n -o FSTYPE,SOURCE --mountpoint PATH` → (fstype, source), ("", "") if none."""
    line = output.strip().splitlines()[0] if output.strip() else ""
    if not line:
        return "", ""
    fstype, _, source = line.partition(" ")
    return fstype.strip(), source.strip()


def parse_ufw_status(output: str) -> bool:
    return bool(re.search(r"^Status:\s*active\b", output, re.MULTILINE))


def parse_dpkg_status(output: str) -> dict[str, bool]:
    """`dpkg-query -W -f='${Package}=${db:Status-Status}\\n' P…` → {package: installed?}."""
    found = {}
    for line in output.splitlines():
        name, sep, status = line.strip().partition("=")
        if sep:
            found[name] = status == "installed"
    return found


def parse_rpm_query(output: str) -> set[str]:
    """`rpm -q --qf '%{NAME}=installed\\n' P…` → the installed ones ("package P is not installed" lines skipped)."""
    return {line.split("=", 1)[0] for line in output.splitlines() if line.endswith("=installed")}


def parse_executables(output: str) -> set[str]:
    """`stat -L -c '%n|%A' PATH…` → the paths that exist and are executable by their owner."""
    found = set()
    for line in output.splitlines():
        path, sep, mode = line.rpartition("|")
        if sep and len(mode) >= 4 and mode[0] == "-" and mode[3] in "xs":
            found.add(path)
    return found


def parse_is_active(output: str, units: tuple[str, ...]) -> dict[str, str]:
    """`systemctl is-active U…` prints one state per unit, in order."""
    states = [line.strip() for line in output.splitlines() if line.strip()]
    if len(states) != len(units):
        return {unit: "unknown" for unit in units}
    return dict(zip(units, states))


def parse_getent_id(output: str) -> int | None:
    """The numeric id of a `getent passwd|group NAME` line (third field)."""
    fields = output.strip().split(":")
    if len(fields) >= 3 and fields[2].isdigit():
        return int(fields[2])
    return None


# --------------------------------------------------------------------------
# Gathering over SSH (read-only)


def _run(run: Runner, argv: list[str]) -> CommandResult:
    result = run(argv, check=False, timeout=PROBE_TIMEOUT_S)
    if result.exit_status < 0:  # the channel closed without an exit status
        raise HostUnreachable(f"No answer to `{shlex.join(argv)}`: the SSH connection may have dropped.")
    return result


def _read_file(run: Runner, path: str) -> str | None:
    """The file's text, None if it does not exist; raises if it exists but cannot be read."""
    result = _run(run, ["cat", path])
    if result.exit_status == 0:
        return result.stdout
    if "No such file" in result.stderr:
        return None
    raise CommandFailed(["cat", path], result.exit_status, result.stdout, result.stderr)


def _path_facts(run: Runner, path: str) -> PathFacts:
    stat = _run(run, ["stat", "-c", "%F|%u|%g|%a", path])
    if stat.exit_status != 0:
        return PathFacts()
    facts = parse_stat(stat.stdout) or PathFacts(exists=True)
    mount = _run(run, ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--mountpoint", path])
    fstype, source = parse_findmnt_fstype_source(mount.stdout) if mount.exit_status == 0 else ("", "")
    entries = 0
    if facts.is_dir and not fstype:
        listing = _run(run, ["ls", "-A", path])
        entries = len([line for line in listing.stdout.splitlines() if line.strip()])
    return PathFacts(**{**asdict(facts), "entries": entries, "mount_fstype": fstype, "mount_source": source})


def _packages_installed(run: Runner, family: str | None, packages: list[str]) -> dict[str, bool]:
    if not packages:
        return {}
    if family == DEBIAN:
        found = parse_dpkg_status(_run(run, ["dpkg-query", "-W", "-f=${Package}=${db:Status-Status}\\n", *packages]).stdout)
        return {p: found.get(p, False) for p in packages}
    if family == RHEL:
        found = parse_rpm_query(_run(run, ["rpm", "-q", "--qf", "%{NAME}=installed\\n", *packages]).stdout)
        return {p: p in found for p in packages}
    return {p: False for p in packages}


def gather_host_facts(
    run: Runner,
    *,
    name: str,
    address: str,
    ssh_user: str,
    paths: list[str],
    files: list[str],
    pools: Callable[[], list[PoolFacts]] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> HostFacts:
    """Read what planning needs from one host. ``run`` is ``SSHSession.run``.

    ``paths``: directories to describe (export or mount path); ``files``: config files to read
    (fstab, exports, ganesha.conf); ``pools``: returns the host's libvirt storage pools.
    """
    os_text = _read_file(run, "/etc/os-release") or _read_file(run, "/usr/lib/os-release") or ""
    release = parse_os_release(os_text)
    family = distro_family(release.id, release.id_like)
    log(f"{name}: {release.pretty_name or 'unknown OS'} (family: {family or 'unknown'})")

    wanted = sorted({p for (fam, _role), pkgs in PACKAGES.items() if fam == family for p in pkgs})
    packages = _packages_installed(run, family, wanted)
    executables = parse_executables(_run(run, ["stat", "-L", "-c", "%n|%A", *BINARIES]).stdout)
    binaries = {b: b in executables for b in BINARIES}
    services = parse_is_active(_run(run, ["systemctl", "is-active", *UNITS]).stdout, UNITS)
    ufw = _run(run, ["ufw", "status"])
    selinux = _run(run, ["selinuxenabled"])

    conf = _read_file(run, QEMU_CONF)
    user, group = qemu_identity(conf, family)
    uid = parse_getent_id(_run(run, ["getent", "passwd", user]).stdout)
    gid = parse_getent_id(_run(run, ["getent", "group", group]).stdout)

    pool_list: tuple[PoolFacts, ...] = ()
    libvirt_error = ""
    if pools is not None:
        try:
            pool_list = tuple(pools())
        except AdapterError as exc:
            libvirt_error = exc.message
    facts = HostFacts(
        name=name,
        address=address,
        ssh_user=ssh_user,
        os_id=release.id,
        os_id_like=release.id_like,
        os_pretty=release.pretty_name,
        packages=packages,
        binaries=binaries,
        services=services,
        ufw_active=ufw.exit_status == 0 and parse_ufw_status(ufw.stdout),
        selinux_enabled=selinux.exit_status == 0,
        qemu_user=user,
        qemu_group=group,
        qemu_uid=uid,
        qemu_gid=gid,
        files={f: _read_file(run, f) for f in files},
        paths={p: _path_facts(run, p) for p in paths},
        pools=pool_list,
        libvirt_error=libvirt_error,
    )
    active = [u for u in UNITS if facts.active(u)]
    log(
        f"{name}: QEMU runs as {user}:{group} ({uid}:{gid}); active: {', '.join(active) or 'none of ' + ', '.join(UNITS)}; "
        f"ufw {'active' if facts.ufw_active else 'not active'}; SELinux {'enabled' if facts.selinux_enabled else 'not enabled'}"
    )
    return facts
