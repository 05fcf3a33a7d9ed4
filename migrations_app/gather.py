"""Gather what the preflight checks read, from the two hosts of a migration.

``gather_pair(source=…, destination=…, guest_uuid=…, options=…)`` opens a session to
each inventory host (``hosts.access``) and returns the ``PairFacts`` and ``GuestSide``
that ``preflight.run_preflight`` judges. ``gather`` itself takes plain inputs
(``Endpoint``: a name and an open session) and does all I/O through the adapters
(``hosts.adapters.libvirt``, ``migration``, ``probes``).

``gather`` is ``gather_fleet.gather_fleet`` for one guest and one destination: the same
probes in the same four rounds (see that module), so a fact means the same whichever
gathered it. Sessions and SSH are opened in parallel; a marker file holding a random token
is written next to each file disk on the source and read on the destination; a one-shot
TCP listener on a free port in 49152–49215 on the destination takes one connection from
the source; the guest's CPU is compared on the destination (``compareHypervisorCPU``).

What a result means:

- ``None`` in a fact is "could not verify" (the probe failed or could not run);
  one failing probe never stops the others nor raises.
- A host whose libvirt or SSH does not answer is ``reachable=False``; the
  reason is logged (PairFacts has no field for it).
- ``same_file_on_destination``: the destination read the marker the source
  wrote next to the disk, so both see one directory. Block devices cannot be
  proven that way (None). A read-only disk that is *not* shared still counts
  as the same when the destination holds a byte-identical copy (checked by
  SHA-256 up to 64 MiB, else None): libvirt only needs the same content there.
- ``destination_can_open``: ``runuser -u <qemu user> -- test -r/-w`` on the
  destination, the user being the first ``user =`` of its qemu.conf, else the
  build default commented there, else the distro's (libvirt-qemu on
  Debian/Ubuntu, qemu elsewhere). With ``dynamic_ownership`` on (libvirt's
  default) libvirt hands the image to that user when the guest starts, so it
  also counts when root can open the file and QEMU's user can reach its directory.
- Name resolution that could not be probed is ``None``; note that the
  name-resolution check treats that as "cannot resolve".

Raises DomainNotFound when the source answers but has no such guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .facts import GuestSide, PairFacts
from .gather_fleet import gather_fleet
from .gather_parts import Endpoint, parse_version
from .options import MigrationOptions

if TYPE_CHECKING:
    from hosts.models import Host

__all__ = ["Endpoint", "gather", "gather_pair", "parse_version"]


def gather(
    *, source: Endpoint, destination: Endpoint, guest_uuid: str, options: MigrationOptions
) -> tuple[PairFacts, GuestSide]:
    """Probe both hosts for the preflight; see the module docstring for what each fact means.

    ``options`` only decides whether disk sizes and the destination's free
    space are measured (live copy-storage); every other fact is the same for
    any options.
    """
    fleet = gather_fleet(source=source, destinations=[destination], guest_uuids=[guest_uuid], options=options)
    return fleet.pair(guest_uuid, destination.name), fleet.guest_for(guest_uuid, destination.name)


def gather_pair(*, source: Host, destination: Host, guest_uuid: str, options: MigrationOptions, sessions=None):
    """Facts for the preflight of moving a guest between two inventory hosts: (PairFacts, GuestSide).

    Opens a session to each host for the length of the probes, unless ``sessions`` gives
    the caller's open (source, destination) pair. The facts are kept, with when they were
    gathered, for a runner's re-check (services.facts). Adapter errors propagate.
    """
    from contextlib import ExitStack

    from hosts import access  # needs Django; gather() itself does not (bench/ runs it without)

    from .services.facts import preflight_facts_remember

    with ExitStack() as stack:
        if sessions is None:
            sessions = (stack.enter_context(access.open_session(source)),
                        stack.enter_context(access.open_session(destination)))
        src, dst = sessions
        pair, guest = gather(
            source=Endpoint(name=source.name, session=src, in_maintenance=source.in_maintenance),
            destination=Endpoint(name=destination.name, session=dst, in_maintenance=destination.in_maintenance),
            guest_uuid=guest_uuid,
            options=options,
        )
    preflight_facts_remember(source=source, destination=destination, copy_storage=_copying(options),
                             found=[(pair, guest)])
    return pair, guest


def _copying(options: MigrationOptions) -> bool:
    """What the facts depend on among the options (see ``gather``)."""
    return bool(options.copy_storage and options.live)
