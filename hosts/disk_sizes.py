"""Guest disk sizes, as pure decisions: what a refresh keeps of each disk, and how much a copy moves.

The inventory records each disk's capacity (what the guest sees), allocation (what holds data)
and physical size (the file or device that holds it) from libvirt's bulk stats
(``hosts.adapters.stats``). This module decides, with no I/O:

- ``sizes_to_keep``: the sizes a refresh stores for a disk — the ones libvirt just gave, else the
  ones recorded before if the disk still points at the same source, else none (unknown);
- ``disk_changes``: which rows of a host's disks a refresh creates, updates or deletes, leaving
  unchanged rows alone;
- ``cold_copy_estimate`` / ``storage_copy_estimate``: the bytes a cold migration reads (whole
  files, hashed on both sides) or a storage-copying live migration moves (the data), over the
  disks that are copied at all, each file once, with ``ASSUMED_DISK_BYTES`` for a disk whose
  size was never recorded — said in words (``SizeEstimate.note``) wherever the estimate shows;
- ``guest_totals``: what the guest page and the inventory show per guest.

A disk is anything with ``target``, ``device``, ``source_type``, ``source``, ``storage``,
``readonly``, ``shareable``, ``capacity_bytes``, ``allocation_bytes`` and ``physical_bytes``
attributes (a ``VirtualDisk`` row, or a ``DiskRow`` here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# A disk whose size no refresh recorded is assumed this large: generous, so a timeout stays long enough.
ASSUMED_DISK_BYTES = 64 * 2**30
IMAGE_DEVICES = ("disk", "lun")  # devices that hold the guest's data (cdroms and floppies do not move)
SIZE_FIELDS = ("capacity_bytes", "allocation_bytes", "physical_bytes")


@dataclass(frozen=True)
class Sizes:
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    physical_bytes: int | None = None

    @property
    def known(self) -> bool:
        return any(getattr(self, f) is not None for f in SIZE_FIELDS)


UNKNOWN = Sizes()


def sizes_to_keep(*, measured: Sizes | None, recorded: Sizes | None, same_source: bool) -> Sizes:
    """What a refresh stores for one disk.

    ``measured``: what libvirt's stats gave this time (None when the stats could not be read or
    did not name the disk). A disk libvirt did not size this time keeps what was recorded of it
    while it points at the same source: a refresh whose stats failed does not forget sizes.
    """
    if measured is not None:
        return measured
    if recorded is not None and same_source:
        return recorded
    return UNKNOWN


def disk_changes(
    existing: Iterable[tuple[int, tuple, Mapping]], wanted: Mapping[tuple, Mapping]
) -> tuple[list[tuple], list[tuple[int, Mapping]], list[int]]:
    """(keys to create, (row id, fields) to update, row ids to delete) for one host's disks.

    ``existing`` are (row id, key, fields) of the rows kept now, ``wanted`` maps each key (guest
    row id, target) to the fields the refresh read. A row whose fields are all equal is left
    alone; a key held by several rows (never written so, but possible in old data) keeps its first.
    """
    seen: dict[tuple, tuple[int, Mapping]] = {}
    delete: list[int] = []
    for row_id, key, fields in existing:
        if key in seen or key not in wanted:
            delete.append(row_id)
        else:
            seen[key] = (row_id, fields)
    create = [key for key in wanted if key not in seen]
    update = []
    for key, (row_id, fields) in seen.items():
        new = wanted[key]
        if any(fields.get(name) != value for name, value in new.items()):
            update.append((row_id, new))
    return create, update, delete


@dataclass(frozen=True)
class DiskRow:
    """A disk as these functions read it, for callers without a ``VirtualDisk`` row."""

    target: str
    device: str = "disk"
    source_type: str = "file"
    source: str = ""
    storage: str = "unknown"
    readonly: bool = False
    shareable: bool = False
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    physical_bytes: int | None = None


@dataclass(frozen=True)
class SizeEstimate:
    """Bytes a copy moves: the recorded sizes plus ``assumed_each`` for each disk of unknown size."""

    bytes: int
    disks: int  # disks counted (each file once)
    unknown: tuple[str, ...] = ()  # targets of the disks whose size was never recorded
    assumed_each: int = ASSUMED_DISK_BYTES
    nothing_recorded: bool = False  # the inventory lists no data disk at all: one disk of unknown size assumed

    @property
    def assumed_bytes(self) -> int:
        return len(self.unknown) * self.assumed_each

    @property
    def note(self) -> str:
        """What the estimate assumed, in words; "" when every size is recorded."""
        if not self.unknown:
            return ""
        each = _binary(self.assumed_each)
        if self.nothing_recorded:
            return f"no disk recorded in the inventory (never refreshed?), assuming one of {each}"
        return (f"size of {', '.join(self.unknown)} unknown (no refresh recorded it), assuming {each}"
                + (" each" if len(self.unknown) > 1 else ""))


def _binary(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} B"


def file_bytes(disk) -> int | None:
    """What copying the whole file reads (and its checksum hashes): the file's size, else its capacity."""
    for value in (disk.physical_bytes, disk.capacity_bytes):
        if value is not None:
            return value
    return None


