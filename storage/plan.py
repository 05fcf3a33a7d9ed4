"""From facts to steps: the NFS setup plan, as a pure function (no I/O, no clock, no Django).

``build_plan(request, facts, stamp=…, token=…)`` takes a validated request
(``storage.validation.ShareRequest``) and what was read from every host
(``storage.facts.HostFacts``) and returns a ``Plan``: per host, idempotent steps with the exact
commands they run, notes on what it decided not to do and why, and blockers that stop it
before anything runs. ``stamp`` names the backups, ``token`` the proof markers; both are
inputs so the plan shown is byte for byte the plan that runs.

Both server implementations and both distribution families are planned:

- Debian/Ubuntu (apt-get, dpkg-query) and RHEL/Fedora/CentOS/Rocky/Alma (dnf, rpm);
- the kernel NFS server (/etc/exports, ``exportfs -ra``, ``systemctl enable --now nfs-server``)
  and NFS-Ganesha (an EXPORT block in /etc/ganesha/ganesha.conf, ``systemctl restart
  nfs-ganesha``).

The kernel-server path cannot run in the lab (its kernel has no nfsd): it is covered by the
unit tests of this module only.
"""

from __future__ import annotations

import re
from dataclasses import replace

from . import proof
from .facts import DEBIAN, EXPORTS, FSTAB, GANESHA_CONF, PACKAGES, RHEL, HostFacts
from .nfs_checks import ganesha_serving_probes, mount_matches, nfs_source
from .steps import (
    LIBVIRT_POOL_AUTOSTART,
    LIBVIRT_POOL_DEFINE,
    LIBVIRT_POOL_START,
    MATCH_CONTAINS,
    MATCH_EQUALS,
    MATCH_EXIT0,
    MATCH_LINE_FIELD,
    MATCH_LINES,
    MATCH_SHARED_MOUNT,
    MATCH_WORDS,
    POOL_ACTIVE,
    POOL_AUTOSTART,
    POOL_DEFINED_AT,
    Command,
    LibvirtCall,
    Note,
    Plan,
    Probe,
    Step,
)
from .libvirt_pool import dir_pool_xml
from .validation import RISK_MESSAGES, ClientSpec, ShareRequest

GANESHA = "ganesha"
KERNEL = "kernel"
EXPORT_DIR_MODE = "2770"  # rwx for QEMU's user and group, setgid so new files keep the group; never 777
FIRST_EXPORT_ID = 1000
# Ganesha's mountd port (fixed in Ganesha; the kernel's rpc.mountd picks one unless pinned).
MOUNTD_PORT = "20048"


# --------------------------------------------------------------------------
# Small pure decisions (each tested with a table)


def server_implementation(requested: str, facts: HostFacts) -> tuple[str, str]:
    """Which NFS server to use on the server host, and why."""
    if requested in (GANESHA, KERNEL):
        return requested, "chosen in the request"
    if facts.active("nfs-ganesha"):
        return GANESHA, "NFS-Ganesha is running"
    if facts.active("nfs-server"):
        return KERNEL, "the kernel NFS server is running"
    if facts.installed("nfs-ganesha") or facts.binaries.get("/usr/bin/ganesha.nfsd"):
        return GANESHA, "NFS-Ganesha is installed"
    if facts.installed("nfs-kernel-server") or (
        facts.family == RHEL and facts.binaries.get("/usr/sbin/rpc.nfsd")
    ):
        return KERNEL, "the kernel NFS server is installed"
    return KERNEL, "no NFS server is installed; the distribution's kernel NFS server will be"


def existing_dir_change(server: HostFacts, export_path: str, ids: tuple[int, int]) -> dict | None:
    """The owner and mode change the plan would make to a directory that already exists, or None.

    {"host", "path", "before", "after"}, each side as "uid:gid mode". None when the directory
    does not exist yet (the plan creates it) or already has QEMU's owner and mode 2770."""
    existing = server.path(export_path)
    if not existing.exists or not existing.is_dir:
        return None
    after = f"{ids[0]}:{ids[1]} {EXPORT_DIR_MODE}"
    if existing.uid is None or existing.gid is None:
        before = "unknown (stat said nothing)"
    else:
        before = f"{existing.uid}:{existing.gid} {existing.mode.lstrip('0') or '0'}"
    if before == after:
        return None
    return {"host": server.name, "path": export_path, "before": before, "after": after}


