"""Hosts as the migration code reaches them: gather endpoints, libvirt connections, URIs.

The one place that turns inventory rows into what the adapters and the gatherer take,
reusing hosts.inventory.ssh_target_for (decrypted key, pinned host key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hosts.adapters import libvirt as libvirt_adapter
from hosts.inventory import ssh_target_for
from hosts.models import Host

from .options import MigrationOptions


def endpoint_for(host: Host):
    """The gatherer's Endpoint for a host."""
    from .gather import Endpoint

    return Endpoint(
        name=host.name,
        libvirt_uri=host.effective_libvirt_uri,
        ssh=ssh_target_for(host),
        in_maintenance=host.in_maintenance,
    )


def gather_pair(*, source: Host, destination: Host, guest_uuid: str, options: MigrationOptions):
    """Facts for the preflight: (PairFacts, GuestSide). Adapter errors propagate."""
    from . import gather

    return gather.gather(
        source=endpoint_for(source), destination=endpoint_for(destination), guest_uuid=guest_uuid, options=options
    )


@contextmanager
def connect(host: Host) -> Iterator[object]:
    """A libvirt connection of the portal's own to the host (closed on exit)."""
    with libvirt_adapter.open_connection(host.effective_libvirt_uri, ssh_target=ssh_target_for(host)) as conn:
        yield conn


def peer_to_peer_uri(destination: Host) -> str:
    """The destination as the *source host's* libvirtd reaches it in a peer-to-peer migration.

    The inventory URI: qemu+tcp/tls URIs work from any host that can route to it; for
    qemu+ssh the source host logs in with its own root key and known_hosts (not the
    portal's), so that trust must exist between the hosts — libvirt's error says when not.
    """
    return destination.effective_libvirt_uri


def is_ssh_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].endswith(("+ssh", "+libssh", "+libssh2"))
