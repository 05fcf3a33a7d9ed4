"""Copies straight from one host to another, with a one-time key that can only write those copies.

The relay (``images.copy_between_hosts``) passes every byte through the portal, where
paramiko encrypts in Python: a few tens of MiB/s. Here the source host's own ``ssh``
streams the file to the destination's ``sshd`` instead, and the portal only watches the
progress. For that one copy the portal:

1. makes an ed25519 key pair (``ssh.generate_keypair``) and leaves the private half on the
   source in a fresh 0700 directory, beside a ``known_hosts`` holding only the
   destination's *pinned* host key (``StrictHostKeyChecking=yes``: no trust on first use);
2. reads which ``authorized_keys`` file the destination's running sshd consults for the
   portal's user (its ``-f`` config from ``/run/sshd.pid``, then ``sshd -T -C``), and
   appends one line::

       restrict,from="<source>",expiry-time="<copy's deadline>",command="sh <dir>/run" ssh-ed25519 … vmportal-copy-…

   ``restrict`` forbids forwarding and ptys, ``from`` lets only the source use it, the
   expiry makes it useless even if removing it fails, and the forced command can only
   create (never overwrite) only the listed copies;
3. removes that line again (atomically: filtered copy then ``mv``, under ``flock`` of the
   directory) and both temporary directories, whatever happened (``DirectRoute.close``).

When any of that is not possible (no ssh client on the source, no route between the
hosts, sshd without key files, the key refused at the first copy) ``DirectUnavailable``
says why and nothing is left behind; the caller relays instead.

No Django here. Remote commands are argv lists; the scripts are constants taking their
values as ``$1``…; what goes into the key line is validated first (an IP address, a
public key, a tag of ``[a-z0-9-]``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import AdapterError, CommandTimeout
from .images import (
    FILE_EXISTS_EXIT,
    WRITE_STDIN_SH,
    CopyFailed,
    CopyResult,
    copy_hint,
    last_error_line,
    parse_dd_progress,
)
from .ssh import CommandResult, HostKeyInfo, SSHSession, generate_keypair

log = logging.getLogger(__name__)

TAG_PREFIX = "vmportal-copy-"
HOST_KEY_ALIAS = "vmportal-destination"
STARTED_MARK = "vmportal-direct-copy-started"
NOT_ALLOWED_EXIT = 126
SSH_OWN_FAILURE_EXIT = 255  # ssh's exit status when it, not the remote command, failed
# Fast AEAD ciphers first (AES-GCM runs on the CPU's AES instructions); all are OpenSSH defaults.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
_TAG = re.compile(r"[a-z0-9-]{1,64}")
_WORK_DIR = re.compile(r"/tmp/vmportal-copy\.[A-Za-z0-9]{10}")

# On the source: a private directory with the key (from stdin) and the pinned host key, and the
# address the source's packets to the destination leave from (what the key's from= allows).
SOURCE_PREPARE_SH = r"""
set -u
dst=$1; known=$2
command -v ssh >/dev/null 2>&1 || { echo "no ssh client on this host (install openssh-client)" >&2; exit 3; }
case $dst in
    *[!0-9A-Fa-f.:]*) ip=$(getent ahosts "$dst" | awk 'NR == 1 { print $1 }') ;;
    *) ip=$dst ;;
esac
[ -n "$ip" ] || { echo "cannot resolve $dst" >&2; exit 4; }
from=$(ip -o route get "$ip" 2>&1 | sed -n 's/.* src \([^ ]*\).*/\1/p')
[ -n "$from" ] || { echo "no route to $ip" >&2; exit 4; }
umask 077
dir=$(mktemp -d /tmp/vmportal-copy.XXXXXXXXXX) || exit 5
cat > "$dir/key" || { rm -rf -- "$dir"; exit 5; }
printf '%s\n' "$known" > "$dir/known_hosts"
printf 'dir %s\nfrom %s\n' "$dir" "$from"
"""

# On the destination: which sshd runs, with which config, and what it says for this user and source.
DISCOVER_SH = r"""
user=$1; from=$2
pid=$(cat /run/sshd.pid 2>/dev/null)
conf=
if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    # sshd retitles itself ("sshd: /usr/sbin/sshd -f CONFIG [listener] …"): words may be split by spaces.
    conf=$(tr '\0 ' '\n\n' < "/proc/$pid/cmdline" | awk 'next_is_conf { print; exit } $0 == "-f" { next_is_conf = 1; next } /^-f./ { print substr($0, 3); exit }')
    [ -z "$conf" ] || [ -f "$conf" ] || conf=
fi
sshd=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
echo "config ${conf:-/etc/ssh/sshd_config}"
getent passwd "$user" | awk -F: '{ print "home " $6; print "uid " $3 }'
if [ -n "$conf" ]; then set -- -f "$conf"; else set --; fi
"$sshd" -T "$@" -C "user=$user,host=$from,addr=$from" | grep -iE '^(authorizedkeysfile|pubkeyauthentication|permitrootlogin) '
"""

# On the destination: the forced command's script (from stdin) in a private directory, and the
# key's line appended to the keys file. Prints the directory.
AUTHORIZE_SH = r"""
set -u
file=$1; from=$2; key=$3; tag=$4; lifetime=$5
[ -L "$file" ] && { echo "$file is a symbolic link: not editing it" >&2; exit 5; }
umask 077
dir=$(mktemp -d /tmp/vmportal-copy.XXXXXXXXXX) || exit 5
cat > "$dir/run" || { rm -rf -- "$dir"; exit 5; }
expiry=$(date -d "+$lifetime seconds" +%Y%m%d%H%M%S) || { rm -rf -- "$dir"; exit 5; }
keydir=$(dirname -- "$file")
mkdir -p -- "$keydir" || { rm -rf -- "$dir"; exit 5; }
exec 9<"$keydir"
flock -w 20 9 || { rm -rf -- "$dir"; echo "$keydir is locked by someone else" >&2; exit 5; }
if [ -s "$file" ] && [ -n "$(tail -c 1 -- "$file")" ]; then printf '\n' >> "$file"; fi
printf 'restrict,from="%s",expiry-time="%s",command="sh %s/run" %s %s\n' "$from" "$expiry" "$dir" "$key" "$tag" >> "$file" \
    || { rm -rf -- "$dir"; exit 5; }
printf 'dir %s\nexpires %s\n' "$dir" "$expiry"
"""

# On the destination: the key's line (or every line whose comment starts with the tag) removed,
# and the forced command's directory: the one given, and the one the line itself names (so a
# caller that died before it learned the directory still removes it).
REVOKE_SH = r"""
set -u
file=$1; tag=$2; dir=$3
[ -z "$dir" ] || rm -rf -- "$dir"
[ -f "$file" ] || exit 0
grep -qF -- " $tag" "$file" || exit 0
grep -F -- " $tag" "$file" | sed -n 's|.*,command="sh \(/tmp/vmportal-copy\.[A-Za-z0-9]\{10\}\)/run" .*|\1|p' |
    while read -r named; do rm -rf -- "$named"; done
exec 9<"$(dirname -- "$file")"
flock -w 20 9 || { echo "the keys file's directory stayed locked" >&2; exit 1; }
tmp=$(mktemp -- "$file.vmportal.XXXXXX") || exit 1
grep -vF -- " $tag" "$file" > "$tmp"
[ $? -le 1 ] || { rm -f -- "$tmp"; exit 1; }
chown --reference="$file" -- "$tmp" && chmod --reference="$file" -- "$tmp" && mv -f -- "$tmp" "$file" \
    || { rm -f -- "$tmp"; exit 1; }
! grep -qF -- " $tag" "$file"
"""

# On the source: the key and any ssh still using it gone.
SOURCE_CLEANUP_SH = r"""
dir=$1
pkill -f -- "$dir/key" 2>/dev/null
rm -rf -- "$dir" && ! [ -e "$dir" ]
"""

# On the source: one file streamed to the destination by ssh itself (no pipe in between). The
# writer's dd reports progress on its stderr, which ssh forwards here; ssh's exit status is the
# writer's, or 255 when ssh itself failed.
SOURCE_COPY_SH = r"""
dir=$1; user=$2; addr=$3; port=$4; src=$5; request=$6; ciphers=$7
test -r "$src" || { echo "cannot read $src: No such file or permission denied" >&2; exit 2; }
ssh -F /dev/null -T -x -a -c "$ciphers" -i "$dir/key" -o IdentitiesOnly=yes -o IdentityAgent=none \
    -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null -o HostKeyAlias=vmportal-destination -o CheckHostIP=no \
    -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o Compression=no \
    -o LogLevel=ERROR -p "$port" -l "$user" -- "$addr" "$request" < "$src"
