"""Flag hosts that share a hostname or libvirt host UUID (pure).

libvirt refuses to migrate between two hosts it believes are the same machine: it compares
host UUIDs (and hostnames in some checks), so cloned hosts must be told apart first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostIdentity:
    host_id: int
    name: str
    hostname: str
    host_uuid: str


@dataclass
class DuplicateFlags:
    same_hostname_as: list[str] = field(default_factory=list)
    same_uuid_as: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.same_hostname_as or self.same_uuid_as)


def find_duplicate_identities(identities: Iterable[HostIdentity]) -> dict[int, DuplicateFlags]:
    """Map host id → the other hosts (by portal name) sharing its hostname or host UUID.

    Hostnames compare case-insensitively; empty values (facts not gathered yet) never match.
    Hosts with no duplicate are absent from the result.
    """
    identities = list(identities)
    by_hostname: dict[str, list[HostIdentity]] = defaultdict(list)
    by_uuid: dict[str, list[HostIdentity]] = defaultdict(list)
    for ident in identities:
        if ident.hostname.strip():
            by_hostname[ident.hostname.strip().lower()].append(ident)
        if ident.host_uuid.strip():
            by_uuid[ident.host_uuid.strip().lower()].append(ident)

    flags: dict[int, DuplicateFlags] = {}
    for groups, attr in ((by_hostname, "same_hostname_as"), (by_uuid, "same_uuid_as")):
        for group in groups.values():
            if len(group) < 2:
                continue
            for ident in group:
                peers = sorted(other.name for other in group if other.host_id != ident.host_id)
                getattr(flags.setdefault(ident.host_id, DuplicateFlags()), attr).extend(peers)
    return flags