def pool_name_for(mount_path: str) -> str:
    """A pool name derived from the mount path: /mnt/vmstore → vmportal-mnt-vmstore."""
    return "vmportal" + re.sub(r"[^A-Za-z0-9_.-]", "-", mount_path)[:80]


def block_markers(kind: str, path: str) -> tuple[str, str]:
    return f"# BEGIN vmportal {kind} {path}", f"# END vmportal {kind} {path}"


def managed_block(text: str | None, kind: str, path: str) -> str | None:
    """Our marked block for ``path`` in a config file's text (markers included), if any."""
    begin, end = block_markers(kind, path)
    lines = (text or "").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") == begin:
            for j in range(i + 1, len(lines)):
                if lines[j].rstrip("\n") == end:
                    block = "".join(lines[i : j + 1])
                    return block if block.endswith("\n") else block + "\n"
            return "".join(lines[i:])
    return None


def _outside_blocks(text: str | None) -> list[str]:
    """The lines of a config file that are not inside one of our marked blocks."""
    out, inside = [], False
    for line in (text or "").splitlines():
        if line.startswith("# BEGIN vmportal "):
            inside = True
        elif line.startswith("# END vmportal "):
            inside = False
        elif not inside:
            out.append(line)
    return out


def foreign_fstab_entries(text: str | None, mount_path: str) -> list[str]:
    """fstab lines (not ours) that already mount something at ``mount_path``."""
    found = []
    for line in _outside_blocks(text):
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and fields[1].rstrip("/") == mount_path:
            found.append(line.strip())
    return found


def foreign_exports_entries(text: str | None, export_path: str) -> list[str]:
    """/etc/exports lines (not ours) that already export ``export_path``."""
    found = []
    for line in _outside_blocks(text):
        fields = line.split()
        if fields and not fields[0].startswith("#") and fields[0].strip('"').rstrip("/") == export_path:
            found.append(line.strip())
    return found


_GANESHA_PATH_RE = re.compile(r"(?<![A-Za-z_])Path\s*=\s*\"?([^\";]+)\"?\s*;", re.IGNORECASE)
_GANESHA_ID_RE = re.compile(r"(?<![A-Za-z_])Export_Id\s*=\s*(\d+)\s*;", re.IGNORECASE)


def _ganesha_active_text(text: str | None) -> str:
    """Ganesha config without comments (a commented-out example EXPORT is not an export)."""
    return "\n".join(line.split("#", 1)[0] for line in (text or "").splitlines())


def foreign_ganesha_exports(text: str | None, export_path: str) -> list[str]:
    outside = _ganesha_active_text("\n".join(_outside_blocks(text)))
    return [f"Path = {m}" for m in _GANESHA_PATH_RE.findall(outside) if m.strip().rstrip("/") == export_path]


def choose_export_id(text: str | None, export_path: str) -> int:
    """Our block's Export_Id if it has one, else the first free id from FIRST_EXPORT_ID."""
    ours = managed_block(text, "export", export_path)
    if ours:
        match = _GANESHA_ID_RE.search(ours)
        if match:
            return int(match.group(1))
    taken = {int(i) for i in _GANESHA_ID_RE.findall(_ganesha_active_text("\n".join(_outside_blocks(text))))}
    candidate = FIRST_EXPORT_ID
    while candidate in taken:
        candidate += 1
    return candidate


def _client_words(specs: tuple[ClientSpec, ...]) -> list[str]:
    return [spec.value for spec in specs]


def ganesha_block(request: ShareRequest, export_id: int) -> tuple[str, list[str]]:
    """Our EXPORT block for Ganesha, and the options it could not express (for a note).

    Who may mount is a CLIENT sub-block: Ganesha (4.x) ignores ``Clients`` at the EXPORT level
    ("Unknown parameter"), which would leave the export open to anyone. The EXPORT itself
    allows nobody (``Access_Type = None``); the CLIENT block grants the access asked for.
    """
    begin, end = block_markers("export", request.export_path)
    options = request.options
    lines = [
        begin,
        "# Managed by VMPortal (NFS share wizard); it rewrites this block, keep your changes outside it.",
        "EXPORT {",
        f"    Export_Id = {export_id};",
        f'    Path = "{request.export_path}";',
        f'    Pseudo = "{request.export_path}";',
        # v3 stays on next to v4: Ganesha lists an export over the MOUNT protocol (showmount -e)
        # only when NFSv3 is enabled on it. Clients still mount with the chosen vers=.
        "    Protocols = 3, 4;",
        "    Transports = TCP;",
        f"    SecType = {(options.value('sec') or 'sys').replace(':', ', ')};",
        f"    Squash = {options.squash};",
    ]
    if options.value("anonuid"):
        lines.append(f"    Anonymous_Uid = {options.value('anonuid')};")
    if options.value("anongid"):
        lines.append(f"    Anonymous_Gid = {options.value('anongid')};")
    if options.has("secure"):
        lines.append("    PrivilegedPort = true;")
    lines += [
        "    Access_Type = None;",
        "    CLIENT {",
        f"        Clients = {', '.join(_client_words(request.export_to))};",
        f"        Access_Type = {options.access.upper()};",
        "    }",
        "    FSAL {",
        "        Name = VFS;",
        "    }",
        "}",
        end,
    ]
    ignored = [
        flag for flag in options.flags
        if flag not in ("rw", "ro", "root_squash", "no_root_squash", "all_squash", "secure", "insecure")
    ]
    return "\n".join(lines) + "\n", ignored


def exports_block(request: ShareRequest) -> str:
    """Our /etc/exports entry (kernel NFS server) between its markers."""
    begin, end = block_markers("export", request.export_path)
    opts = str(request.options)
    clients = " ".join(f"{word}({opts})" for word in _client_words(request.export_to))
    return f"{begin}\n{request.export_path} {clients}\n{end}\n"


def fstab_block(request: ShareRequest) -> str:
    begin, end = block_markers("mount", request.mount_path)
    source = nfs_source(request.server.address, request.export_path)
    return f"{begin}\n{source} {request.mount_path} nfs vers={request.nfs_version},_netdev 0 0\n{end}\n"


def backup_path(path: str, host: str, stamp: str) -> str:
    """Where a config file is copied before we change it: next to it, named by host and time.

    The host name is in the name because hosts sometimes share /etc (diskless setups; the lab's
    hosts share all of /etc but fstab), and two hosts' backups must never overwrite each other.
    """
    return f"{path}.vmportal-{host}-{stamp}"


def sed_delete_block(kind: str, path: str) -> str:
    """A sed script deleting our marked block for ``path`` (paths are validated: [A-Za-z0-9._/-])."""
    begin, end = block_markers(kind, path)
    esc = lambda s: re.sub(r"([.^$*\[\]\\%])", r"\\\1", s)  # noqa: E731 - tiny local escape
    return f"\\%^{esc(begin)}$%,\\%^{esc(end)}$%d"


# --------------------------------------------------------------------------
# Steps


def _probe(*argv: str, match: str = MATCH_EXIT0, value: str = "", wait_s: float = 0.0) -> Probe:
    return Probe(argv=tuple(argv), match=match, value=value, wait_s=wait_s)


def _cmd(*argv: str, stdin: str | None = None, timeout_s: float = 60.0) -> Command:
    return Command(argv=tuple(argv), stdin=stdin, timeout_s=timeout_s)


def _package_step(host: HostFacts, role: str, packages: tuple[str, ...]) -> Step:
    family = host.family
    missing = tuple(p for p in packages if not host.installed(p)) or packages
    if family == DEBIAN:
        check = (
            _probe("dpkg-query", "-W", "-f=${Package}=${db:Status-Status}\\n", *packages, match=MATCH_LINES,
                   value="\n".join(f"{p}=installed" for p in packages)),
        )
        actions = (
            _cmd("apt-get", "update", timeout_s=600),
            _cmd("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends", *missing, timeout_s=900),
        )
        hint = "Check the host's apt sources and network (`apt-get update` output above), then resume."
    else:
        check = (_probe("rpm", "-q", "--quiet", *packages),)
        actions = (_cmd("dnf", "install", "-y", *missing, timeout_s=900),)
        hint = "Check the host's dnf repositories (nfs-ganesha comes from EPEL or the CentOS Storage SIG), then resume."
    return Step(
        key=f"{host.name}:packages",
        host=host.name,
        title=f"Install the NFS {role} packages",
        why=f"Needed: {', '.join(packages)}.",
        check=check,
        actions=actions,
        verify=check,
        hint=hint,
    )


def _file_edit_step(
    host: HostFacts, *, key: str, path: str, kind: str, item: str, block: str, stamp: str, title: str, why: str, hint: str
) -> Step:
    """Put our marked block into a config file: backup first, replace a stale block, append."""
    text = host.files.get(path)
    begin, _end = block_markers(kind, item)
    actions: list[Command] = []
    if text is not None:
        actions.append(_cmd("cp", "-a", path, backup_path(path, host.name, stamp)))
        if managed_block(text, kind, item) is not None:
            actions.append(_cmd("sed", "-i", "-e", sed_delete_block(kind, item), path))
    separator = "\n" if text and not text.endswith("\n") and managed_block(text, kind, item) is None else ""
    actions.append(_cmd("tee", "-a", path, stdin=separator + block))
    check = (
        _probe("cat", path, match=MATCH_CONTAINS, value=block),
        _probe("grep", "-c", "-x", "-F", begin, path, match=MATCH_EQUALS, value="1"),
    )
    return Step(key=key, host=host.name, title=title, why=why, check=check, actions=tuple(actions), verify=check, hint=hint)


def _server_steps(request: ShareRequest, server: HostFacts, impl: str, ids: tuple[int, int], stamp: str) -> tuple[list[Step], list[Note]]:
    steps: list[Step] = []
    notes: list[Note] = []
    name, export = server.name, request.export_path
    family = server.family
    steps.append(_package_step(server, "server", PACKAGES[(family, impl)]))

    uid, gid = ids
    stat_probe = _probe("stat", "-c", "%u:%g %a", export, match=MATCH_EQUALS, value=f"{uid}:{gid} {EXPORT_DIR_MODE}")
    change = existing_dir_change(server, export, ids)
    existing = server.path(export)
    if change is None:
        title = "Create the export directory for QEMU"
        why = (
            f"Owned by QEMU's user and group on the clients ({uid}:{gid}), mode {EXPORT_DIR_MODE}: "
            "read-write for QEMU, setgid so new images keep the group, nothing for others (never 777)."
        )
    else:
        title = "Give the existing export directory to QEMU"
        why = (
            f"{export} exists: owner and mode now {change['before']}, after this step {change['after']} "
            "(QEMU's user and group on the clients, setgid, nothing for others; never 777). "
            "Its content is not touched. Applying needs this change confirmed."
        )
        notes.append(Note(name, "warning", (
            f"{export} already exists on {name} with owner:group and mode {change['before']}; applying changes them to "
            f"{change['after']}. Confirm this change to apply, or choose a new directory."
        )))
    steps.append(
        Step(
            key=f"{name}:export-dir",
            host=name,
            title=title,
            why=why,
            check=(stat_probe,),
            actions=(_cmd("mkdir", "-p", export), _cmd("chown", f"{uid}:{gid}", export), _cmd("chmod", EXPORT_DIR_MODE, export)),
            verify=(stat_probe,),
            hint="Check that the parent directory exists on a local filesystem and that root may write there.",
        )
    )
    if existing.exists and existing.entries:
        notes.append(Note(name, "info", f"{export} already holds {existing.entries} entries; only the directory's own owner and mode change, not its content."))

    if impl == GANESHA:
        block, ignored = ganesha_block(request, choose_export_id(server.files.get(GANESHA_CONF), export))
        steps.append(
            _file_edit_step(
                server, key=f"{name}:export-config", path=GANESHA_CONF, kind="export", item=export, block=block, stamp=stamp,
                title="Add the export to NFS-Ganesha",
                why="One EXPORT block between marker comments in ganesha.conf, after a timestamped backup; a previous block of ours is replaced, never duplicated.",
                hint="Read the error above; the backup next to ganesha.conf holds the previous file.",
            )
        )
        notes.append(Note(name, "info", "Ganesha exports with Protocols = 3, 4 so that showmount -e lists the export; clients mount with vers=" + request.nfs_version + "."))
        if ignored:
            notes.append(Note(name, "info", f"Not Ganesha export options, left out: {', '.join(ignored)} (Ganesha honours the clients' sync/async requests)."))
    else:
        steps.append(
            _file_edit_step(
                server, key=f"{name}:export-config", path=EXPORTS, kind="export", item=export, block=exports_block(request), stamp=stamp,
                title="Add the export to /etc/exports",
                why="One line between marker comments, after a timestamped backup; a previous entry of ours is replaced, never duplicated.",
                hint="Read the error above; the backup next to /etc/exports holds the previous file.",
            )
        )

    steps.extend(_firewall_steps(request, server, impl, notes))

    if impl == GANESHA:
        rpcbind_active = _probe("systemctl", "is-active", "rpcbind", match=MATCH_EQUALS, value="active")
        steps.append(
            Step(
                key=f"{name}:rpcbind", host=name, title="Start rpcbind",
                why="NFSv3 and the MOUNT protocol (showmount) register with rpcbind.",
                check=(rpcbind_active,), actions=(_cmd("systemctl", "enable", "--now", "rpcbind"),),
                verify=(_probe("systemctl", "is-active", "rpcbind", match=MATCH_EQUALS, value="active", wait_s=10),),
                hint="See `journalctl -u rpcbind` on the server.",
            )
        )
        steps.append(
            Step(
                key=f"{name}:serve", host=name, title="Restart NFS-Ganesha with the export",
                why=(
                    "Ganesha reads its exports when it starts: it restarts only if it is not running, its config is newer "
                    "than the running daemon, or the block just changed (other clients of this server pause briefly, "
                    "during its grace period). Ganesha answers showmount only to allowed clients: the clients check it next."
                ),
                check=ganesha_serving_probes(),
                actions=(_cmd("systemctl", "enable", "nfs-ganesha"), _cmd("systemctl", "restart", "nfs-ganesha", timeout_s=120)),
                verify=(
                    *ganesha_serving_probes(wait_s=10),
                    # MOUNT (100005) v3 over TCP registered with rpcbind: what showmount and v3 mounts need.
                    _probe("rpcinfo", "-p", match=MATCH_WORDS, value="100005 3 tcp", wait_s=30),
                ),
                hint="See /var/log/ganesha/ganesha.log on the server; a config error names the line.",
                after_change_of=(f"{name}:export-config",),
            )
        )
    else:
        nfs_active = _probe("systemctl", "is-active", "nfs-server", match=MATCH_EQUALS, value="active")
        steps.append(
            Step(
                key=f"{name}:nfs-server", host=name, title="Start the kernel NFS server",
                why="nfs-server (nfsd, rpc.mountd) started now and at every boot.",
                check=(nfs_active,), actions=(_cmd("systemctl", "enable", "--now", "nfs-server", timeout_s=120),),
                verify=(_probe("systemctl", "is-active", "nfs-server", match=MATCH_EQUALS, value="active", wait_s=10),),
                hint="See `journalctl -u nfs-server` on the server.",
            )
        )
        exported = _probe("exportfs", "-s", match=MATCH_LINE_FIELD, value=export)
        steps.append(
            Step(
                key=f"{name}:serve", host=name, title="Reload the exports",
                why="exportfs -ra makes the kernel serve /etc/exports as it is now; it runs only if the export is not served yet or its line just changed.",
                check=(exported,), actions=(_cmd("exportfs", "-ra"),),
                verify=(replace(exported, wait_s=10),),
                hint="`exportfs -ra` prints what it rejects in /etc/exports; fix the line, then resume.",
                after_change_of=(f"{name}:export-config",),
            )
        )
    return steps, notes


def _ufw_sources(specs: tuple[ClientSpec, ...]) -> list[tuple[str, str]]:
    """(ufw 'from' argument, what `ufw status` shows for it) per allowed client spec."""
    out = []
    for spec in specs:
        out.append(("any", "Anywhere") if spec.kind == "everyone" else (spec.value, spec.value))
    return out


def _firewall_steps(request: ShareRequest, server: HostFacts, impl: str, notes: list[Note]) -> list[Step]:
    name = server.name
    steps: list[Step] = []
    if server.active("firewalld"):
        services = ("nfs", "rpc-bind", "mountd")
        check = tuple(
            _probe("firewall-cmd", *(("--permanent",) if permanent else ()), f"--query-service={s}")
            for permanent in (True, False) for s in services
        )
        steps.append(
            Step(
                key=f"{name}:firewall", host=name, title="Open the firewall for NFS (firewalld)",
                why="firewalld is active: allow the nfs, rpc-bind and mountd services permanently and reload. The firewall stays on.",
                check=check,
                actions=(
                    _cmd("firewall-cmd", "--permanent", *(f"--add-service={s}" for s in services)),
                    _cmd("firewall-cmd", "--reload"),
                ),
                verify=check,
                hint="See `firewall-cmd --state` and `journalctl -u firewalld` on the server.",
            )
        )
    if server.ufw_active:
        rules = [("tcp", "2049"), ("tcp", "111"), ("udp", "111"), ("tcp", MOUNTD_PORT), ("udp", MOUNTD_PORT)]
        check, actions = [], []
        for source, shown in _ufw_sources(request.export_to):
            for proto, port in rules:
                check.append(_probe("ufw", "status", match=MATCH_WORDS, value=f"{port}/{proto} ALLOW {shown}"))
                actions.append(_cmd("ufw", "allow", "proto", proto, "from", source, "to", "any", "port", port))
        steps.append(
            Step(
                key=f"{name}:ufw", host=name, title="Open the firewall for NFS (ufw)",
                why="ufw is active: allow NFS (2049), rpcbind (111) and mountd (20048) from the allowed clients only. The firewall stays on.",
                check=tuple(check), actions=tuple(actions), verify=tuple(check),
                hint="See `ufw status verbose` on the server.",
            )
        )
    if server.active("firewalld") or server.ufw_active:
        pin = (
            f"NFS_CORE_PARAM {{ MNT_Port = {MOUNTD_PORT}; }} in ganesha.conf" if impl == GANESHA
            else f"[mountd] port={MOUNTD_PORT} in /etc/nfs.conf"
        )
        notes.append(Note(
            name, "warning",
            f"The firewall opens mountd on port {MOUNTD_PORT}; mountd picks a random port unless pinned ({pin}). "
            "Unpinned, showmount from the clients is blocked (NFSv4 mounts still work).",
        ))
    if not server.active("firewalld") and not server.ufw_active:
        notes.append(Note(name, "info", "No active firewall (firewalld, ufw): nothing to open. VMPortal never stops a firewall."))
    return steps


def _client_steps(request: ShareRequest, client: HostFacts, stamp: str, pool_name: str) -> tuple[list[Step], list[Note]]:
    steps: list[Step] = []
    notes: list[Note] = []
    name, mount = client.name, request.mount_path
    source = nfs_source(request.server.address, request.export_path)
    steps.append(_package_step(client, "client", PACKAGES[(client.family, "client")]))
    if client.selinux_enabled:
        check = (_probe("getsebool", "virt_use_nfs", match=MATCH_EQUALS, value="virt_use_nfs --> on"),)
        steps.append(
            Step(
                key=f"{name}:selinux", host=name, title="Let QEMU use NFS (SELinux)",
                why="SELinux is enabled: set the virt_use_nfs boolean persistently. SELinux stays enforcing.",
                check=check, actions=(_cmd("setsebool", "-P", "virt_use_nfs", "1", timeout_s=300),), verify=check,
                hint="See `getsebool -a | grep virt_use_nfs` and the audit log on the host.",
            )
        )
    else:
        notes.append(Note(name, "info", "SELinux is not enabled: no boolean to set. VMPortal never runs setenforce 0."))
    steps.append(
        Step(
            key=f"{name}:sees-export", host=name, title="Check that this host sees the export",
            why=f"showmount -e asks the server's MOUNT service from this host, as mount will.",
            check=(_probe("showmount", "-e", "--no-headers", request.server.address, match=MATCH_LINE_FIELD, value=request.export_path, wait_s=15),),
            actions=(), verify=(),
            hint=(
                f"From {name}, the server must answer on rpcbind (111) and mountd: check the server's firewall "
                "and that the export lists this host (the export's clients)."
            ),
        )
    )
    steps.append(
        Step(
            key=f"{name}:mount-dir", host=name, title="Create the mount point",
            why="The mount point is the same path on every host, so guests' disk paths are the same everywhere.",
            check=(_probe("test", "-d", mount),), actions=(_cmd("mkdir", "-p", mount),), verify=(_probe("test", "-d", mount),),
            hint=f"Something that is not a directory may already be called {mount} (mkdir says \"File exists\"), or its parent may be read-only.",
        )
    )
    mounted = _probe("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--mountpoint", mount, match=MATCH_SHARED_MOUNT, value=source)
    steps.append(
        Step(
            key=f"{name}:mount", host=name, title="Mount the share",
            why=f"NFS version {request.nfs_version}, from {source}.",
            check=(mounted,),
            actions=(_cmd("mount", "-t", "nfs", "-o", f"vers={request.nfs_version}", source, mount, timeout_s=120),),
            verify=(mounted,),
            hint="`access denied by server`: the export does not list this host. `Connection refused`/timeouts: the server's firewall or NFS service.",
        )
    )
    fstab = _file_edit_step(
        client, key=f"{name}:fstab", path=FSTAB, kind="mount", item=mount, block=fstab_block(request), stamp=stamp,
        title="Mount the share at boot (/etc/fstab)",
        why="One line between marker comments, after a timestamped backup; _netdev waits for the network.",
        hint="The backup next to /etc/fstab holds the previous file; `findmnt --verify` explains fstab errors.",
    )
    steps.append(replace(fstab, verify=(*fstab.verify, _probe("findmnt", "--fstab", "-n", "--mountpoint", mount))))
    xml = dir_pool_xml(pool_name, mount)
    defined = Probe(pool=pool_name, pool_fact=POOL_DEFINED_AT, value=mount)
    steps.append(
        Step(
            key=f"{name}:pool-define", host=name, title="Define the libvirt storage pool",
            why=f"A 'dir' pool over the mount ({pool_name}): libvirt lists and creates guest images there; the OS owns the mount.",
            check=(defined,), actions=(LibvirtCall(op=LIBVIRT_POOL_DEFINE, pool=pool_name, xml=xml),), verify=(defined,),
            hint="Read libvirt's message above; `virsh pool-list --all` shows the host's pools.",
        )
    )
    autostart = Probe(pool=pool_name, pool_fact=POOL_AUTOSTART)
    steps.append(
        Step(
            key=f"{name}:pool-autostart", host=name, title="Start the pool with libvirtd",
            why="So the pool is back after a reboot (after the fstab mount).",
            check=(autostart,), actions=(LibvirtCall(op=LIBVIRT_POOL_AUTOSTART, pool=pool_name),), verify=(autostart,),
            hint="Read libvirt's message above.",
        )
    )
    active = Probe(pool=pool_name, pool_fact=POOL_ACTIVE)
    steps.append(
        Step(
            key=f"{name}:pool-start", host=name, title="Start the pool",
            why="An active pool is what virt-manager, virsh and the portal use.",
            check=(active,), actions=(LibvirtCall(op=LIBVIRT_POOL_START, pool=pool_name),), verify=(active,),
            hint="libvirt checks the target directory when starting the pool: is the share mounted?",
        )
    )
    return steps, notes


# --------------------------------------------------------------------------
# Blockers


def _blockers(request: ShareRequest, facts: dict[str, HostFacts], impl: str, pool_name: str) -> list[str]:
    blockers: list[str] = []
    server = facts[request.server.name]
    hosts = [server, *(facts[c.name] for c in request.clients)]
    for host in hosts:
        if host.ssh_user != "root":
            blockers.append(f"The portal logs in to {host.name} as {host.ssh_user}; setting up NFS needs root (sudo is not supported yet).")
        if host.family is None:
            blockers.append(f"{host.name} runs {host.os_pretty or host.os_id or 'an unknown OS'}: only Debian/Ubuntu and RHEL/Fedora/CentOS/Rocky/Alma are supported.")
    if impl == GANESHA and server.active("nfs-server"):
        blockers.append(f"The kernel NFS server runs on {server.name}; NFS-Ganesha cannot serve next to it (both use port 2049).")
    if impl == KERNEL and server.active("nfs-ganesha"):
        blockers.append(f"NFS-Ganesha runs on {server.name}; the kernel NFS server cannot serve next to it (both use port 2049).")
    export = server.path(request.export_path)
    if export.exists and not export.is_dir:
        blockers.append(f"{request.export_path} exists on {server.name} and is not a directory.")
    if impl == GANESHA:
        for entry in foreign_ganesha_exports(server.files.get(GANESHA_CONF), request.export_path):
            blockers.append(f"{GANESHA_CONF} on {server.name} already exports {request.export_path} outside VMPortal's block ({entry}); remove that EXPORT first.")
    else:
        for entry in foreign_exports_entries(server.files.get(EXPORTS), request.export_path):
            blockers.append(f"{EXPORTS} on {server.name} already exports {request.export_path} ({entry}); remove that line first.")

    identities = {(facts[c.name].qemu_uid, facts[c.name].qemu_gid) for c in request.clients}
    for client in (facts[c.name] for c in request.clients):
        if client.qemu_uid is None or client.qemu_gid is None:
            blockers.append(f"QEMU's user {client.qemu_user}:{client.qemu_group} (qemu.conf) does not exist on {client.name}.")
    if len(identities) > 1 and all(None not in ids for ids in identities):
        shown = ", ".join(f"{facts[c.name].name} {facts[c.name].qemu_uid}:{facts[c.name].qemu_gid}" for c in request.clients)
        blockers.append(f"QEMU runs as different numeric users on the clients ({shown}); NFS checks numbers, so give QEMU the same uid and gid on every client.")

    for client in (facts[c.name] for c in request.clients):
        mount = client.path(request.mount_path)
        source = nfs_source(request.server.address, request.export_path)
        if mount.exists and not mount.is_dir:
            blockers.append(f"{request.mount_path} exists on {client.name} and is not a directory.")
        elif mount.mount_fstype and not mount_matches(mount.mount_fstype, mount.mount_source, source):
            blockers.append(f"{client.name} already has {mount.mount_source} ({mount.mount_fstype}) mounted at {request.mount_path}.")
        elif mount.exists and not mount.mount_fstype and mount.entries:
            blockers.append(f"{request.mount_path} on {client.name} is not empty ({mount.entries} entries): mounting over it would hide them. Choose an empty or new directory.")
        for entry in foreign_fstab_entries(client.files.get(FSTAB), request.mount_path):
            blockers.append(f"{FSTAB} on {client.name} already mounts something at {request.mount_path} ({entry}); remove that line first.")
        if client.libvirt_error:
            blockers.append(f"Could not read the storage pools of {client.name}: {client.libvirt_error}")
        for pool in client.pools:
            if pool.name == pool_name and pool.path != request.mount_path:
                blockers.append(f"{client.name} already has a pool {pool_name} over {pool.path}.")
            elif pool.name != pool_name and pool.path == request.mount_path:
                blockers.append(f"{client.name} already has a pool {pool.name} over {request.mount_path}; libvirt allows one pool per directory. Remove it or keep using it.")
    return blockers