echo "ssh exit $?"
"""

# The destination's writer: like the relay's, but reporting its progress (the relay counts bytes itself).
WRITE_STDIN_PROGRESS_SH = WRITE_STDIN_SH.replace("status=none", "status=progress")


class DirectUnavailable(AdapterError):
    """A direct copy between these hosts cannot be set up; ``message`` says why. Nothing was left behind."""


@dataclass(frozen=True)
class SshdFacts:
    """What the destination said about its sshd and the user the portal logs in as."""

    config: str
    home: str | None
    uid: int | None
    settings: dict[str, str]
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Grant:
    """One authorized one-time key: enough to remove it again, also after the worker died."""

    keys_file: str
    tag: str
    work_dir: str  # on the destination: the forced command's script
    source_dir: str  # on the source: the private key and the pinned host key
    from_address: str
    fingerprint: str
    expires: str  # destination's local time, YYYYMMDDHHMMSS

    def to_json(self) -> dict:
        return {"keys_file": self.keys_file, "tag": self.tag, "work_dir": self.work_dir,
                "source_dir": self.source_dir, "from": self.from_address, "fingerprint": self.fingerprint,
                "expires": self.expires}

    @classmethod
    def from_json(cls, data: dict) -> Grant:
        return cls(keys_file=str(data["keys_file"]), tag=str(data["tag"]), work_dir=str(data.get("work_dir", "")),
                   source_dir=str(data.get("source_dir", "")), from_address=str(data.get("from", "")),
                   fingerprint=str(data.get("fingerprint", "")), expires=str(data.get("expires", "")))


@dataclass(frozen=True)
class Endpoint:
    """How the source's ssh reaches the destination: the portal's own login there, and its pinned key."""

    address: str
    port: int
    user: str
    host_key: str  # "type base64", the pin


# ---------------------------------------------------------------- pure parts
def parse_fields(text: str) -> dict[str, str]:
    """``key value…`` lines into a dict (keys lower-cased; the first of a key wins)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key.lower() not in found:
            found[key.lower()] = value.strip()
    return found


def parse_sshd_facts(stdout: str, stderr: str = "") -> SshdFacts:
    """``DISCOVER_SH``'s output: the config file, the user's home and uid, sshd's effective settings."""
    fields = parse_fields(stdout)
    uid = fields.get("uid", "")
    settings = {k: v for k, v in fields.items() if k not in {"config", "home", "uid"}}
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    return SshdFacts(config=fields.get("config", ""), home=fields.get("home") or None,
                     uid=int(uid) if uid.isdigit() else None, settings=settings, errors=errors[-3:])


def expand_keys_path(pattern: str, *, user: str, home: str, uid: int) -> str:
    """sshd's ``AuthorizedKeysFile`` tokens (%h %u %U %%) expanded; relative paths are under the home."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            token = pattern[i + 1]
            replacement = {"h": home, "u": user, "U": str(uid), "%": "%"}.get(token)
            if replacement is None:
                raise ValueError(f"unknown token %{token} in AuthorizedKeysFile {pattern!r}")
            out.append(replacement)
            i += 2
            continue
        out.append(ch)
        i += 1
    path = "".join(out)
    if not path.startswith("/"):
        path = home.rstrip("/") + "/" + path
    return path


def keys_file(facts: SshdFacts, *, user: str) -> str:
    """The file the destination's sshd reads this user's keys from, or DirectUnavailable saying why not."""
    s = facts.settings
    if "authorizedkeysfile" not in s:
        detail = f" ({'; '.join(facts.errors)})" if facts.errors else ""
        raise DirectUnavailable(f"could not read sshd's configuration ({facts.config or 'unknown file'}){detail}")
    if s.get("pubkeyauthentication", "yes").lower() != "yes":
        raise DirectUnavailable("sshd does not accept keys (PubkeyAuthentication no)")
    if user == "root" and s.get("permitrootlogin", "").lower() == "no":
        raise DirectUnavailable("sshd does not let root log in (PermitRootLogin no)")
    patterns = s["authorizedkeysfile"].split()
    if not patterns or patterns[0].lower() == "none":
        raise DirectUnavailable("sshd reads no authorized_keys file (AuthorizedKeysFile none)")
    if facts.home is None or facts.uid is None:
        raise DirectUnavailable(f"the user {user} has no entry in the destination's passwd")
    try:
        return expand_keys_path(patterns[0], user=user, home=facts.home, uid=facts.uid)
    except ValueError as exc:
        raise DirectUnavailable(str(exc)) from exc


def known_hosts_line(host_key: str) -> str:
    """The pinned key under the fixed alias the source's ssh is told to check (``HostKeyAlias``)."""
    info = HostKeyInfo.from_openssh(host_key)
    return f"{HOST_KEY_ALIAS} {info.key_type} {info.key_b64}"


