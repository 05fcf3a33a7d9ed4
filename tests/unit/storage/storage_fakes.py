"""A small fake world of hosts for the NFS wizard: it interprets the commands the plan runs.

Each ``FakeHost`` keeps files, directories, packages, services, mounts and a private libvirt
(the ``test://`` driver, so pools are real libvirt objects) and records every argv it was asked
to run. The server's exports are what its config says when its service (re)started; a client's
mount of SERVER:EXPORT maps paths below the mount point onto the server's export directory, so
markers written on one host are read on the others — as on the lab, without a lab.
"""

from __future__ import annotations

import itertools
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from hosts.adapters.ssh import CommandResult
from storage.facts import FSTAB, GANESHA_CONF
from storage.nfs_checks import GANESHA_PIDFILE

_clock = itertools.count(1)


def _ok(argv, stdout="", stderr="", status=0) -> CommandResult:
    return CommandResult(argv=list(argv), exit_status=status, stdout=stdout, stderr=stderr, duration_s=0.0)


def _fail(argv, stderr="", status=1, stdout="") -> CommandResult:
    return _ok(argv, stdout=stdout, stderr=stderr, status=status)


DEBIAN_OS = 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
ROCKY_OS = 'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n'


@dataclass
class FakeHost:
    name: str
    address: str
    os_release: str = DEBIAN_OS
    family: str = "debian"
    packages: set[str] = field(default_factory=set)
    binaries: set[str] = field(default_factory=set)
    units: dict[str, str] = field(default_factory=dict)  # unit -> "active"/"inactive"
    ufw: bool = False
    selinux: bool = False
    sebool: bool = False
    users: dict[str, int] = field(default_factory=lambda: {"root": 0, "libvirt-qemu": 64055, "qemu": 107})
    groups: dict[str, int] = field(default_factory=lambda: {"root": 0, "kvm": 107, "qemu": 107})
    files: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int, str]] = field(default_factory=lambda: {"/srv": (0, 0, "755"), "/mnt": (0, 0, "755")})
    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # mountpoint -> (fstype, source)
    firewalld_services: set[str] = field(default_factory=set)
    ufw_rules: list[str] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    mtimes: dict[str, int] = field(default_factory=dict)
    served: dict[str, list[str]] = field(default_factory=dict)
    reachable: bool = True
    fail_on: dict[str, tuple[int, str]] = field(default_factory=dict)  # argv prefix (joined) -> (status, stderr)
    world: "FakeWorld | None" = None

    def __post_init__(self):
        self._xml = Path(tempfile.mkdtemp()) / "node.xml"
        self._xml.write_text("<node></node>")
        self.conn = libvirt.open(f"test://{self._xml}")

    # ---- filesystem, with client mounts mapped onto the server's export
    def _resolve(self, path: str) -> tuple[FakeHost, str]:
        for mountpoint, (_fstype, source) in self.mounts.items():
            if path == mountpoint or path.startswith(mountpoint + "/"):
                address, export = source.rsplit(":", 1)
                server = self.world.by_address(address.strip("[]"))
                return server, export + path[len(mountpoint):]
        return self, path

    def write(self, path: str, content: str) -> None:
        host, real = self._resolve(path)
        host.files[real] = content
        host.mtimes[real] = next(_clock)

    def read(self, path: str) -> str | None:
        host, real = self._resolve(path)
        return host.files.get(real)

    def isdir(self, path: str) -> bool:
        host, real = self._resolve(path)
        return real in host.dirs

    # ---- the commands
    def run(self, argv, *, stdin=None, timeout=30.0, check=False) -> CommandResult:
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        self.calls.append(list(argv))
        for prefix, (status, stderr) in self.fail_on.items():
            if shlex.join(argv).startswith(prefix):
                return _fail(argv, stderr, status)
        return self._dispatch(list(argv), stdin)

    def _dispatch(self, argv, stdin):
        cmd, args = argv[0], argv[1:]
        if cmd == "runuser":
            return self._dispatch(args[args.index("--") + 1:], stdin)
        if cmd == "setpriv":
            return self._dispatch(args[args.index("--") + 1:], stdin)
        if cmd == "env":
            while args and "=" in args[0]:
                args = args[1:]
            return self._dispatch(args, stdin)
        handler = getattr(self, "_cmd_" + cmd.replace("-", "_").replace(".", "_"), None)
        if handler is None:
            return _fail(argv, f"{cmd}: command not found", 127)
        return handler(argv, args, stdin)

    def _cmd_cat(self, argv, args, stdin):
        content = self.read(args[0]) if args[0] != "/etc/os-release" else self.os_release
        if args[0] == "/etc/libvirt/qemu.conf" and content is None:
            content = self.files.get(args[0])
        return _ok(argv, content) if content is not None else _fail(argv, f"cat: {args[0]}: No such file or directory")

    def _cmd_stat(self, argv, args, stdin):
        if args[0] == "-L":  # stat -L -c '%n|%A' PATH…: which binaries exist
            lines = [f"{path}|-rwxr-xr-x\n" for path in args[3:] if path in self.binaries]
            return _ok(argv, "".join(lines), status=0 if len(lines) == len(args[3:]) else 1)
        fmt, path = args[1], args[2]
        host, real = self._resolve(path)
        if real in host.dirs:
            uid, gid, mode = host.dirs[real]
            kind = "directory"
        elif real in host.files:
            uid, gid, mode, kind = 0, 0, "644", "regular file"
        else:
            return _fail(argv, f"stat: cannot statx '{path}': No such file or directory")
        out = fmt.replace("%F", kind).replace("%u", str(uid)).replace("%g", str(gid)).replace("%a", mode)
        return _ok(argv, out + "\n")

    def _cmd_findmnt(self, argv, args, stdin):
        if "--fstab" in args:
            target = args[-1]
            for line in (self.files.get(FSTAB) or "").splitlines():
                fields = line.split()
                if fields and not fields[0].startswith("#") and len(fields) > 1 and fields[1] == target:
                    return _ok(argv, line + "\n")
            return _fail(argv)
        target = args[-1]
        if target in self.mounts:
            fstype, source = self.mounts[target]
            return _ok(argv, f"{fstype} {source}\n")
        return _fail(argv)

    def _cmd_ls(self, argv, args, stdin):
        path = args[-1]
        host, real = self._resolve(path)
        names = sorted({p[len(real) + 1:].split("/")[0] for p in [*host.files, *host.dirs] if p.startswith(real + "/")})
        return _ok(argv, "".join(n + "\n" for n in names))

    def _cmd_dpkg_query(self, argv, args, stdin):
        if self.family != "debian":
            return _fail(argv, "dpkg-query: command not found", 127)
        packages = args[2:]
        out = "".join(f"{p}=installed\n" for p in sorted(packages) if p in self.packages)
        missing = [p for p in packages if p not in self.packages]
        return _ok(argv, out, "".join(f"dpkg-query: no packages found matching {p}\n" for p in missing), 1 if missing else 0)

    def _cmd_rpm(self, argv, args, stdin):
        if self.family != "rhel":
            return _fail(argv, "rpm: command not found", 127)
        if args[:2] == ["-q", "--qf"]:
            packages = args[3:]
            out = "".join(f"{p}=installed\n" if p in self.packages else f"package {p} is not installed\n" for p in packages)
            return _ok(argv, out, status=sum(p not in self.packages for p in packages))
        packages = args[2:]  # rpm -q --quiet P…
        return _ok(argv) if all(p in self.packages for p in packages) else _fail(argv)

    def _cmd_test(self, argv, args, stdin):
        flag, path = args[0], args[1]
        if flag == "-x":
            return _ok(argv) if path in self.binaries else _fail(argv)
        if flag == "-d":
            return _ok(argv) if self.isdir(path) else _fail(argv)
        if flag == "-e":
            return _ok(argv) if self.isdir(path) or self.read(path) is not None else _fail(argv)
        raise AssertionError(argv)

    def _cmd_systemctl(self, argv, args, stdin):
        verb, units = args[0], [a for a in args[1:] if not a.startswith("-")]
        if verb == "is-active":
            states = [self.units.get(unit, "inactive") for unit in units]
            out = "".join(state + "\n" for state in states)
            return _ok(argv, out) if all(state == "active" for state in states) else _fail(argv, status=3, stdout=out)
        for unit in units:
            if verb in ("restart", "start") or (verb == "enable" and "--now" in args):
                self.units[unit] = "active"
                if unit in ("nfs-ganesha", "nfs-server"):
                    self._serve(unit)
        return _ok(argv)

    def _serve(self, unit: str) -> None:
        """What the daemon serves from now on: {export path: allowed clients}."""
        conf = self.files.get(GANESHA_CONF if unit == "nfs-ganesha" else "/etc/exports") or ""
        self.served = {}
        if unit == "nfs-ganesha":
            for block in re.findall(r"^EXPORT \{.*?^\}", conf, re.MULTILINE | re.DOTALL):
                path = re.search(r'^\s*Path = "([^"]+)";', block, re.MULTILINE).group(1)
                clients = re.search(r"^\s*Clients = ([^;]+);", block, re.MULTILINE)
                # Ganesha ignores Clients outside a CLIENT block (the export would allow no one here).
                inside = clients and "CLIENT {" in block[: clients.start()]
                self.served[path] = [c.strip() for c in clients.group(1).split(",")] if inside else []
            self.files[GANESHA_PIDFILE] = "4242\n"
            self.mtimes[GANESHA_PIDFILE] = next(_clock)
        else:
            for line in conf.splitlines():
                if line.strip() and not line.startswith("#"):
                    path, *specs = line.split()
                    self.served[path] = [spec.split("(")[0] for spec in specs]

    def _allowed(self, clients: list[str]) -> bool:
        import ipaddress

        for spec in clients:
            if spec == "*" or spec == self.address:
                return True
            if "/" in spec and ipaddress.ip_address(self.address) in ipaddress.ip_network(spec):
                return True
        return False

    def _cmd_showmount(self, argv, args, stdin):
        server = self.world.by_address(args[-1])
        if server is None or not (server.units.get("nfs-ganesha") == "active" or server.units.get("nfs-server") == "active"):
            return _fail(argv, "clnt_create: RPC: Program not registered")
        ganesha = server.units.get("nfs-ganesha") == "active"
        # Ganesha lists an export only to clients it allows; the kernel's mountd lists them all.
        lines = [f"{path} {','.join(clients)}\n" for path, clients in sorted(server.served.items()) if not ganesha or self._allowed(clients)]
        return _ok(argv, "".join(lines))

    def _cmd_exportfs(self, argv, args, stdin):
        if args == ["-s"]:
            return _ok(argv, "".join(f"{path}  {' '.join(c + '(rw)' for c in clients)}\n" for path, clients in self.served.items()))
        self._serve("nfs-server")
        return _ok(argv)

    def _cmd_rpcinfo(self, argv, args, stdin):
        if not any(self.units.get(u) == "active" for u in ("nfs-ganesha", "nfs-server", "rpcbind")):
            return _fail(argv, "rpcinfo: can't contact portmapper")
        return _ok(argv, "   program vers proto   port  service\n    100000    4   tcp    111  portmapper\n    100005    3   tcp  42077  mountd\n")

    def _cmd_find(self, argv, args, stdin):
        path, newer = args[0], args[2]
        if newer not in self.files or path not in self.files:
            return _fail(argv, f"find: '{newer}': No such file or directory")
        return _ok(argv, f"{path}\n" if self.mtimes.get(path, 0) > self.mtimes.get(newer, 0) else "")

    def _cmd_ufw(self, argv, args, stdin):
        if not self.ufw:
            return _fail(argv, "ufw: command not found", 127)
        if args[0] == "status":
            return _ok(argv, "Status: active\n\nTo Action From\n" + "".join(r + "\n" for r in self.ufw_rules))
        if args[0] == "allow":
            proto, source, port = args[2], args[4], args[-1]
            self.ufw_rules.append(f"{port}/{proto}   ALLOW   {'Anywhere' if source == 'any' else source}")
            return _ok(argv)
        raise AssertionError(argv)

    def _cmd_firewall_cmd(self, argv, args, stdin):
        for arg in args:
            if arg.startswith("--add-service="):
                self.firewalld_services.add(arg.split("=", 1)[1])
            if arg.startswith("--query-service="):
                return _ok(argv) if arg.split("=", 1)[1] in self.firewalld_services else _fail(argv)
        return _ok(argv)

    def _cmd_selinuxenabled(self, argv, args, stdin):
        return _ok(argv) if self.selinux else _fail(argv)

    def _cmd_getsebool(self, argv, args, stdin):
        return _ok(argv, f"virt_use_nfs --> {'on' if self.sebool else 'off'}\n")

    def _cmd_setsebool(self, argv, args, stdin):
        self.sebool = True
        return _ok(argv)

    def _cmd_getent(self, argv, args, stdin):
        table, name = args
        ids = self.users if table == "passwd" else self.groups
        if name not in ids:
            return _fail(argv, status=2)
        return _ok(argv, f"{name}:x:{ids[name]}:\n")

    def _cmd_mkdir(self, argv, args, stdin):
        path = args[-1]
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.dirs.setdefault("/" + "/".join(parts[:i]), (0, 0, "755"))
        return _ok(argv)

    def _cmd_chown(self, argv, args, stdin):
        owner, path = args
        uid, gid = owner.split(":")
        _u, _g, mode = self.dirs[path]
        self.dirs[path] = (int(uid), int(gid), mode)
        return _ok(argv)

    def _cmd_chmod(self, argv, args, stdin):
        mode, path = args
        uid, gid, _m = self.dirs[path]
        self.dirs[path] = (uid, gid, mode)
        return _ok(argv)

    def _cmd_cp(self, argv, args, stdin):
        src, dst = args[-2], args[-1]
        if src not in self.files:
            return _fail(argv, f"cp: cannot stat '{src}'")
        self.files[dst] = self.files[src]
        self.mtimes[dst] = next(_clock)
        return _ok(argv)

    def _cmd_sed(self, argv, args, stdin):
        script, path = args[2], args[3]
        match = re.fullmatch(r"\\%\^(.*)\$%,\\%\^(.*)\$%d", script)
        assert match, script
        unescape = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
        begin, end = unescape(match.group(1)), unescape(match.group(2))
        out, inside = [], False
        for line in self.files[path].splitlines(keepends=True):
            if line.rstrip("\n") == begin:
                inside = True
            elif inside and line.rstrip("\n") == end:
                inside = False
            elif not inside:
                out.append(line)
        self.write(path, "".join(out))
        return _ok(argv)

    def _cmd_tee(self, argv, args, stdin):
        path = args[-1]
        if "-a" in args:
            self.write(path, (self.read(path) or "") + stdin)
        else:
            if not self.isdir(path.rsplit("/", 1)[0]):
                return _fail(argv, f"tee: {path}: No such file or directory")
            self.write(path, stdin)
        return _ok(argv, stdin)

    def _cmd_grep(self, argv, args, stdin):
        pattern, path = args[-2], args[-1]
        content = self.read(path)
        if content is None:
            return _fail(argv, status=2)
        count = sum(1 for line in content.splitlines() if line == pattern)
        return _ok(argv, f"{count}\n") if count else _fail(argv, stdout="0\n")

    def _cmd_mount(self, argv, args, stdin):
        source, mountpoint = args[-2], args[-1]
        address, export = source.rsplit(":", 1)
        server = self.world.by_address(address.strip("[]"))
        if server is None or export not in server.served or not self._allowed(server.served[export]):
            return _fail(argv, f"mount.nfs: access denied by server while mounting {source}", 32)
        self.mounts[mountpoint] = ("nfs4", source)
        return _ok(argv)

    def _cmd_rm(self, argv, args, stdin):
        path = args[-1]
        host, real = self._resolve(path)
        host.files.pop(real, None)
        return _ok(argv)

    def _cmd_apt_get(self, argv, args, stdin):
        if args[0] == "install":
            self.packages.update(a for a in args[1:] if not a.startswith("-"))
        return _ok(argv)

    def _cmd_dnf(self, argv, args, stdin):
        self.packages.update(a for a in args[1:] if not a.startswith("-"))
        return _ok(argv)

    # what changed a file since a moment (for "the second run rewrote nothing")
    def snapshot(self) -> dict:
        return {"files": dict(self.files), "mtimes": dict(self.mtimes), "dirs": dict(self.dirs), "mounts": dict(self.mounts)}


