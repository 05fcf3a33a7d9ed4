"""What an admin may ask of the NFS wizard, checked before anything runs (pure functions).

The form, the service and the `nfs_setup` command all call ``validate_share_request()``; it
raises ``django.core.exceptions.ValidationError`` keyed by field with messages that say what is
accepted. Nothing here touches a host: a request that fails here never reaches one.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from .choices import NfsVersionChoices, ServerImplChoices

DEFAULT_OPTIONS = "rw,sync,root_squash"
MAX_PATH_LENGTH = 200

# Letters, digits and . _ - / only: nothing a shell, an fstab, an exports line or a Ganesha
# config would read as syntax (no spaces, quotes, ; $ ` \ # , or newlines).
_PATH_CHARS_RE = re.compile(r"[A-Za-z0-9._/-]+\Z")
_NAMED_BAD_CHARS = {
    " ": "a space", "\t": "a tab", "\n": "a newline", "\r": "a carriage return", "'": "a quote",
    '"': "a quote", ";": "';'", "$": "'$'", "`": "a backtick", "\\": "a backslash", "&": "'&'",
    "|": "'|'", "*": "'*'", "?": "'?'", "#": "'#'", ",": "','", "(": "'('", ")": "')'", "<": "'<'",
    ">": "'>'", "{": "'{'", "}": "'}'", "=": "'='", ":": "':'", "~": "'~'", "!": "'!'", "%": "'%'",
}
# System directories: neither they nor anything below them may be exported or mounted over.
SYSTEM_TREES = (
    "/etc", "/usr", "/proc", "/sys", "/dev", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
    "/libx32", "/run", "/var/run", "/tmp", "/var/tmp", "/var/lib/nfs", "/etc/ganesha",
)
# Users' homes: exporting /root/.ssh or /home/alice hands out logins and keys (the portal's own
# SSH login to the host among them), and changing their owner would break those logins.
HOME_TREES = ("/root", "/home")
# Top-level directories the system's layout gives a meaning to: not themselves, but a directory
# below them (/srv/vmstore, /mnt/vmstore). Any other new top-level directory, like the recipe's
# /nfsdata, is a directory of its own and fine.
SHARED_TOP_LEVEL = ("/srv", "/mnt", "/media", "/opt", "/var", "/snap", "/nix", "/cdrom", "/efi")

# Export options we understand, by what they decide; two from one group contradict each other.
_OPTION_GROUPS = {
    "access": ("rw", "ro"),
    "sync": ("sync", "async"),
    "squash": ("root_squash", "no_root_squash", "all_squash"),
    "port": ("secure", "insecure"),
    "subtree": ("subtree_check", "no_subtree_check"),
    "wdelay": ("wdelay", "no_wdelay"),
    "hide": ("hide", "nohide"),
    "crossmnt": ("crossmnt",),
}
_FLAG_GROUP = {flag: group for group, flags in _OPTION_GROUPS.items() for flag in flags}
_VALUE_OPTION_RE = re.compile(r"(anonuid|anongid)=([0-9]+)\Z|sec=((?:sys|krb5|krb5i|krb5p)(?::(?:sys|krb5|krb5i|krb5p))*)\Z")
# uid_t and gid_t are 32-bit and (uid_t)-1 = 4294967295 means "no id": the largest real id is one less.
MAX_ANON_ID = 2**32 - 2
# Choices that widen access: accepted only with an explicit confirmation.
RISK_NO_ROOT_SQUASH = "no_root_squash"
RISK_ANON_ROOT = "anon_root"
RISK_EVERYONE = "everyone"
RISK_MESSAGES = {
    RISK_NO_ROOT_SQUASH: (
        "no_root_squash lets root on any allowed client act as root on the exported files "
        "(change owners, read every image)."
    ),
    RISK_ANON_ROOT: (
        "anonuid=0 or anongid=0 maps squashed users to root: root on any allowed client stays root on the "
        "exported files, the same as no_root_squash (with all_squash, every client user becomes root)."
    ),
    RISK_EVERYONE: "'*' lets any machine that can reach the server mount the export, not just your hosts.",
}
# Narrower CIDRs than this are fine; wider ones are refused (use '*' with confirmation instead).
_MIN_PREFIX = {4: 8, 6: 32}


@dataclass(frozen=True)
class InventoryHost:
    """What validation needs to know about a host of the inventory."""

    name: str
    address: str


@dataclass(frozen=True)
class ClientSpec:
    """One entry of who may mount: an inventory host (by address), a CIDR, or everyone ('*')."""

    kind: str  # "host" | "cidr" | "everyone"
    value: str  # the address, the network in CIDR form, or "*"
    host_name: str = ""

    def covers(self, address: str) -> bool:
        if self.kind == "everyone":
            return True
        if self.kind == "host":
            return self.value == address
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(self.value)
        except ValueError:
            return False


@dataclass(frozen=True)
class ExportOptions:
    """Parsed export options: flags in the order given, plus anonuid/anongid/sec values."""

    flags: tuple[str, ...]
    values: tuple[tuple[str, str], ...] = ()

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def value(self, name: str) -> str | None:
        return dict(self.values).get(name)

    def __str__(self) -> str:
        return ",".join([*self.flags, *(f"{k}={v}" for k, v in self.values)])

    @property
    def access(self) -> str:
        return "ro" if self.has("ro") else "rw"

    @property
    def squash(self) -> str:
        for flag in ("all_squash", "no_root_squash"):
            if self.has(flag):
                return flag
        return "root_squash"


@dataclass(frozen=True)
class ShareRequest:
    """A validated request: safe to put into commands and config files as it is."""

    server: InventoryHost
    clients: tuple[InventoryHost, ...]
    export_path: str
    mount_path: str
    export_to: tuple[ClientSpec, ...]
    options: ExportOptions
    nfs_version: str
    server_impl: str = ""
    risks: tuple[str, ...] = field(default=())


def path_problem(value: object, *, what: str) -> str | None:
    """Why ``value`` is not acceptable as an absolute directory path, or None if it is."""
    if not isinstance(value, str) or not value:
        return f"Enter the {what} as an absolute path, e.g. /srv/vmstore."
    if len(value) > MAX_PATH_LENGTH:
        return f"The {what} is longer than {MAX_PATH_LENGTH} characters."
    if not value.startswith("/"):
        return f"The {what} must be an absolute path starting with '/', e.g. /srv/vmstore."
    if not _PATH_CHARS_RE.match(value):
        bad = next(c for c in value if not _PATH_CHARS_RE.match(c))
        name = _NAMED_BAD_CHARS.get(bad, f"the character {bad!r}" if bad.isprintable() else "a control character")
        return f"The {what} contains {name}; use only letters, digits, '.', '_', '-' and '/'."
    parts = value.split("/")[1:]
    if ".." in parts:
        return f"The {what} must not contain '..'."
    if value != "/" and (value.endswith("/") or "" in parts or "." in parts or posixpath.normpath(value) != value):
        return f"Write the {what} without '.', '//' or a trailing '/': {posixpath.normpath(value)}."
    for tree in ("/", *SYSTEM_TREES):
        if value == tree or (tree != "/" and value.startswith(tree + "/")):
            return f"{value} is a system directory; choose a directory of its own, e.g. /srv/vmstore."
    for tree in HOME_TREES:
        if value == tree or value.startswith(tree + "/"):
            return f"{value} is in users' home directories (logins, SSH keys); choose a directory of its own, e.g. /srv/vmstore."
    hidden = next((part for part in parts if part.startswith(".")), None)
    if hidden:
        return f"{value} goes through the hidden directory {hidden} (dot-directories hold users' keys and settings); choose a directory of its own, e.g. /srv/vmstore."
    if value in SHARED_TOP_LEVEL:
        return f"{value} is a top-level directory the whole system shares; use a directory of its own below it, e.g. {value}/vmstore."
    return None


def parse_export_options(text: object) -> tuple[ExportOptions | None, list[str]]:
    """Parse "rw,sync,root_squash"-style options; (options, []) or (None, problems)."""
    if not isinstance(text, str) or not text.strip():
        return None, [f"Enter export options, e.g. {DEFAULT_OPTIONS}."]
    problems: list[str] = []
    flags: list[str] = []
    values: dict[str, str] = {}
    groups: dict[str, str] = {}
    for raw in text.strip().split(","):
        token = raw.strip()
        if not token:
            problems.append("The options contain an empty item (',,' or a trailing ',').")
            continue
        if token in _FLAG_GROUP:
            group = _FLAG_GROUP[token]
            if token in flags:
                problems.append(f"'{token}' is given twice.")
            elif group in groups:
                problems.append(f"'{groups[group]}' and '{token}' contradict each other; keep one.")
            else:
                groups[group] = token
                flags.append(token)
            continue
        match = _VALUE_OPTION_RE.match(token)
        if match:
            name = match.group(1) or "sec"
            if name in values:
                problems.append(f"'{name}=' is given twice.")
            elif match.group(2) is not None and (len(match.group(2)) > 10 or int(match.group(2)) > MAX_ANON_ID):
                problems.append(f"{name}={match.group(2)[:20]} is not a user or group id: ids go from 0 to {MAX_ANON_ID}.")
            values[name] = match.group(2) or match.group(3)
            continue
        shown = token if token.isprintable() and len(token) <= 40 else repr(token[:40])
        problems.append(
            f"Unknown export option {shown!r}. Known: {', '.join(sorted(_FLAG_GROUP))}, anonuid=N, anongid=N, "
            "sec=sys|krb5|krb5i|krb5p."
        )
    if problems:
        return None, problems
    return ExportOptions(flags=tuple(flags), values=tuple(values.items())), []


def _find_host(token: str, inventory: Sequence[InventoryHost]) -> InventoryHost | None:
    for host in inventory:
        if host.name.lower() == token.lower() or host.address.lower() == token.lower():
            return host
    return None


def parse_export_to(
    text: object, *, inventory: Sequence[InventoryHost], clients: Sequence[InventoryHost]
) -> tuple[tuple[ClientSpec, ...], list[str]]:
    """Who may mount the export: inventory hosts, CIDRs or '*'. Empty means exactly the clients.

    Returns (specs, problems). Every client must be covered, or it could not mount.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return tuple(ClientSpec("host", c.address, c.name) for c in clients), []
    if not isinstance(text, str):
        return (), ["Enter inventory hosts, CIDRs or '*', separated by commas."]
    bad = re.search(r"[^A-Za-z0-9._:/*, -]", text)
    if bad:
        char = bad.group(0)
        name = _NAMED_BAD_CHARS.get(char, f"the character {char!r}" if char.isprintable() else "a control character")
        return (), [f"The allowed clients contain {name}; separate hosts, CIDRs or '*' with commas or spaces."]
    specs: list[ClientSpec] = []
    problems: list[str] = []
    for token in (t.strip() for t in re.split(r"[, ]+", text.strip())):
        if not token:
            continue
        if token == "*":
            specs.append(ClientSpec("everyone", "*"))
            continue
        host = _find_host(token, inventory)
        if host is not None:
            specs.append(ClientSpec("host", host.address, host.name))
            continue
        if "/" in token and re.fullmatch(r"[0-9A-Fa-f.:]+/[0-9]{1,3}", token):
            try:
                network = ipaddress.ip_network(token, strict=True)
            except ValueError as exc:
                problems.append(f"{token!r} is not a valid network: {exc}.")
                continue
            if network.prefixlen < _MIN_PREFIX[network.version]:
                problems.append(f"{token} is wider than /{_MIN_PREFIX[network.version]}; use '*' (with confirmation) if you mean everyone.")
                continue
            if not any(ClientSpec("cidr", str(network)).covers(h.address) for h in inventory):
                problems.append(f"{token} contains no host of the inventory.")
                continue
            specs.append(ClientSpec("cidr", str(network)))
            continue
        shown = token if token.isprintable() and len(token) <= 60 else repr(token[:60])
        problems.append(f"{shown!r} is not a host of the inventory, a CIDR such as 10.0.0.0/24, or '*'.")
    if not specs and not problems:
        problems.append("Enter at least one host, CIDR or '*'.")
    if problems:
        return (), problems
    uncovered = [c.name for c in clients if not any(spec.covers(c.address) for spec in specs)]
    if uncovered:
        return (), [f"{', '.join(uncovered)} would not be allowed to mount; add it (or a CIDR containing it)."]
    unique: list[ClientSpec] = []
    for spec in specs:
        if spec.value not in {s.value for s in unique}:
            unique.append(spec)
    return tuple(unique), []


