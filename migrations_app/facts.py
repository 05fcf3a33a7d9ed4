"""What the preflight checks read: facts about two hosts and one guest, gathered beforehand.

A gatherer (libvirt + SSH, elsewhere) fills these; the checks in preflight.py only
read them, so every check can be tested with hand-written facts. ``None`` in a fact
always means "could not check", never "no".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HostSide:
    """One host as seen for a migration. Memory in KiB, versions as (major, minor, micro)."""

    name: str  # VMPortal's inventory name
    hostname: str  # what the host calls itself (libvirt's hostname)
    host_uuid: str  # libvirt's host UUID (capabilities), compared by libvirt on migration
    arch: str
    hypervisor: str  # "QEMU", …
    hypervisor_version: tuple[int, int, int]
    libvirt_version: tuple[int, int, int]
    domain_types: frozenset[str]  # "kvm", "qemu"
    machine_types: frozenset[str]  # "pc-q35-8.2", "q35", …
    memory_free_kib: int
    memory_total_kib: int
    cpus: int
    running_vcpus: int  # vCPUs of the guests already running there
    in_maintenance: bool
    reachable: bool
    address: str = ""  # the address VMPortal reaches it at; used to write /etc/hosts fixes


@dataclass(frozen=True)
class DiskFact:
    """One disk of the guest, with what the gatherer proved about it on the destination."""

    target: str  # "vda"
    source: str  # file path, or "pool/volume" / URL for network disks; "" for an empty CD-ROM
    readonly: bool
    shareable: bool
    network: bool  # rbd, iscsi, nbd, gluster…: reached over the network from either host
    same_file_on_destination: bool | None  # proved by a marker file; None = could not check
    destination_can_open: bool | None  # qemu's user could open it there; None = could not check
    perm_detail: str = ""  # e.g. "root:root 0600" as found on the destination
    size_kib: int | None = None  # room a copy needs on the destination (allocation for sparse images)


@dataclass(frozen=True)
class GuestSide:
    """The guest to migrate, as its source host describes it."""

    name: str
    uuid: str
    state: str  # libvirt state name: running, paused, shutoff, crashed, pmsuspended…
    arch: str
    domain_type: str  # "kvm" or "qemu"
    machine: str  # "pc-q35-8.2"
    vcpus: int
    memory_kib: int
    cpu_mode: str | None  # "host-passthrough", "host-model", "custom", None
    cpu_model: str | None
    disks: tuple[DiskFact, ...]
    active_operation: str | None  # another job on it (backup, snapshot, migration…), None = idle
    persistent: bool = True  # transient guests cannot be migrated offline


@dataclass(frozen=True)
class PairFacts:
    """The source and destination together, and what was probed between them."""

    source: HostSide
    destination: HostSide
    source_resolves_destination: list[str] | None  # addresses the source gets for the destination's hostname;
    destination_resolves_source: list[str] | None  # [] = does not resolve, None = could not check
    migration_address_reachable: bool | None  # destination's migration address, from the source
    ports_reachable: bool | None  # TCP 49152-49215 on the destination, probed from the source
    destination_has_domain_name: bool
    destination_has_domain_uuid: bool
    cpu_compare: str  # "identical" | "superset" | "incompatible" | "error: <msg>" | "unknown"
    destination_pool_room_kib: int | None  # free space where copied disks would land
    # Target paths of the destination's active storage pools (copy-storage needs one per disk
    # directory); None = could not check.
    destination_pool_targets: frozenset[str] | None = None


# ---------------------------------------------------------------------------
# Storing facts (JSON) so that a later re-check can start from them


def _host_to_dict(host: HostSide) -> dict:
    data = asdict(host)
    data["hypervisor_version"] = list(host.hypervisor_version)
    data["libvirt_version"] = list(host.libvirt_version)
    data["domain_types"] = sorted(host.domain_types)
    data["machine_types"] = sorted(host.machine_types)
    return data


def _host_from_dict(data: dict) -> HostSide:
    return HostSide(**{
        **data,
        "hypervisor_version": tuple(data["hypervisor_version"]),
        "libvirt_version": tuple(data["libvirt_version"]),
        "domain_types": frozenset(data["domain_types"]),
        "machine_types": frozenset(data["machine_types"]),
    })


def facts_to_dict(pair: PairFacts, guest: GuestSide) -> dict:
    """``pair`` and ``guest`` as JSON-safe data; ``facts_from_dict`` gives them back equal."""
    pair_data = asdict(pair)
    pair_data["source"] = _host_to_dict(pair.source)
    pair_data["destination"] = _host_to_dict(pair.destination)
    targets = pair.destination_pool_targets
    pair_data["destination_pool_targets"] = sorted(targets) if targets is not None else None
    return {"pair": pair_data, "guest": asdict(guest)}


def facts_from_dict(data: dict) -> tuple[PairFacts, GuestSide]:
    """(PairFacts, GuestSide) from ``facts_to_dict``'s data; KeyError/TypeError when it is not that."""
    pair, guest = dict(data["pair"]), dict(data["guest"])
    targets = pair.get("destination_pool_targets")
    pair_facts = PairFacts(**{
        **pair,
        "source": _host_from_dict(pair["source"]),
        "destination": _host_from_dict(pair["destination"]),
        "destination_pool_targets": frozenset(targets) if targets is not None else None,
    })
    guest_side = GuestSide(**{**guest, "disks": tuple(DiskFact(**d) for d in guest["disks"])})
    return pair_facts, guest_side
