"""SSH to hypervisor hosts with paramiko, verifying a pinned host key.

Trust model: the portal pins one host key per host ("ssh-ed25519 AAAA…").
``fetch_host_key`` reads the key a host presents without logging in, so the
admin can compare its fingerprint and pin it (trust on first use, decided by a
person). ``SSHSession`` then refuses any host whose key differs from the pin.

Remote commands are always given as an argv list and joined with
``shlex.join``, so every element reaches the remote shell as one literal word.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import (
    CommandFailed,
    CommandTimeout,
    HostAuthError,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
)

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL_S = 15
PORTAL_KEY_COMMENT = "vmportal"

# Host key algorithms to offer first when a key of that type is pinned, so a
# host with several keys presents the one we know.
_ALGORITHMS_FOR_KEY_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to log in. ``pinned_host_key`` is "type base64"."""

    address: str
    port: int = 22
    user: str = "root"
    private_key_pem: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    pinned_host_key: str | None = None
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class HostKeyInfo:
    """A host's public key, with its OpenSSH-style SHA256 fingerprint."""

    key_type: str
    key_b64: str
    fingerprint: str

    @property
    def openssh(self) -> str:
        """The key as "type base64", the form stored as a pin."""
        return f"{self.key_type} {self.key_b64}"

    @classmethod
    def from_openssh(cls, text: str) -> HostKeyInfo:
        """Parse "type base64 [comment]" (a known_hosts/authorized_keys style key)."""
        key_type, key_b64 = parse_openssh_key(text)
        return cls(key_type=key_type, key_b64=key_b64, fingerprint=fingerprint_of(key_b64))

    @classmethod
    def from_pkey(cls, key: paramiko.PKey) -> HostKeyInfo:
        key_b64 = key.get_base64()
        return cls(key_type=key.get_name(), key_b64=key_b64, fingerprint=fingerprint_of(key_b64))


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False  # output was cut at a bound (batched commands)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def parse_openssh_key(text: str) -> tuple[str, str]:
    """Split "type base64 [comment]" into (type, base64); ValueError if malformed."""
    parts = (text or "").split()
    if len(parts) < 2:
        raise ValueError("expected an OpenSSH public key like 'ssh-ed25519 AAAA…'")
    key_type, key_b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except ValueError as exc:
        raise ValueError("the key's base64 part is not valid base64") from exc
    # The blob starts with the key type as an SSH string; a mismatch means the
    # two halves were pasted from different keys.
    if len(blob) < 4:
        raise ValueError("the key is too short")
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_len].decode("ascii", "replace") != key_type:
        raise ValueError(f"the key data is not a {key_type} key")
    return key_type, key_b64


