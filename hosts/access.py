"""One way to reach a host: a ``HostSession`` for an inventory ``Host`` row.

Everything in the portal that talks to a host (inventory refresh, power actions,
preflight gathering, live and cold migration, permission repair, the NFS wizard) opens
a session here::

    with access.open_session(host) as session:
        session.ssh.run(["hostname"])          # SSH, opened on first use
        lv.list_domains(session.libvirt)       # libvirt, opened on first use

The session logs in with the host's stored credentials (decrypted here, never stored
elsewhere) and the pinned SSH host key, for SSH and for qemu+ssh libvirt URIs alike; it
closes whatever it opened, in reverse order, whatever happens. Errors are the adapters'
own (``AdapterError`` and its family), never paramiko's or libvirt's.

Tests replace the whole way to the hosts at this one seam with ``override(factory)``
(see ``tests/fakes/fleet.py``): ``factory(host)`` returns an object with the same
``ssh`` / ``libvirt`` / ``open_libvirt()`` / ``close()`` surface.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from core.encryption import decrypt_secret

from .adapters import libvirt as libvirt_adapter
from .adapters import ssh as ssh_adapter
from .adapters.errors import AdapterError
from .choices import HostAuthMethodChoices
from .models import Host, PortalKey

SSH_CONNECT_TIMEOUT_S = 10.0


class HostNotTrusted(AdapterError):
    default_hint = "Confirm the host's SSH key fingerprint on its trust page first."


def ssh_target_for(host: Host) -> ssh_adapter.SSHTarget:
    """The adapter's SSHTarget for a host: its credentials (decrypted) and pinned host key."""
    private_key_pem = password = None
    if host.auth_method == HostAuthMethodChoices.PORTAL_KEY:
        portal_key = PortalKey.objects.order_by("pk").first()
        if portal_key is None:
            raise AdapterError(
                "The portal has no SSH key pair yet.",
                hint="Open 'Add host' once to generate it, then install its public key on the host.",
            )
        private_key_pem = decrypt_secret(portal_key.private_key_encrypted)
    elif host.auth_method == HostAuthMethodChoices.PRIVATE_KEY:
        private_key_pem = decrypt_secret(host.secret_encrypted)
    else:
        password = decrypt_secret(host.secret_encrypted)
    return ssh_adapter.SSHTarget(
        address=host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key_pem=private_key_pem,
        password=password,
        pinned_host_key=host.host_key or None,
        connect_timeout=SSH_CONNECT_TIMEOUT_S,
    )


def require_trusted(host: Host) -> None:
    """Refuse to log in to a host whose SSH host key nobody has confirmed yet."""
    if not host.host_key:
        raise HostNotTrusted(f"The SSH host key of {host.name} has not been confirmed yet.")


class HostSession:
    """SSH and libvirt to one host, opened on first use and always closed.

    ``ssh`` is a logged-in ``SSHSession``; ``libvirt`` the session's libvirt connection;
    ``open_libvirt()`` opens one more connection (closed with the session) for work that
    must not share one, such as sampling a migration job from a second thread.
    """

    def __init__(self, host: Host, *, target: ssh_adapter.SSHTarget | None = None):
        self.host = host
        self.name = host.name
        self.libvirt_uri = host.effective_libvirt_uri
        self._target = target
        self._stack = ExitStack()
        self._ssh: ssh_adapter.SSHSession | None = None
        self._libvirt: Any = None
        self._closed = False

    # -- context manager -------------------------------------------------
    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close everything this session opened, newest first."""
        self._closed = True
        self._ssh = None
        self._libvirt = None
        self._stack.close()

    # -- what it gives ----------------------------------------------------
    @property
    def ssh_target(self) -> ssh_adapter.SSHTarget:
        if self._target is None:
            self._target = ssh_target_for(self.host)
        return self._target

    @property
    def ssh(self) -> ssh_adapter.SSHSession:
        if self._ssh is None:
            self._check_open()
            require_trusted(self.host)
            self._ssh = self._stack.enter_context(self._connect_ssh(self.ssh_target))
        return self._ssh

    @property
    def libvirt(self):
        if self._libvirt is None:
            self._libvirt = self.open_libvirt()
        return self._libvirt

    def open_libvirt(self):
        """A further libvirt connection of its own, closed when the session closes."""
        self._check_open()
        return self._stack.enter_context(self._connect_libvirt(self.libvirt_uri, self.ssh_target))

    def presented_host_key(self) -> ssh_adapter.HostKeyInfo:
        """The SSH host key the host presents now (no login): what an admin confirms before trusting it."""
        return ssh_adapter.fetch_host_key(self.host.address, self.host.ssh_port, timeout=SSH_CONNECT_TIMEOUT_S)

    # -- the two ways out (a fake fleet's session overrides these) ----------
    def _connect_ssh(self, target: ssh_adapter.SSHTarget):
        return ssh_adapter.SSHSession(target)

    def _connect_libvirt(self, uri: str, target: ssh_adapter.SSHTarget):
        return libvirt_adapter.open_connection(uri, ssh_target=target)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"The session to {self.name} is closed; open a new one.")


SessionFactory = Callable[[Host], Any]
_factory: SessionFactory = HostSession


def open_session(host: Host) -> HostSession:
    """A new session to ``host`` (use it as a context manager)."""
    return _factory(host)


def presented_host_key(address: str, port: int = 22) -> ssh_adapter.HostKeyInfo:
    """The SSH host key a host not (yet) in the inventory presents, read without logging in.

    The first step of trusting a host: the admin compares its fingerprint before it is pinned.
    """
    return _factory(Host(name=address, address=address, ssh_port=port)).presented_host_key()


@contextlib.contextmanager
def override(factory: SessionFactory) -> Iterator[None]:
    """Route every ``open_session`` to ``factory(host)`` for the block (tests' one seam)."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous
