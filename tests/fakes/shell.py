"""The commands a fleet host answers over SSH, interpreted over a small model of the host.

``Shell`` is mixed into ``FleetHost``: files, directories, packages, services, mounts and
users. The server's exports are what its config says when its service (re)started; a
client's mount of SERVER:EXPORT maps paths below the mount point onto the server's export
directory, so markers written on one host are read on the others, as on the lab.
Unknown commands answer "command not found" (127), as a shell would.
"""

from __future__ import annotations

import hashlib
import itertools
import posixpath
import re
import shlex

from hosts.adapters import batch, facts as host_facts, probes
from hosts.adapters.errors import AdapterError
from hosts.adapters.ssh import CommandResult
from storage.facts import FSTAB, GANESHA_CONF
from storage.nfs_checks import GANESHA_PIDFILE

_clock = itertools.count(1)


def ok(argv, stdout="", stderr="", status=0) -> CommandResult:
    return CommandResult(argv=list(argv), exit_status=status, stdout=stdout, stderr=stderr, duration_s=0.0)


def fail(argv, stderr="", status=1, stdout="") -> CommandResult:
    return ok(argv, stdout=stdout, stderr=stderr, status=status)


DEBIAN_OS = 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
ROCKY_OS = 'ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n'


class Shell:
    """Command handlers over the host's model (the fields live on FleetHost)."""

    # ---- filesystem, with client mounts mapped onto the server's export
    def _resolve(self, path: str) -> tuple["Shell", str]:
        for mountpoint, (_fstype, source) in self.mounts.items():
            if path == mountpoint or path.startswith(mountpoint + "/"):
                address, export = source.rsplit(":", 1)
                server = self.fleet.by_address(address.strip("[]"))
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
    def answer(self, argv: list[str], stdin: str | None = None) -> CommandResult:
        """What the host answers to ``argv``: a scripted answer, an injected failure, else the model's."""
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        self.commands.append(list(argv))
        line = shlex.join(argv)
        for prefix, answer in self.scripted.items():
            if line.startswith(prefix):
                if isinstance(answer, BaseException):
                    raise answer
                return answer(argv, stdin) if callable(answer) else answer
        for prefix, (status, stderr) in self.fail_on.items():
            if line.startswith(prefix):
                return fail(argv, stderr, status)
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
            return fail(argv, f"{cmd}: command not found", 127)
        return handler(argv, args, stdin)

    def _cmd_cat(self, argv, args, stdin):
        content = self.read(args[0]) if args[0] != "/etc/os-release" else self.os_release
        if args[0] == "/etc/libvirt/qemu.conf" and content is None:
            content = self.files.get(args[0])
        return ok(argv, content) if content is not None else fail(argv, f"cat: {args[0]}: No such file or directory")

    def _cmd_stat(self, argv, args, stdin):
        if args[0] == "-L":  # stat -L -c '%n|%A' PATH…: which binaries exist
            lines = [f"{path}|-rwxr-xr-x\n" for path in args[3:] if path in self.binaries]
            return ok(argv, "".join(lines), status=0 if len(lines) == len(args[3:]) else 1)
        fmt, path = args[1], args[2]
        host, real = self._resolve(path)
        if real in host.dirs:
            uid, gid, mode = host.dirs[real]
            kind = "directory"
        elif real in host.files:
            uid, gid, mode, kind = 0, 0, "644", "regular file"
        else:
            return fail(argv, f"stat: cannot statx '{path}': No such file or directory")
        out = fmt.replace("%F", kind).replace("%u", str(uid)).replace("%g", str(gid)).replace("%a", mode)
        return ok(argv, out + "\n")

    def _cmd_findmnt(self, argv, args, stdin):
        if "--fstab" in args:
            target = args[-1]
            for line in (self.files.get(FSTAB) or "").splitlines():
                fields = line.split()
                if fields and not fields[0].startswith("#") and len(fields) > 1 and fields[1] == target:
                    return ok(argv, line + "\n")
            return fail(argv)
        if args == ["-rn", "-o", "TARGET,FSTYPE"]:  # the whole mount table, in mount order
            table = [("/", "ext4")] + [(m, fstype) for m, (fstype, _source) in self.mounts.items()]
            return ok(argv, "".join(f"{m.replace(' ', chr(92) + 'x20')} {fstype}\n" for m, fstype in table))
        if "-T" in args:  # findmnt -n -o FSTYPE,TARGET -T PATH: the filesystem holding PATH
            path = args[args.index("-T") + 1]
            holding = [m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")]
            if not holding:
                return ok(argv, "ext4 /\n")
            mountpoint = max(holding, key=len)
            return ok(argv, f"{self.mounts[mountpoint][0]} {mountpoint}\n")
        target = args[-1]
        if target in self.mounts:
            fstype, source = self.mounts[target]
            return ok(argv, f"{fstype} {source}\n")
        return fail(argv)

    def _cmd_realpath(self, argv, args, stdin):  # realpath -mz -- PATH...: no symlinks in the model
        paths = args[args.index("--") + 1:]
        if any(not p for p in paths):
            return fail(argv, "realpath: '': No such file or directory")
        return ok(argv, "".join(posixpath.normpath(p) + "\0" for p in paths))

    def _cmd_ls(self, argv, args, stdin):
        path = args[-1]
        host, real = self._resolve(path)
        names = sorted({p[len(real) + 1:].split("/")[0] for p in [*host.files, *host.dirs] if p.startswith(real + "/")})
        return ok(argv, "".join(n + "\n" for n in names))

    def _cmd_dpkg_query(self, argv, args, stdin):
        if self.family != "debian":
            return fail(argv, "dpkg-query: command not found", 127)
        packages = args[2:]
        out = "".join(f"{p}=installed\n" for p in sorted(packages) if p in self.packages)
        missing = [p for p in packages if p not in self.packages]
        return ok(argv, out, "".join(f"dpkg-query: no packages found matching {p}\n" for p in missing), 1 if missing else 0)

    def _cmd_rpm(self, argv, args, stdin):
        if self.family != "rhel":
            return fail(argv, "rpm: command not found", 127)
        if args[:2] == ["-q", "--qf"]:
            packages = args[3:]
            out = "".join(f"{p}=installed\n" if p in self.packages else f"package {p} is not installed\n" for p in packages)
            return ok(argv, out, status=sum(p not in self.packages for p in packages))
        packages = args[2:]  # rpm -q --quiet P…
        return ok(argv) if all(p in self.packages for p in packages) else fail(argv)

    def _cmd_true(self, argv, args, stdin):
        return ok(argv)

    def _cmd_test(self, argv, args, stdin):
        flag, path = args[0], args[1]
        if flag == "-x":
            return ok(argv) if path in self.binaries else fail(argv)
        if flag == "-d":
            return ok(argv) if self.isdir(path) else fail(argv)
        if flag == "-e":
            return ok(argv) if self.isdir(path) or self.read(path) is not None else fail(argv)
        raise AssertionError(argv)

    def _cmd_systemctl(self, argv, args, stdin):
        verb, units = args[0], [a for a in args[1:] if not a.startswith("-")]
        if verb == "is-active":
            states = [self.units.get(unit, "inactive") for unit in units]
            out = "".join(state + "\n" for state in states)
            return ok(argv, out) if all(state == "active" for state in states) else fail(argv, status=3, stdout=out)
        for unit in units:
            if verb in ("restart", "start") or (verb == "enable" and "--now" in args):
                self.units[unit] = "active"
                if unit in ("nfs-ganesha", "nfs-server"):
                    self._serve(unit)
        return ok(argv)

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
        server = self.fleet.by_address(args[-1])
        if server is None or not (server.units.get("nfs-ganesha") == "active" or server.units.get("nfs-server") == "active"):
            return fail(argv, "clnt_create: RPC: Program not registered")
        ganesha = server.units.get("nfs-ganesha") == "active"
        # Ganesha lists an export only to clients it allows; the kernel's mountd lists them all.
        lines = [f"{path} {','.join(clients)}\n" for path, clients in sorted(server.served.items()) if not ganesha or self._allowed(clients)]
        return ok(argv, "".join(lines))

    def _cmd_exportfs(self, argv, args, stdin):
        if args == ["-s"]:
            return ok(argv, "".join(f"{path}  {' '.join(c + '(rw)' for c in clients)}\n" for path, clients in self.served.items()))
        self._serve("nfs-server")
        return ok(argv)

    def _cmd_rpcinfo(self, argv, args, stdin):
        if not any(self.units.get(u) == "active" for u in ("nfs-ganesha", "nfs-server", "rpcbind")):
            return fail(argv, "rpcinfo: can't contact portmapper")
        return ok(argv, "   program vers proto   port  service\n    100000    4   tcp    111  portmapper\n    100005    3   tcp  42077  mountd\n")

    def _cmd_find(self, argv, args, stdin):
        path, newer = args[0], args[2]
        if newer not in self.files or path not in self.files:
            return fail(argv, f"find: '{newer}': No such file or directory")
        return ok(argv, f"{path}\n" if self.mtimes.get(path, 0) > self.mtimes.get(newer, 0) else "")

    def _cmd_ufw(self, argv, args, stdin):
        if not self.ufw:
            return fail(argv, "ufw: command not found", 127)
        if args[0] == "status":
            return ok(argv, "Status: active\n\nTo Action From\n" + "".join(r + "\n" for r in self.ufw_rules))
        if args[0] == "allow":
            proto, source, port = args[2], args[4], args[-1]
            self.ufw_rules.append(f"{port}/{proto}   ALLOW   {'Anywhere' if source == 'any' else source}")
            return ok(argv)
        raise AssertionError(argv)

    def _cmd_firewall_cmd(self, argv, args, stdin):
        for arg in args:
            if arg.startswith("--add-service="):
                self.firewalld_services.add(arg.split("=", 1)[1])
            if arg.startswith("--query-service="):
                return ok(argv) if arg.split("=", 1)[1] in self.firewalld_services else fail(argv)
        return ok(argv)

    def _cmd_selinuxenabled(self, argv, args, stdin):
        return ok(argv) if self.selinux else fail(argv)

    def _cmd_getsebool(self, argv, args, stdin):
        return ok(argv, f"virt_use_nfs --> {'on' if self.sebool else 'off'}\n")

    def _cmd_setsebool(self, argv, args, stdin):
        self.sebool = True
        return ok(argv)

    def _cmd_getent(self, argv, args, stdin):
        if args[0] == "ahosts":  # how this host resolves a name
            found = self.resolve(args[1])
            return ok(argv, "".join(f"{a}      STREAM {args[1]}\n" for a in found), status=0 if found else 2)
        table, name = args
        ids = self.users if table == "passwd" else self.groups
        if name not in ids:
            return fail(argv, status=2)
        return ok(argv, f"{name}:x:{ids[name]}:\n")

    def _cmd_mkdir(self, argv, args, stdin):
        path = args[-1]
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.dirs.setdefault("/" + "/".join(parts[:i]), (0, 0, "755"))
        return ok(argv)

    def _cmd_chown(self, argv, args, stdin):
        owner, path = args
        uid, gid = owner.split(":")
        _u, _g, mode = self.dirs[path]
        self.dirs[path] = (int(uid), int(gid), mode)
        return ok(argv)

    def _cmd_chmod(self, argv, args, stdin):
        mode, path = args
        uid, gid, _m = self.dirs[path]
        self.dirs[path] = (uid, gid, mode)
        return ok(argv)

    def _cmd_cp(self, argv, args, stdin):
        src, dst = args[-2], args[-1]
        if src not in self.files:
            return fail(argv, f"cp: cannot stat '{src}'")
        self.files[dst] = self.files[src]
        self.mtimes[dst] = next(_clock)
        return ok(argv)

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
        return ok(argv)

    def _cmd_tee(self, argv, args, stdin):
        path = args[-1]
        if "-a" in args:
            self.write(path, (self.read(path) or "") + stdin)
        else:
            if not self.isdir(path.rsplit("/", 1)[0]):
                return fail(argv, f"tee: {path}: No such file or directory")
            self.write(path, stdin)
        return ok(argv, stdin)

    def _cmd_grep(self, argv, args, stdin):
        if args[0] == "-E":  # grep -E PATTERN FILE: the qemu.conf lines the probes read
            assert args[1] == probes.QEMU_CONF_PATTERN, args
            content = self.read(args[2])
            if content is None:
                return fail(argv, f"grep: {args[2]}: No such file or directory", 2)
            lines = [line for line in content.splitlines() if probes._CONF_LINE.match(line)]
            return ok(argv, "".join(f"{line}\n" for line in lines), status=0 if lines else 1)
        pattern, path = args[-2], args[-1]
        content = self.read(path)
        if content is None:
            return fail(argv, status=2)
        count = sum(1 for line in content.splitlines() if line == pattern)
        return ok(argv, f"{count}\n") if count else fail(argv, stdout="0\n")

    def _cmd_mount(self, argv, args, stdin):
        source, mountpoint = args[-2], args[-1]
        address, export = source.rsplit(":", 1)
        server = self.fleet.by_address(address.strip("[]"))
        if server is None or export not in server.served or not self._allowed(server.served[export]):
            return fail(argv, f"mount.nfs: access denied by server while mounting {source}", 32)
        self.mounts[mountpoint] = ("nfs4", source)
        return ok(argv)

    def _cmd_rm(self, argv, args, stdin):
        paths = args[args.index("--") + 1:] if "--" in args else [a for a in args if not a.startswith("-")]
        for path in paths:
            host, real = self._resolve(path)
            host.files.pop(real, None)
        return ok(argv)

    # ---- the preflight probes (hosts.adapters.probes): fixed scripts, values as "$1"…
    def _cmd_timeout(self, argv, args, stdin):
        result = self._dispatch(args[1:], stdin)
        return ok(argv, result.stdout, result.stderr, result.exit_status)

    def _cmd_python3(self, argv, args, stdin):
        if not self.python3:
            return fail(argv, "python3: command not found", 127)
        assert args[:2] == ["-c", probes.LISTENER_PY], args
        return self._listen(argv)

    def _cmd_bash(self, argv, args, stdin):
        if args[:2] == ["-c", probes.DISK_PROBES_BASH]:  # $1 nonce, $2 prefix length, prefix, groups of four
            nonce, length = args[3], int(args[4])
            items = args[5 + length:]
            return ok(argv, "".join(f"item={nonce}:{i // 4}\n" + self._disk_probe(*items[i:i + 4])
                                    for i in range(0, len(items) - 3, 4)))
        assert args[:2] == ["-c", probes.CONNECT_SH], args
        return self._connect(argv, args[3], int(args[4]))

    def _cmd_sh(self, argv, args, stdin):
        script, params = args[1], args[3:]  # args[2] is the script's $0
        if script == batch.BATCH_SH:  # $1 nonce, $2 bound, then (shlex-joined argv, stdin) pairs
            # A command that fails the way a connection does (an injected adapter error) ends
            # the batch's output there, as a dropped connection or a timeout would.
            pairs, results = params[2:], []
            for i in range(0, len(pairs) - 1, 2):
                try:
                    results.append(self.answer(shlex.split(pairs[i]), pairs[i + 1] or None))
                except AdapterError:
                    return fail(argv, "", 255, batch.format_answers(params[0], results).rsplit(f"{params[0]} end", 1)[0])
            return ok(argv, batch.format_answers(params[0], results))
        if script == probes.LISTENER_SOCAT_SH:
            return self._listen(argv) if self.socat else fail(argv, "socat: not found", 127)
        if script == probes.MARKER_SH:
            return self._marker(argv, params[0], params[1], stdin)
        if script == probes.MARKERS_SH:  # $1 prefix, then directories: each marker's path (or nothing), NUL-ended
            made = [self._marker(argv, directory, params[0], stdin) for directory in params[1:]]
            return ok(argv, "".join((m.stdout if m.exit_status == 0 else "") + "\0" for m in made))
        if script == probes.DISK_PROBE_SH:
            return ok(argv, self._disk_probe(*params[:4]))
        if script == probes.DIGEST_SH:
            content = self.read(params[0])
            if content is None:
                return fail(argv, f"stat: cannot statx '{params[0]}': No such file or directory")
            return ok(argv, f"{len(content)} {hashlib.sha256(content.encode()).hexdigest()}\n")
        if script == host_facts.RESOLVE_SH:  # $1 nonce, then names: getent's answer and "NONCE STATUS" each
            answers = [self._cmd_getent(argv, ["ahosts", name], stdin) for name in params[1:]]
            return ok(argv, "".join(f"{a.stdout}{params[0]} {a.exit_status}\n" for a in answers))
        if script == probes.QEMU_IDENTITY_SH:  # $1 pattern, $2 nonce: the lines, "NONCE STATUS", os-release
            grep = self._cmd_grep(argv, ["-E", params[0], "/etc/libvirt/qemu.conf"], stdin)
            return ok(argv, f"{grep.stdout}\n{params[1]} {grep.exit_status}\n{self.os_release}")
        if script == probes.CONNECTS_SH:  # $1 timeout, then (address, port) pairs: "INDEX STATUS STDERR" each
            lines = []
            for i in range(1, len(params) - 1, 2):
                tried = self._connect(argv, params[i], int(params[i + 1]))
                lines.append(f"{(i - 1) // 2} {tried.exit_status} {tried.stderr.replace(chr(10), ' ')}")
            return ok(argv, "".join(line + "\n" for line in lines))
        if script == probes.DIGESTS_SH:  # $1 size limit, then paths: "INDEX SIZE SHA" or "INDEX -" each
            lines = []
            for i, path in enumerate(params[1:]):
                content = self.read(path)
                lines.append(f"{i} -" if content is None
                             else f"{i} {len(content)} {hashlib.sha256(content.encode()).hexdigest()}")
            return ok(argv, "".join(line + "\n" for line in lines))
        raise AssertionError(f"unexpected script: {script[:60]!r}")

    def resolve(self, name: str) -> list[str]:
        """Addresses ``name`` resolves to here: ``resolves`` if set, else every fleet host by hostname."""
        if self.resolves is not None:
            return list(self.resolves.get(name, []))
        return [h.address for h in self.fleet.hosts.values() if name in (h.hostname, h.name)]

    def _listen(self, argv):
        port = probes.MIGRATION_PORT_MIN + 7
        self.fleet.listening.add((self.address, port))
        return ok(argv, f"{port}\n")

    def _connect(self, argv, address: str, port: int):
        target = self.fleet.by_address(address)
        if target is None:
            return fail(argv, f"bash: connect: No route to host\nbash: /dev/tcp/{address}/{port}: No route to host\n")
        if target.dropped:
            return fail(argv, status=124)
        if probes.MIGRATION_PORT_MIN <= port <= probes.MIGRATION_PORT_MAX and target.blocked_ports:
            return fail(argv, f"bash: connect: Connection refused\nbash: line 1: /dev/tcp/{address}/{port}: Connection refused\n")
        if (address, port) in self.fleet.listening or port == 22:
            return ok(argv)
        return fail(argv, "bash: connect: Connection refused\n")

    def _dir_exists(self, path: str) -> bool:
        host, real = self._resolve(path)
        return real in host.dirs or any(posixpath.dirname(f) == real for f in host.files)

    def _marker(self, argv, directory: str, prefix: str, token: str):
        if not self._dir_exists(directory):
            return fail(argv, f"mktemp: failed to create file via template '{prefix}XXXXXXXXXX'")
        path = f"{directory}/{prefix}F{next(self.fleet.marker_names):09d}"
        self.write(path, token)
        return ok(argv, path)

    def _disk_probe(self, marker: str, path: str, write: str, room: str) -> str:
        lines = []
        if marker:
            content = self.read(marker)
            lines.append(f"marker={content if content is not None else '-'}")
        if self.read(path) is not None:
            lines += ["exists=1", f"stat={self.perms.get(path, 'root:root 644')}"]
            for mode in ("r", "w") if write == "1" else ("r",):
                lines += [f"qemu_{mode}={1 if (path, mode) in self.qemu_denied else 0}", f"root_{mode}=0"]
            lines.append("qemu_dir=0")
        else:
            lines.append("exists=0")
        if room == "1":
            lines.append(f"room={self.room_kib.get(posixpath.dirname(path), '')}")
        return "\n".join(lines) + "\n"

    def _cmd_apt_get(self, argv, args, stdin):
        if args[0] == "install":
            self.packages.update(a for a in args[1:] if not a.startswith("-"))
        return ok(argv)

    def _cmd_dnf(self, argv, args, stdin):
        self.packages.update(a for a in args[1:] if not a.startswith("-"))
        return ok(argv)

    # what changed a file since a moment (for "the second run rewrote nothing")
    def snapshot(self) -> dict:
        return {"files": dict(self.files), "mtimes": dict(self.mtimes), "dirs": dict(self.dirs), "mounts": dict(self.mounts)}