def data_bytes(disk) -> int | None:
    """What a copy of the disk's data moves (a storage-copying live migration): its allocation."""
    for value in (disk.allocation_bytes, disk.physical_bytes, disk.capacity_bytes):
        if value is not None:
            return value
    return None


def _estimate(disks: Iterable, measure, *, assumed_each: int) -> SizeEstimate:
    total, counted, unknown = 0, 0, []
    seen_sources: set[str] = set()
    for disk in disks:
        if disk.source in seen_sources:  # one file attached twice (or listed by two guests) is copied once
            continue
        seen_sources.add(disk.source)
        counted += 1
        size = measure(disk)
        if size is None:
            unknown.append(disk.target)
            total += assumed_each
        else:
            total += size
    return SizeEstimate(bytes=total, disks=counted, unknown=tuple(unknown), assumed_each=assumed_each)


def cold_copy_estimate(disks: Iterable, *, assumed_each: int = ASSUMED_DISK_BYTES) -> SizeEstimate:
    """The bytes a cold migration reads: every file-backed data disk it may copy, each file once.

    An upper bound for a job timeout: a disk already on the chosen share is counted too (the job
    finds out on the hosts whether it moves). A guest whose row lists no data disk at all was
    perhaps never refreshed with its disks: one disk of ``assumed_each`` is assumed, so the job's
    timeout is not cut to nothing by a gap in the inventory.
    """
    disks = list(disks)
    if not any(d.device in IMAGE_DEVICES for d in disks):
        return SizeEstimate(bytes=assumed_each, disks=0, unknown=("disks",), assumed_each=assumed_each,
                            nothing_recorded=True)
    files = [d for d in disks if d.device in IMAGE_DEVICES and d.source_type == "file" and d.source]
    return _estimate(files, file_bytes, assumed_each=assumed_each)


def storage_copy_estimate(disks: Iterable, *, assumed_each: int = ASSUMED_DISK_BYTES) -> SizeEstimate:
    """The data a storage-copying live migration moves: the writable disks only this host sees.

    Disks on shared storage (or network disks) are not copied, so they never count — not once
    per guest that uses them, not at all.
    """
    local = [d for d in disks if d.device in IMAGE_DEVICES and d.storage == "local" and d.source
             and not d.readonly and not d.shareable]
    return _estimate(local, data_bytes, assumed_each=assumed_each)


@dataclass(frozen=True)
class GuestTotals:
    capacity_bytes: int = 0
    allocation_bytes: int = 0
    disks: int = 0  # data disks (cdroms left out)
    unknown: int = 0  # of which no size was recorded

    @property
    def known(self) -> bool:
        return self.disks > self.unknown


def guest_totals(disks: Iterable) -> GuestTotals:
    """A guest's data disks summed (each source once): capacity and allocation of those with a recorded size."""
    capacity = allocation = counted = unknown = 0
    seen: set[str] = set()
    for disk in disks:
        if disk.device not in IMAGE_DEVICES:
            continue
        key = disk.source or f"target:{disk.target}"
        if key in seen:
            continue
        seen.add(key)
        counted += 1
        if disk.capacity_bytes is None and disk.allocation_bytes is None:
            unknown += 1
            continue
        capacity += disk.capacity_bytes or 0
        allocation += disk.allocation_bytes or 0
    return GuestTotals(capacity_bytes=capacity, allocation_bytes=allocation, disks=counted, unknown=unknown)