# --------------------------------------------------------------------------
# The plan


def build_plan(request: ShareRequest, facts: dict[str, HostFacts], *, stamp: str, token: str) -> Plan:
    """Every step, in order (server first, then each client), with the proof to run after them."""
    server = facts[request.server.name]
    impl, impl_reason = server_implementation(request.server_impl, server)
    pool_name = pool_name_for(request.mount_path)
    blockers = _blockers(request, facts, impl, pool_name)
    first_client = facts[request.clients[0].name]
    ids = (first_client.qemu_uid if first_client.qemu_uid is not None else 0, first_client.qemu_gid if first_client.qemu_gid is not None else 0)
    summary = {
        "server": server.name,
        "server_impl": impl,
        "server_impl_reason": impl_reason,
        "families": {name: f.family for name, f in facts.items()},
        "source": nfs_source(request.server.address, request.export_path),
        "export_path": request.export_path,
        "mount_path": request.mount_path,
        "pool_name": pool_name,
        "qemu": {name: f"{f.qemu_user}:{f.qemu_group} ({f.qemu_uid}:{f.qemu_gid})" for name, f in facts.items()},
        "owner": f"{ids[0]}:{ids[1]}",
        "stamp": stamp,
        "token": token,
        "options": str(request.options),
        "nfs_version": request.nfs_version,
        "export_to": [spec.value for spec in request.export_to],
        # Set when applying would chown/chmod a directory that exists: applying needs it confirmed.
        "existing_dir_change": existing_dir_change(server, request.export_path, ids),
    }
    notes: list[Note] = [Note(server.name, "info", f"Server: {'NFS-Ganesha' if impl == GANESHA else 'kernel NFS server'} ({impl_reason}).")]
    for risk in request.risks:
        notes.append(Note(server.name, "warning", "Confirmed: " + RISK_MESSAGES[risk]))
    if blockers:
        return Plan(steps=(), notes=tuple(notes), blockers=tuple(blockers), summary=summary)

    squashing = request.options.squash in ("root_squash", "all_squash")
    root_clients = [c.name for c in request.clients if facts[c.name].qemu_uid == 0]
    if squashing and root_clients:
        notes.append(
            Note(
                server.name, "warning",
                f"QEMU runs as root on {', '.join(root_clients)}; with {request.options.squash} a real NFS server maps root "
                "to nobody, so QEMU could not write its images. Run QEMU as its own user (qemu.conf user/group) "
                "or confirm no_root_squash.",
            )
        )
    steps, server_notes = _server_steps(request, server, impl, ids, stamp)
    notes.extend(server_notes)
    for client in request.clients:
        client_steps, client_notes = _client_steps(request, facts[client.name], stamp, pool_name)
        steps.extend(client_steps)
        notes.extend(client_notes)
    proof_steps = proof.proof_steps(request, facts, token=token, uid_gid=ids, pool_name=pool_name, server_impl=impl)
    return Plan(steps=tuple(steps), notes=tuple(notes), blockers=(), proof=tuple(proof_steps), summary=summary)