def validate_share_request(
    *,
    server: object,
    clients: Iterable[object],
    export_path: object,
    mount_path: object,
    export_to: object = "",
    options: object = DEFAULT_OPTIONS,
    nfs_version: object = NfsVersionChoices.V4_1,
    server_impl: object = "",
    confirm_risky: bool = False,
    inventory: Sequence[InventoryHost],
) -> ShareRequest:
    """Check a whole request; return it parsed, or raise ValidationError({field: [messages]}).

    ``server`` and ``clients`` are host names (or addresses) of the inventory.
    """
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    server_host = _find_host(server, inventory) if isinstance(server, str) and server else None
    if server_host is None:
        add("server", "Choose the NFS server among the hosts of the inventory.")
    client_hosts: list[InventoryHost] = []
    for raw in clients:
        host = _find_host(raw, inventory) if isinstance(raw, str) and raw else None
        if host is None:
            shown = raw if isinstance(raw, str) and raw.isprintable() and len(raw) <= 60 else repr(raw)[:60]
            add("clients", f"{shown!r} is not a host of the inventory.")
        elif host in client_hosts:
            add("clients", f"{host.name} is listed twice.")
        elif server_host is not None and host == server_host:
            add("clients", f"{host.name} is the server; it serves the export and cannot also be one of its clients.")
        else:
            client_hosts.append(host)
    if not client_hosts and "clients" not in errors:
        add("clients", "Choose at least one client host.")

    for name, value, what in (("export_path", export_path, "export directory"), ("mount_path", mount_path, "mount path")):
        problem = path_problem(value, what=what)
        if problem:
            add(name, problem)

    parsed_options, problems = parse_export_options(options)
    for problem in problems:
        add("options", problem)

    if nfs_version not in NfsVersionChoices.values:
        add("nfs_version", f"Choose an NFS version: {', '.join(NfsVersionChoices.values)}.")
    if server_impl not in ServerImplChoices.values:
        add("server_impl", "Choose kernel, ganesha, or leave empty to detect.")

    specs: tuple[ClientSpec, ...] = ()
    if "clients" not in errors:
        specs, problems = parse_export_to(export_to, inventory=inventory, clients=client_hosts)
        for problem in problems:
            add("export_to", problem)

    risks = []
    if parsed_options is not None and parsed_options.has("no_root_squash"):
        risks.append(RISK_NO_ROOT_SQUASH)
    if parsed_options is not None and "0" in (parsed_options.value("anonuid"), parsed_options.value("anongid")):
        risks.append(RISK_ANON_ROOT)
    if any(spec.kind == "everyone" for spec in specs):
        risks.append(RISK_EVERYONE)
    if risks and not confirm_risky and not errors:
        add("confirm_risky", " ".join(RISK_MESSAGES[r] for r in risks) + " Tick the confirmation to go ahead anyway.")

    if errors:
        raise ValidationError({name: [ValidationError(m) for m in messages] for name, messages in errors.items()})
    return ShareRequest(
        server=server_host,
        clients=tuple(client_hosts),
        export_path=export_path,
        mount_path=mount_path,
        export_to=specs,
        options=parsed_options,
        nfs_version=str(nfs_version),
        server_impl=str(server_impl),
        risks=tuple(risks),
    )
