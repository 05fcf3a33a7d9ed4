"""The small family of errors the adapters raise.

Callers (views, jobs, management commands) catch these instead of
``paramiko`` / ``socket`` / ``libvirt.libvirtError`` exceptions. Every error
carries a human ``message`` (what went wrong) and a ``hint`` (what the admin
should do next), both safe to show in the UI.
"""

from __future__ import annotations

import shlex

from core.errors import PortalError


class AdapterError(PortalError):
    """Base class: something went wrong talking to a hypervisor host."""


class HostUnreachable(AdapterError):
    """The host did not answer: refused, timed out, no route, connection lost."""

    default_hint = (
        "Check that the host is up, that the address and port are right and "
        "that no firewall blocks SSH (22) or libvirt from the portal."
    )

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        address: str | None = None,
        code: int | None = None,
    ):
        super().__init__(message, hint=hint)
        self.address = address
        self.code = code  # the VIR_ERR_* number when libvirt reported it


class HostAuthError(AdapterError):
    """The host answered but refused our credentials."""

    default_hint = (
        "Make sure the portal's public key is in the user's "
        "~/.ssh/authorized_keys on the host (or that the password is right)."
    )


class HostKeyUnknown(AdapterError):
    """No pinned host key was given and trusting a new key was not requested.

    ``fingerprint`` ("SHA256:…"), ``key_type`` and ``key_b64`` describe the key
    the host presented, so the admin can compare it and pin it.
    """

    default_hint = (
        "Compare this fingerprint with the output of "
        "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host "
        "console, then trust the key."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        fingerprint: str,
        key_type: str,
        key_b64: str,
        address: str | None = None,
        port: int | None = None,
        hint: str | None = None,
    ):
        where = _where(address, port)
        super().__init__(
            message or f"The SSH host key of {where} is not trusted yet ({key_type} {fingerprint}).",
            hint=hint,
        )
        self.fingerprint = fingerprint
        self.key_type = key_type
        self.key_b64 = key_b64
        self.address = address
        self.port = port


class HostKeyMismatch(AdapterError):
    """The host presented a different key than the one pinned for it."""

    default_hint = (
        "Someone may be intercepting the connection, or the host was "
        "reinstalled. Verify the new key on the host console before "
        "re-pinning it."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        expected_fingerprint: str,
        actual_fingerprint: str,
        address: str | None = None,
        port: int | None = None,
        hint: str | None = None,
    ):
        where = _where(address, port)
        super().__init__(
            message
            or (
                f"The SSH host key of {where} does not match the pinned key: "
                f"expected {expected_fingerprint}, got {actual_fingerprint}."
            ),
            hint=hint,
        )
        self.expected_fingerprint = expected_fingerprint
        self.actual_fingerprint = actual_fingerprint
        self.address = address
        self.port = port


class CommandFailed(AdapterError):
    """A remote command exited with a non-zero status."""

    default_hint = "Read the command's error output below; run it by hand on the host to reproduce."

    def __init__(
        self,
        argv: list[str],
        exit_status: int,
        stdout: str = "",
        stderr: str = "",
        *,
        hint: str | None = None,
    ):
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        message = f"`{shlex.join(argv)}` exited with status {exit_status}"
        super().__init__(f"{message}: {detail}" if detail else message, hint=hint)
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class CommandTimeout(AdapterError):
    """A remote command did not finish within its timeout (it was abandoned)."""

    default_hint = "The host may be overloaded or the command stuck; check it on the host."

    def __init__(self, argv: list[str], timeout: float, *, hint: str | None = None):
        super().__init__(f"`{shlex.join(argv)}` did not finish within {timeout:g} s", hint=hint)
        self.argv = list(argv)
        self.timeout = timeout


class LibvirtFailure(AdapterError):
    """libvirt refused or failed an operation; ``code`` is the VIR_ERR_* number."""

    default_hint = "See the libvirt message; `journalctl -u libvirtd` on the host has details."

    def __init__(self, message: str, *, code: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code


class DomainNotFound(LibvirtFailure):
    """The guest does not exist (any more) on that host."""

    default_hint = "The guest may have been undefined or migrated away; refresh the inventory."


class SnapshotNotFound(LibvirtFailure):
    """The guest has no snapshot of that name (any more) on that host."""

    default_hint = "It may have been deleted outside the portal (virsh snapshot-delete); check the guest's snapshots."


class MigrationAborted(LibvirtFailure):
    """The migration job was cancelled (``abortJob``, ``virsh domjobabort``); the guest stays on the source."""

    default_hint = "The guest keeps running on the source host; start a new migration when ready."


def _where(address: str | None, port: int | None) -> str:
    if not address:
        return "the host"
    if port and port != 22:
        return f"{address}:{port}"
    return address
