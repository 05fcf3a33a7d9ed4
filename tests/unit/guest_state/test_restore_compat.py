import dataclasses

import pytest

from guest_state.compat import DiskAtSave, DiskNow, RestoreFacts, parse_version, restore_verdict

DISK = DiskAtSave(path="/shared/linux.qcow2", size=16 << 20, mtime_ns=1000, storage="shared")
SAME = DiskNow(path=DISK.path, present=True, size=DISK.size, mtime_ns=DISK.mtime_ns)
BASE = RestoreFacts(
    same_host=True, file_seen=True, qemu_at_save="7.2.0", qemu_here="7.2.0", machine_at_save="pc-i440fx-7.2",
    machines_here=("pc-i440fx-7.2", "pc-q35-7.2"), disks_at_save=(DISK,), disks_now=(SAME,),
    saved_on="kvm-a", guest="linux",
)
LOCAL = dataclasses.replace(DISK, storage="local")
OLD_RECORD = dataclasses.replace(DISK, storage="")


@pytest.mark.parametrize(
    "changes, ok, words",
    [
        ({}, True, ""),
        ({"same_host": False}, True, ""),
        ({"qemu_here": "8.0.1"}, True, ""),
        ({"qemu_here": "7.1.9"}, False, "older than"),
        ({"qemu_here": ""}, False, "cannot be compared"),
        ({"machines_here": ("pc-q35-7.2",)}, False, "not supported here"),
        ({"file_seen": False, "same_host": False}, False, "not seen by the destination"),
        ({"disks_now": ()}, False, "is not there"),
        ({"disks_now": (dataclasses.replace(SAME, present=False),)}, False, "is not there"),
        ({"disks_now": (dataclasses.replace(SAME, mtime_ns=2000),)}, False, "changed since the save"),
        ({"disks_now": (dataclasses.replace(SAME, size=1),)}, False, "changed since the save"),
        ({"disks_now": (dataclasses.replace(SAME, mtime_ns=2000),), "changed_disks_confirmed": True}, True, ""),
        ({"disks_at_save": (), "disks_now": ()}, True, ""),
        # Another host sees the same disk only on shared (or network) storage.
        ({"same_host": False, "disks_at_save": (dataclasses.replace(DISK, storage="network"),)}, True, ""),
        ({"same_host": False, "disks_at_save": (LOCAL,)}, False, "was on kvm-a's local storage"),
        ({"same_host": False, "disks_at_save": (OLD_RECORD,)}, False, "not known to be shared"),
        ({"disks_at_save": (LOCAL,)}, True, ""),
        # A second copy of a guest that runs somewhere, or may: never.
        ({"active_on": ("kvm-b",)}, False, "linux is running on kvm-b now"),
        ({"same_host": False, "active_on": ("kvm-a",)}, False, "second copy"),
        ({"same_host": False, "unanswered": ("kvm-a",)}, False, "kvm-a did not answer"),
        ({"disks_now": (dataclasses.replace(SAME, mtime_ns=2000),), "changed_disks_confirmed": True,
          "active_on": ("kvm-a",)}, False, "Shut it down on kvm-a first"),
    ],
)
def test_restore_verdict(changes, ok, words):
    verdict = restore_verdict(dataclasses.replace(BASE, **changes))
    assert verdict.ok is ok
    assert words in " ".join(verdict.problems)


def test_confirmed_change_still_names_the_disk():
    verdict = restore_verdict(dataclasses.replace(
        BASE, disks_now=(dataclasses.replace(SAME, mtime_ns=5),), changed_disks_confirmed=True))
    assert verdict.changed_disks == (DISK.path,)


@pytest.mark.parametrize("text, parsed", [("8.2.0", (8, 2, 0)), ("7", (7,)), ("", None), ("8.x", None), ("8..1", None)])
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed
