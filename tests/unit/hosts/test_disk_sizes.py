"""Disk sizes as pure decisions: what a refresh keeps, which rows it writes, what a copy moves."""

from __future__ import annotations

import pytest

from hosts.disk_sizes import (
    ASSUMED_DISK_BYTES,
    UNKNOWN,
    DiskRow,
    GuestTotals,
    Sizes,
    cold_copy_estimate,
    disk_changes,
    guest_totals,
    sizes_to_keep,
    storage_copy_estimate,
)

GIB = 2**30
MEASURED, RECORDED = Sizes(20 * GIB, 3 * GIB, 3 * GIB), Sizes(20 * GIB, 2 * GIB, 2 * GIB)


@pytest.mark.parametrize("measured, recorded, same_source, kept", [
    (MEASURED, RECORDED, True, MEASURED),  # what libvirt said now wins
    (MEASURED, None, False, MEASURED),  # a new disk
    (None, RECORDED, True, RECORDED),  # the stats failed: the sizes are not forgotten
    (None, RECORDED, False, UNKNOWN),  # another file now: the old sizes are not its sizes
    (None, None, False, UNKNOWN),  # never sized
    (Sizes(None, None, None), RECORDED, True, Sizes(None, None, None)),  # libvirt says it cannot size it (tray emptied)
])
def test_sizes_to_keep(measured, recorded, same_source, kept):
    assert sizes_to_keep(measured=measured, recorded=recorded, same_source=same_source) == kept


def test_disk_changes_write_only_what_changed():
    a = {"source": "/a", "capacity_bytes": GIB}
    existing = [
        (1, (10, "vda"), a),  # unchanged
        (2, (10, "vdb"), {"source": "/b", "capacity_bytes": GIB}),  # grows
        (3, (11, "vda"), {"source": "/c", "capacity_bytes": None}),  # detached
        (4, (10, "vda"), a),  # an old duplicate of a key
    ]
    wanted = {(10, "vda"): dict(a), (10, "vdb"): {"source": "/b", "capacity_bytes": 2 * GIB},
              (12, "vda"): {"source": "/d", "capacity_bytes": None}}
    create, update, delete = disk_changes(existing, wanted)
    assert create == [(12, "vda")]
    assert update == [(2, {"source": "/b", "capacity_bytes": 2 * GIB})]
    assert sorted(delete) == [3, 4]
    assert disk_changes(existing[:2], {(10, "vda"): a, (10, "vdb"): existing[1][2]}) == ([], [], [])


def disk(target="vda", **fields):
    return DiskRow(target=target, source=fields.pop("source", f"/images/{target}.qcow2"), **fields)


@pytest.mark.parametrize("disks, expected_bytes, unknown", [
    # The file's size: what the copy and both checksums read (a sparse raw file is read whole).
    ([disk(capacity_bytes=20 * GIB, allocation_bytes=GIB, physical_bytes=20 * GIB)], 20 * GIB, ()),
    ([disk(capacity_bytes=20 * GIB, allocation_bytes=3 * GIB, physical_bytes=3 * GIB)], 3 * GIB, ()),
    # Only a capacity recorded: a raw file's size is its capacity.
    ([disk(capacity_bytes=8 * GIB)], 8 * GIB, ()),
    # Never sized: the fallback, named.
    ([disk(), disk("vdb", physical_bytes=GIB)], ASSUMED_DISK_BYTES + GIB, ("vda",)),
    # Cdroms, network and block disks are not copied by a cold migration.
    ([disk(physical_bytes=GIB), disk("sda", device="cdrom", physical_bytes=4 * GIB),
      disk("vdb", source_type="network", source="pool/x", capacity_bytes=9 * GIB),
      disk("vdc", source_type="block", source="/dev/vg/x", capacity_bytes=9 * GIB)], GIB, ()),
    # One file attached twice is read once.
    ([disk(source="/s/x.img", physical_bytes=GIB), disk("vdb", source="/s/x.img", physical_bytes=GIB)], GIB, ()),
])
def test_cold_copy_estimate(disks, expected_bytes, unknown):
    estimate = cold_copy_estimate(disks)
    assert (estimate.bytes, estimate.unknown) == (expected_bytes, unknown)
    assert bool(estimate.note) == bool(unknown)


def test_cold_estimate_of_a_guest_with_no_disk_recorded_assumes_one():
    estimate = cold_copy_estimate([disk("sda", device="cdrom", physical_bytes=GIB)])
    assert estimate.bytes == ASSUMED_DISK_BYTES and estimate.nothing_recorded
    assert estimate.note == "no disk recorded in the inventory (never refreshed?), assuming one of 64 GiB"


def test_the_note_names_the_disks_and_the_size_assumed():
    estimate = cold_copy_estimate([disk("vda"), disk("vdb")], assumed_each=10 * GIB)
    assert estimate.note == "size of vda, vdb unknown (no refresh recorded it), assuming 10 GiB each"
    assert estimate.assumed_bytes == 20 * GIB


@pytest.mark.parametrize("disks, expected_bytes, unknown", [
    # The data a storage copy sends: the allocation of local writable disks.
    ([disk(storage="local", capacity_bytes=20 * GIB, allocation_bytes=3 * GIB, physical_bytes=20 * GIB)], 3 * GIB, ()),
    # Shared and network disks are not copied: they never count.
    ([disk(storage="local", allocation_bytes=GIB), disk("vdb", storage="shared", allocation_bytes=50 * GIB),
      disk("vdc", storage="network", source="pool/x", allocation_bytes=50 * GIB)], GIB, ()),
    # Read-only and shareable disks are not copied either.
    ([disk(storage="local", readonly=True, allocation_bytes=GIB), disk("vdb", storage="local", shareable=True)], 0, ()),
    ([disk(storage="local")], ASSUMED_DISK_BYTES, ("vda",)),
])
def test_storage_copy_estimate(disks, expected_bytes, unknown):
    estimate = storage_copy_estimate(disks)
    assert (estimate.bytes, estimate.unknown) == (expected_bytes, unknown)


@pytest.mark.parametrize("disks, totals", [
    ([disk(capacity_bytes=20 * GIB, allocation_bytes=3 * GIB), disk("vdb", capacity_bytes=GIB, allocation_bytes=0)],
     GuestTotals(21 * GIB, 3 * GIB, 2, 0)),
    ([disk(capacity_bytes=GIB, allocation_bytes=GIB), disk("vdb")], GuestTotals(GIB, GIB, 2, 1)),
    ([disk("sda", device="cdrom", capacity_bytes=GIB)], GuestTotals(0, 0, 0, 0)),
    # The same shared file attached twice counts once.
    ([disk(source="/s/x", capacity_bytes=GIB, allocation_bytes=GIB),
      disk("vdb", source="/s/x", capacity_bytes=GIB, allocation_bytes=GIB)], GuestTotals(GIB, GIB, 1, 0)),
    ([disk()], GuestTotals(0, 0, 1, 1)),
])
def test_guest_totals(disks, totals):
    assert guest_totals(disks) == totals
    assert totals.known == (totals.disks > totals.unknown)