def fingerprint_of(key_b64: str) -> str:
    """SHA256 fingerprint exactly as `ssh-keygen -l` prints it ("SHA256:…")."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def check_host_key(
    presented: HostKeyInfo,
    pinned_host_key: str | None,
    *,
    address: str | None = None,
    port: int | None = None,
) -> None:
    """Raise unless ``presented`` is the pinned key.

    No pin → HostKeyUnknown (carrying the presented key, for the admin to
    check); a different key → HostKeyMismatch.
    """
    if not pinned_host_key:
        raise HostKeyUnknown(
            fingerprint=presented.fingerprint,
            key_type=presented.key_type,
            key_b64=presented.key_b64,
            address=address,
            port=port,
        )
    pinned = HostKeyInfo.from_openssh(pinned_host_key)
    if (pinned.key_type, pinned.key_b64) != (presented.key_type, presented.key_b64):
        raise HostKeyMismatch(
            expected_fingerprint=pinned.fingerprint,
            actual_fingerprint=presented.fingerprint,
            address=address,
            port=port,
        )


def generate_keypair(comment: str = PORTAL_KEY_COMMENT) -> tuple[str, str]:
    """Make the portal's own ed25519 key pair.

    Returns (private key in OpenSSH PEM format, public key "ssh-ed25519 AAAA… vmportal").
    """
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    return private_pem, f"{public} {comment}" if comment else public


def public_key_of(private_key_pem: str, comment: str = PORTAL_KEY_COMMENT) -> str:
    """The "type base64 comment" public half of a private key."""
    pkey = load_private_key(private_key_pem)
    public = f"{pkey.get_name()} {pkey.get_base64()}"
    return f"{public} {comment}" if comment else public


def load_private_key(private_key_pem: str) -> paramiko.PKey:
    """Load an unencrypted ed25519/ECDSA/RSA private key from its PEM text."""
    data = private_key_pem.encode()
    try:
        loaded = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise HostAuthError(
                f"The stored private key cannot be read: {exc}",
                hint="Store an unencrypted OpenSSH or PEM private key.",
            ) from exc
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise HostAuthError(
            f"Unsupported private key type {type(loaded).__name__}.",
            hint="Use an ed25519, ECDSA or RSA key.",
        )
    return key_class.from_private_key(io.StringIO(private_key_pem))


def fetch_host_key(
    address: str, port: int = 22, *, timeout: float = 10.0, key_type: str | None = None
) -> HostKeyInfo:
    """Connect, read the key the server presents, and disconnect without logging in.

    ``key_type`` ("ssh-rsa", …) asks for that key first when the host has several.
    """
    transport = _start_transport(address, port, timeout=timeout, preferred_key_type=key_type)
    try:
        return HostKeyInfo.from_pkey(transport.get_remote_server_key())
    finally:
        transport.close()


class SSHSession:
    """A logged-in SSH connection to one host, verified against its pinned key.

    Use as a context manager::

        with SSHSession(target) as ssh:
            ssh.run(["hostname"]).stdout

    ``trust_unknown_host_key=True`` accepts a host with no pin (never one whose
    key differs from its pin); the presented key is then in ``host_key`` for
    the caller to store. Only use it after a person confirmed the fingerprint.
    """

    def __init__(self, target: SSHTarget, *, trust_unknown_host_key: bool = False):
        self.target = target
        self.trust_unknown_host_key = trust_unknown_host_key
        self.host_key: HostKeyInfo | None = None
        self._transport: paramiko.Transport | None = None

    def __enter__(self) -> SSHSession:
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection, verify the host key, then authenticate."""
        target = self.target
        preferred = None
        if target.pinned_host_key:
            preferred = HostKeyInfo.from_openssh(target.pinned_host_key).key_type
        transport = _start_transport(
            target.address, target.port, timeout=target.connect_timeout, preferred_key_type=preferred
        )
        try:
            self.host_key = HostKeyInfo.from_pkey(transport.get_remote_server_key())
            if target.pinned_host_key or not self.trust_unknown_host_key:
                check_host_key(
                    self.host_key, target.pinned_host_key, address=target.address, port=target.port
                )
            _authenticate(transport, target)
            transport.set_keepalive(KEEPALIVE_INTERVAL_S)
        except BaseException:
            transport.close()
            raise
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _open_channel(self, timeout: float) -> paramiko.Channel:
        if self._transport is None:
            raise RuntimeError("SSHSession is not connected; use it as a context manager")
        try:
            return self._transport.open_session(timeout=min(timeout, self.target.connect_timeout))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(
                f"Lost the SSH connection to {self.target.address}: {exc}", address=self.target.address
            ) from exc

    def run(
        self,
        argv: list[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
        stdin: str | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host and wait for it.

        The remote command line is ``shlex.join(argv)``: each element arrives
        as one literal argument, whatever it contains. Raises CommandFailed on a
        non-zero exit when ``check`` is true, CommandTimeout after ``timeout``
        seconds. ``on_stderr`` sees each piece of stderr as it arrives (progress
        that tools such as ``dd status=progress`` print there).
        """
        if not isinstance(argv, list):
            raise TypeError(f"argv must be a list of strings, not {type(argv).__name__}")
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise TypeError("argv must be a non-empty list of strings")
        if self._transport is None:
            raise RuntimeError("SSHSession is not connected; use it as a context manager")

        command = shlex.join(argv)
        started = time.monotonic()
        deadline = started + timeout
        channel = self._open_channel(timeout)
        try:
            channel.exec_command(command)
            try:
                if stdin is not None:
                    channel.sendall(stdin.encode())
                channel.shutdown_write()
            except (paramiko.SSHException, OSError):
                # The command may already have exited without reading its
                # input; its output and exit status are still to be read.
                log.debug("could not send stdin/EOF to `%s`", command, exc_info=True)
            stdout, stderr = _collect_output(channel, deadline, on_stderr=on_stderr)
            if stdout is None:
                raise CommandTimeout(argv, timeout)
            exit_status = channel.recv_exit_status()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(
                f"The SSH connection to {self.target.address} failed while running "
                f"`{command}`: {exc}",
                address=self.target.address,
            ) from exc
        finally:
            channel.close()

        result = CommandResult(
            argv=list(argv),
            exit_status=exit_status,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            duration_s=time.monotonic() - started,
        )
        if check and result.exit_status != 0:
            raise CommandFailed(result.argv, result.exit_status, result.stdout, result.stderr)
        return result


@dataclass(frozen=True)
class RelayResult:
    """What a relay moved and how both ends exited."""

    bytes: int
    source: CommandResult
    destination: CommandResult

    @property
    def ok(self) -> bool:
        return self.source.ok and self.destination.ok


def _check_argv(argv: list[str]) -> None:
    if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError("argv must be a non-empty list of strings")


def relay(
    source: SSHSession,
    source_argv: list[str],
    destination: SSHSession,
    destination_argv: list[str],
    *,
    timeout: float,
    on_bytes: Callable[[int], None] | None = None,
    chunk: int = 1 << 20,
) -> RelayResult:
    """Pipe ``source_argv``'s stdout (on one host) into ``destination_argv``'s stdin (on another).

    The bytes pass through the portal, so the hosts need no SSH trust between
    them. ``on_bytes`` is called with the running total. If the destination
    command exits early, the source command is stopped and both results are
    returned (check ``ok``). CommandTimeout after ``timeout`` seconds overall.
    """
    _check_argv(source_argv)
    _check_argv(destination_argv)
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    src = source._open_channel(timeout)
    try:
        dst = destination._open_channel(timeout)
    except BaseException:
        src.close()
        raise
    total = 0
    src_out_err = bytearray()
    dst_out, dst_err = bytearray(), bytearray()

    def drain_destination() -> None:
        while dst.recv_ready():
            dst_out.extend(dst.recv(65536))
        while dst.recv_stderr_ready():
            dst_err.extend(dst.recv_stderr(65536))

    try:
        dst.exec_command(shlex.join(destination_argv))
        src.exec_command(shlex.join(source_argv))
        src.shutdown_write()
        src.settimeout(0.5)
        destination_gone = False
        while True:
            try:
                data = src.recv(chunk)
            except socket.timeout:
                data = None
            if data == b"":
                break  # the source's EOF
            if data:
                try:
                    dst.sendall(data)
                except (OSError, EOFError, paramiko.SSHException):
                    destination_gone = True
                    break
                total += len(data)
                if on_bytes is not None:
                    on_bytes(total)
            while src.recv_stderr_ready():
                src_out_err.extend(src.recv_stderr(65536))
            drain_destination()
            if dst.exit_status_ready():
                destination_gone = True
                break
            if time.monotonic() > deadline:
                raise CommandTimeout(destination_argv, timeout)
        if destination_gone:
            src.close()  # sshd hangs up on the reader: it stops
        else:
            dst.shutdown_write()
        dst_stdout, dst_stderr = _collect_output(dst, deadline)
        if dst_stdout is None:
            raise CommandTimeout(destination_argv, timeout)
        dst_out.extend(dst_stdout)
        dst_err.extend(dst_stderr)
        if destination_gone:
            src_status = -1
        else:
            _, rest = _collect_output(src, deadline)
            src_out_err.extend(rest)
            src_status = src.recv_exit_status() if src.exit_status_ready() else -1
        dst_status = dst.recv_exit_status()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostUnreachable(
            f"The SSH connection failed while copying from {source.target.address} "
            f"to {destination.target.address}: {exc}",
            address=destination.target.address,
        ) from exc
    finally:
        src.close()
        dst.close()
    elapsed = time.monotonic() - started
    return RelayResult(
        bytes=total,
        source=CommandResult(list(source_argv), src_status, "", src_out_err.decode("utf-8", "replace"), elapsed),
        destination=CommandResult(
            list(destination_argv), dst_status, dst_out.decode("utf-8", "replace"),
            dst_err.decode("utf-8", "replace"), elapsed,
        ),
    )


def _collect_output(
    channel: paramiko.Channel, deadline: float, *, on_stderr: Callable[[bytes], None] | None = None
) -> tuple[bytes | None, bytes]:
    """Read stdout/stderr until the command exits and its output ends; (None, …) on timeout.

    sshd may send the exit status before it has forwarded all of the
    command's output, so the exit status alone does not mean the output is
    complete: wait for the channel's EOF too. A command that exits but leaves
    a background process holding its output open never sends EOF; after
    ``_EOF_GRACE_S`` without new data we return what we have.
    """
    stdout, stderr = bytearray(), bytearray()
    quiet_since: float | None = None
    while True:
        got = False
        while channel.recv_ready():
            stdout += channel.recv(65536)
            got = True
        while channel.recv_stderr_ready():
            piece = channel.recv_stderr(65536)
            stderr += piece
            if on_stderr is not None and piece:
                on_stderr(piece)
            got = True
        now = time.monotonic()
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                return bytes(stdout), bytes(stderr)
            if got or quiet_since is None:
                quiet_since = now
            elif now - quiet_since > _EOF_GRACE_S:
                return bytes(stdout), bytes(stderr)
        remaining = deadline - now
        if remaining <= 0:
            return None, bytes(stderr)
        if not got:
            select.select([channel], [], [], min(remaining, 0.05))


_EOF_GRACE_S = 2.0


def _start_transport(
    address: str, port: int, *, timeout: float, preferred_key_type: str | None
) -> paramiko.Transport:
    """TCP connect and SSH handshake (no authentication yet)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except socket.gaierror as exc:
        raise HostUnreachable(
            f"Cannot resolve {address}: {exc.strerror or exc}",
            hint="Check the host name, or use its IP address.",
            address=address,
        ) from exc
    except TimeoutError as exc:
        raise HostUnreachable(
            f"Timed out connecting to {address}:{port} after {timeout:g} s", address=address
        ) from exc
    except ConnectionRefusedError as exc:
        raise HostUnreachable(
            f"{address}:{port} refused the connection",
            hint="Check that sshd runs on the host and listens on that port.",
            address=address,
        ) from exc
    except OSError as exc:
        raise HostUnreachable(
            f"Cannot connect to {address}:{port}: {exc.strerror or exc}", address=address
        ) from exc

    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    if preferred_key_type:
        options = transport.get_security_options()
        first = _ALGORITHMS_FOR_KEY_TYPE.get(preferred_key_type, (preferred_key_type,))
        known = list(options.key_types)
        if any(name in known for name in first):
            options.key_types = [n for n in first if n in known] + [n for n in known if n not in first]
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise HostUnreachable(
            f"SSH handshake with {address}:{port} failed: {exc}",
            hint="Check that the port is an SSH server and that the host is not overloaded.",
            address=address,
        ) from exc
    # start_client returns quietly when its timeout expires mid-handshake.
    if not (transport.is_active() and transport.initial_kex_done):
        transport.close()
        raise HostUnreachable(
            f"SSH handshake with {address}:{port} timed out after {timeout:g} s",
            hint="Check that the port is an SSH server and that the host is not overloaded.",
            address=address,
        )
    return transport


def _authenticate(transport: paramiko.Transport, target: SSHTarget) -> None:
    if not target.private_key_pem and not target.password:
        raise HostAuthError(f"No private key or password to log in to {target.address} as {target.user}.")
    try:
        if target.private_key_pem:
            transport.auth_publickey(target.user, load_private_key(target.private_key_pem))
        else:
            transport.auth_password(target.user, target.password)
    except paramiko.AuthenticationException as exc:
        raise HostAuthError(
            f"{target.address} refused the login as {target.user}: {exc}"
        ) from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostUnreachable(
            f"The connection to {target.address} broke during login: {exc}", address=target.address
        ) from exc
    if not transport.is_authenticated():
        raise HostAuthError(f"{target.address} did not accept the login as {target.user}.")