def predicted_from(address: str) -> str | None:
    """The address the source's packets most likely leave from: its own, when the portal reaches it by IP."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def request_for(index: int) -> str:
    return f"write {index}"


def forced_command_script(writes: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The destination's forced command: create copy N, nothing else.

    ``writes``: (destination path, runas argv) per file, in order; the ssh client asks for
    ``write N``. The paths are quoted here with ``shlex``, never taken from the request.
    It says ``STARTED_MARK`` on stderr before the writer starts: without it, nothing was written.
    """
    lines = ['case "${SSH_ORIGINAL_COMMAND:-}" in']
    for index, (path, runas) in enumerate(writes):
        argv = ["sh", "-c", WRITE_STDIN_PROGRESS_SH, "write", path, *runas]
        lines.append(f"    {shlex.quote(request_for(index))}) echo {STARTED_MARK} >&2; exec {shlex.join(argv)} ;;")
    lines.append(f'    *) echo "this key only writes the copies of one migration" >&2; exit {NOT_ALLOWED_EXIT} ;;')
    lines.append("esac")
    return "\n".join(lines) + "\n"


def parse_ssh_exit(stdout: str) -> int | None:
    """``ssh exit N`` from the copy script."""
    match = re.search(r"^ssh exit (\d+)$", stdout, re.MULTILINE)
    return int(match.group(1)) if match else None


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise ValueError(f"bad key tag {tag!r}")
    return tag


def new_tag(label: str) -> str:
    return check_tag(f"{TAG_PREFIX}{label}-{secrets.token_hex(4)}")


# ---------------------------------------------------------------- on the hosts
def revoke(destination: SSHSession, *, keys_file: str, tag: str, work_dir: str = "") -> None:
    """Remove the key lines tagged ``tag`` (and the forced command's directory); AdapterError if it stays."""
    check_tag(tag)
    if work_dir and not _WORK_DIR.fullmatch(work_dir):
        raise AdapterError(f"refusing to remove {work_dir!r}: not a copy's working directory")
    result = destination.run(["bash", "-c", REVOKE_SH, "revoke", keys_file, tag, work_dir],
                             check=False, timeout=60.0)
    if result.exit_status != 0:
        raise AdapterError(f"could not remove the one-time key {tag} from {keys_file} on "
                           f"{destination.target.address}: {last_error_line(result.stderr)}",
                           hint=f"Remove the line ending in {tag} from {keys_file} by hand.")


def cleanup_source(source: SSHSession, *, source_dir: str) -> None:
    """Remove the private key's directory on the source (and stop any ssh still using it)."""
    if not _WORK_DIR.fullmatch(source_dir):
        raise AdapterError(f"refusing to remove {source_dir!r}: not a copy's working directory")
    result = source.run(["sh", "-c", SOURCE_CLEANUP_SH, "cleanup", source_dir], check=False, timeout=30.0)
    if result.exit_status != 0:
        raise AdapterError(f"could not remove the one-time key's directory {source_dir} on "
                           f"{source.target.address}: {last_error_line(result.stderr)}",
                           hint=f"Remove {source_dir} there by hand.")


class DirectRoute:
    """A one-time key from ``source`` to ``destination`` for the listed copies; ``open``, ``copy``…, ``close``.

    ``writes``: (destination path, runas argv) per file, the only files the key may create.
    ``lifetime_s``: after that the key stops working even if ``close`` never ran.
    """

    def __init__(self, source: SSHSession, destination: SSHSession, *, endpoint: Endpoint,
                 writes: Sequence[tuple[str, Sequence[str]]], label: str, lifetime_s: float):
        self.source = source
        self.destination = destination
        self.endpoint = endpoint
        self.writes = [(path, list(runas)) for path, runas in writes]
        self.tag = new_tag(label)
        self.lifetime_s = max(60, int(lifetime_s))
        self.grant: Grant | None = None
        self._source_dir: str | None = None
        self._work_dir = ""
        self._keys_file: str | None = None
        self.open_problems: list[str] = []

    # ---------------------------------------------------------------- set up
    def open(self, *, before_authorize: Callable[[Grant], None] | None = None) -> Grant:
        """Place the keys; DirectUnavailable (all undone) if that fails. The first ``copy`` proves they work.

        ``before_authorize`` is given what removing the key takes (keys file, tag, source
        directory; not yet the forced command's directory or the expiry) before the key's line
        is written, so a caller that records it can always find the key again, also after it
        died midway. If it raises, no line is written. After a failed ``open``,
        ``open_problems`` holds what its undo could not remove (empty: nothing was left).
        """
        try:
            self.grant = self._open(before_authorize)
            return self.grant
        except BaseException:
            self.open_problems = self.close()
            raise

    def _open(self, before_authorize: Callable[[Grant], None] | None) -> Grant:
        ep = self.endpoint
        private_pem, public = generate_keypair(self.tag)
        key_type, key_b64 = public.split()[:2]
        known = known_hosts_line(ep.host_key)
        # The destination's sshd is asked about the source's own address while the source gets
        # ready (one round trip fewer); asked again only if the source's packets leave from another.
        guess = predicted_from(self.source.target.address)
        with ThreadPoolExecutor(max_workers=2) as pool:
            preparing = pool.submit(self.source.run, ["sh", "-c", SOURCE_PREPARE_SH, "prepare", ep.address, known],
                                    stdin=private_pem, check=False, timeout=30.0)
            discovering = pool.submit(self._discover, guess) if guess else None
            prepared = preparing.result()
            fields = parse_fields(prepared.stdout)
            if prepared.exit_status != 0 or not _WORK_DIR.fullmatch(fields.get("dir", "")):
                raise DirectUnavailable(f"the source is not ready: {last_error_line(prepared.stderr)}")
            self._source_dir = fields["dir"]  # from here on close() removes it, whatever the destination says
            try:
                from_address = str(ipaddress.ip_address(fields.get("from", "")))
            except ValueError as exc:
                raise DirectUnavailable(f"the source's address towards {ep.address} is unclear "
                                        f"({fields.get('from', '')!r})") from exc
            early = discovering.result() if discovering is not None else None
        discovered = early if guess == from_address else self._discover(from_address)
        keys = keys_file(parse_sshd_facts(discovered.stdout, discovered.stderr), user=ep.user)
        fingerprint = HostKeyInfo.from_openssh(public).fingerprint
        if before_authorize is not None:
            before_authorize(Grant(keys_file=keys, tag=self.tag, work_dir="", source_dir=self._source_dir,
                                   from_address=from_address, fingerprint=fingerprint, expires=""))
        self._keys_file = keys  # from here on close() removes the line, whatever the authorizing did
        authorized = self.destination.run(
            ["bash", "-c", AUTHORIZE_SH, "authorize", self._keys_file, from_address, f"{key_type} {key_b64}",
             self.tag, str(self.lifetime_s)],
            stdin=forced_command_script(self.writes), check=False, timeout=60.0,
        )
        fields = parse_fields(authorized.stdout)
        self._work_dir = fields.get("dir", "")
        if authorized.exit_status != 0 or not _WORK_DIR.fullmatch(self._work_dir):
            raise DirectUnavailable(f"could not authorize a one-time key in {self._keys_file}: "
                                    f"{last_error_line(authorized.stderr)}")
        return Grant(keys_file=self._keys_file, tag=self.tag, work_dir=self._work_dir,
                     source_dir=self._source_dir, from_address=from_address,
                     fingerprint=fingerprint, expires=fields.get("expires", ""))

    def _discover(self, from_address: str) -> CommandResult:
        return self.destination.run(["sh", "-c", DISCOVER_SH, "discover", self.endpoint.user, from_address],
                                    check=False, timeout=30.0)

    def _ssh_argv(self, source_path: str, request: str) -> list[str]:
        ep = self.endpoint
        return ["sh", "-c", SOURCE_COPY_SH, "direct-copy", self._source_dir or "", ep.user, ep.address, str(ep.port),
                source_path, request, CIPHERS]

    # ---------------------------------------------------------------- copy
    def copy(self, index: int, source_path: str, *, on_bytes: Callable[[int], None] | None = None,
             timeout: float) -> CopyResult:
        """Stream ``source_path`` into the ``index``-th listed copy.

        CopyFailed saying which end failed; DirectUnavailable when the writer never started
        (the key refused, no connection): then nothing was written and the caller may relay.
        """
        if self.grant is None:
            raise RuntimeError("DirectRoute.copy before open")
        destination_path = self.writes[index][0]
        last = [0]

        def progress(piece: bytes) -> None:
            done = parse_dd_progress(piece)
            if done is not None:
                last[0] = done
                if on_bytes is not None:
                    on_bytes(done)

        where = f"{source_path} ({self.source.target.address}) to {destination_path} ({self.endpoint.address})"
        try:
            result = self.source.run(self._ssh_argv(source_path, request_for(index)),
                                     check=False, timeout=timeout, on_stderr=progress)
        except CommandTimeout as exc:
            raise CopyFailed(f"Copying {where} did not finish within {timeout:.0f} s.",
                             hint="The link between the hosts is slower than expected: check it, then retry.") from exc
        ssh_exit = parse_ssh_exit(result.stdout)
        started = STARTED_MARK in result.stderr
        stderr = result.stderr.replace(STARTED_MARK, "")
        if ssh_exit is None:
            raise CopyFailed(f"Copying {where} failed on the source (exit {result.exit_status}): "
                             f"{last_error_line(stderr)}", hint=copy_hint(stderr))
        if ssh_exit != 0 and not started:
            raise DirectUnavailable(f"{self.source.target.address} could not log in to {self.endpoint.address} "
                                    f"with the one-time key (ssh exit {ssh_exit}): {last_error_line(stderr)}")
        if ssh_exit != 0:
            end = (f"between the hosts (ssh from {self.source.target.address} failed)"
                   if ssh_exit == SSH_OWN_FAILURE_EXIT else f"on {self.endpoint.address} (exit {ssh_exit})")
            raise CopyFailed(f"Copying {where} failed {end}: {last_error_line(stderr)}",
                             hint=copy_hint(stderr), target_existed=ssh_exit == FILE_EXISTS_EXIT)
        return CopyResult(bytes=last[0], seconds=result.duration_s)

    # ---------------------------------------------------------------- tear down
    def close(self) -> list[str]:
        """Remove the key on the destination and the private key on the source (both at once); the problems met."""
        jobs: list[Callable[[], None]] = []
        if self._source_dir is not None:
            jobs.append(lambda d=self._source_dir: cleanup_source(self.source, source_dir=d))
            self._source_dir = None
        if self._keys_file is not None:
            jobs.append(lambda f=self._keys_file: revoke(self.destination, keys_file=f, tag=self.tag,
                                                         work_dir=self._work_dir))
            self._keys_file = None
        problems: list[str] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(job) for job in jobs]:
                try:
                    future.result()
                except AdapterError as exc:
                    problems.append(exc.message)
                except Exception as exc:  # noqa: BLE001 — a lost connection must not hide the other half
                    problems.append(f"{type(exc).__name__}: {exc}")
        return problems


__all__ = [
    "DirectRoute", "DirectUnavailable", "Endpoint", "Grant", "SshdFacts", "cleanup_source", "expand_keys_path",
    "forced_command_script", "keys_file", "known_hosts_line", "parse_ssh_exit", "parse_sshd_facts", "predicted_from",
    "revoke",
]