class FakeWorld:
    def __init__(self, *hosts: FakeHost):
        self.hosts = {h.name: h for h in hosts}
        for host in hosts:
            host.world = self

    def by_address(self, address: str) -> FakeHost | None:
        return next((h for h in self.hosts.values() if h.address == address or h.name == address), None)

    def all_calls(self) -> list[list[str]]:
        return [call for host in self.hosts.values() for call in host.calls]


class FakeChannel:
    """What storage.runner and storage.facts expect of a host (run + libvirt)."""

    def __init__(self, host: FakeHost):
        self.host = host

    def run(self, argv, *, stdin=None, timeout=30.0, check=False):
        return self.host.run(argv, stdin=stdin, timeout=timeout, check=check)

    def libvirt(self):
        return self.host.conn


def debian_lab_world() -> FakeWorld:
    """Three Debian hosts like the lab: Ganesha installed everywhere, QEMU runs as root."""
    conf = 'user = "root"\ngroup = "root"\n'
    hosts = [
        FakeHost(
            name, f"10.0.0.1{i}",
            packages={"nfs-ganesha", "nfs-ganesha-vfs", "rpcbind", "nfs-common"},
            binaries={"/usr/bin/ganesha.nfsd", "/sbin/mount.nfs"},
            files={"/etc/libvirt/qemu.conf": conf, FSTAB: f"# /etc/fstab of {name}\n", GANESHA_CONF: "# Ganesha example\n#EXPORT {\n#  Export_Id = 12345;\n#}\n"},
        )
        for i, name in enumerate(("h1", "h2", "h3"), start=1)
    ]
    return FakeWorld(*hosts)
