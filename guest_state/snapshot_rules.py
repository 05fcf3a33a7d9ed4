"""May libvirt snapshot this guest, revert it, and what is true of its snapshots? Pure decisions.

The portal takes libvirt's *internal* snapshots: they live inside the guest's qcow2 images, with
the memory of a running or paused guest (QEMU's savevm, a full checkpoint to reset to) or, of a
shut-off guest, its disks only (qemu-img). So every writable disk must be qcow2: a raw image
has nowhere to keep one. libvirt can take external snapshots too, but the libvirt of our hosts
(9.0) cannot revert to one (9.7 and later can), and "reset to a clean state" is the point.

The same verdict runs on the inventory's rows when a snapshot is asked for, and on libvirt's
own description of the guest when the job runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .compat import parse_version

MAX_NAME_CHARS = 64
MAX_NOTE_CHARS = 500
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Guest states with memory to keep; a shut-off guest gets a disk-only snapshot.
MEMORY_STATES = ("running", "paused", "blocked")
# libvirt 9.2 stopped taking internal snapshots of guests whose UEFI firmware is in pflash.
PFLASH_REFUSED_SINCE = (9, 2, 0)
# libvirt reverts to external snapshots from 9.7 on.
EXTERNAL_REVERT_SINCE = (9, 7, 0)


class NameProblem(ValueError):
    """The snapshot name or note given is not acceptable; the message says why."""


def validate_name(text: str) -> str:
    """The snapshot name, stripped, or NameProblem saying what a name may be."""
    name = (text or "").strip()
    if not name:
        raise NameProblem("Give the snapshot a name, e.g. clean-install.")
    if len(name) > MAX_NAME_CHARS:
        raise NameProblem(f"A snapshot name is at most {MAX_NAME_CHARS} characters.")
    if not _NAME.match(name):
        raise NameProblem("A snapshot name is letters, digits, '.', '_' and '-' only, starting with a letter "
                          "or a digit (it is a name in libvirt and in qcow2 images).")
    return name


def validate_note(text: str) -> str:
    note = (text or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise NameProblem(f"The note is longer than {MAX_NOTE_CHARS} characters.")
    if _CONTROL.search(note):
        raise NameProblem("The note holds control characters: give plain text.")
    return note


@dataclass(frozen=True)
class DiskFact:
    target: str
    source: str = ""
    format: str = ""  # the driver type: qcow2, raw, …
    device: str = "disk"
    source_type: str = "file"  # file, block, network, volume
    readonly: bool = False

    @property
    def kept_out(self) -> bool:
        """Left out of a snapshot: nothing in it changes (what the adapter marks snapshot='no')."""
        return self.readonly or self.device in ("cdrom", "floppy") or not self.source


@dataclass(frozen=True)
class SnapshotFacts:
    name: str
    state: str  # libvirt's: running, paused, shutoff, crashed, …
    persistent: bool = True
    managed_save: bool = False
    host_devices: int = 0
    pflash: bool = False
    libvirt_version: str = ""
    disks: tuple[DiskFact, ...] = ()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    with_memory: bool = False
    problems: tuple[str, ...] = field(default_factory=tuple)


def snapshot_verdict(facts: SnapshotFacts) -> Verdict:
    """Every reason libvirt cannot take an internal snapshot of this guest (empty: it can), and
    whether it will hold the guest's memory."""
    problems: list[str] = []
    with_memory = facts.state in MEMORY_STATES
    if not with_memory and facts.state != "shutoff":
        problems.append(f"{facts.name} is {facts.state or 'in an unknown state'}: a snapshot is taken of a running "
                        "or paused guest (with its memory) or of a shut-off one (its disks). Start it or shut it "
                        "down first, or refresh the host if the state shown is out of date.")
    if not facts.persistent:
        problems.append(f"{facts.name} is transient: libvirt would forget its snapshots when it stops. Define it "
                        "persistently first (virsh define).")
    if facts.managed_save:
        problems.append(f"{facts.name} has a managed save: start it (it resumes there) or discard the managed save "
                        "before taking a snapshot.")
    if with_memory and facts.host_devices:
        problems.append(f"{facts.name} passes {facts.host_devices} host device(s) through: QEMU cannot keep their "
                        "state in a snapshot with memory. Shut it down for a snapshot of its disks.")
    version = parse_version(facts.libvirt_version) if facts.libvirt_version else None
    if facts.pflash and version is not None and version >= PFLASH_REFUSED_SINCE:
        problems.append(f"{facts.name} boots UEFI firmware from pflash: libvirt {facts.libvirt_version} takes no "
                        "internal snapshot of such a guest. Save its state to a file instead (Saved states).")
    writable = [d for d in facts.disks if not d.kept_out]
    for disk in writable:
        where = f"Disk {disk.target} ({disk.source})"
        if disk.format != "qcow2":
            problems.append(f"{where} is {disk.format or 'of an unknown format'}: an internal snapshot lives inside a "
                            "qcow2 image, so libvirt cannot take one of this disk. Convert it while the guest is "
                            "shut off (qemu-img convert -O qcow2, then give the guest the new file with driver type "
                            "qcow2), or save the guest's state to a file instead (Saved states).")
        elif disk.source_type == "volume":
            problems.append(f"{where} is a storage pool volume: libvirt takes no internal snapshot of one. Give the "
                            "guest the volume's file path instead.")
        elif disk.source_type == "network" and not with_memory:
            problems.append(f"{where} is a network disk: libvirt snapshots it only while the guest runs (QEMU does "
                            "it). Start the guest first.")
    if not writable:
        problems.append(f"{facts.name} has no writable disk: an internal snapshot (its memory too) is kept inside "
                        "a writable qcow2 image. Give it one, or save its state to a file instead (Saved states).")
    return Verdict(ok=not problems, with_memory=with_memory, problems=tuple(problems))


@dataclass(frozen=True)
class RevertFacts:
    name: str  # the guest's
    snapshot: str
    in_libvirt: bool  # libvirt still lists the snapshot
    kind: str = "internal"  # internal, external, mixed
    managed_save: bool = False
    libvirt_version: str = ""


def revert_verdict(facts: RevertFacts) -> Verdict:
    """Every reason libvirt cannot revert this guest to this snapshot (empty: it can)."""
    problems: list[str] = []
    if not facts.in_libvirt:
        problems.append(f"libvirt no longer has the snapshot {facts.snapshot} of {facts.name} (deleted outside the "
                        "portal?): nothing to revert to. Delete its record.")
    if facts.managed_save:
        problems.append(f"{facts.name} has a managed save: discard it (or start the guest) before reverting.")
    version = parse_version(facts.libvirt_version) if facts.libvirt_version else None
    if facts.kind != "internal" and (version is None or version < EXTERNAL_REVERT_SINCE):
        problems.append(f"{facts.snapshot} is an {facts.kind} snapshot: libvirt {facts.libvirt_version or '?'} "
                        "cannot revert to one (9.7 and later can). Upgrade libvirt on the host, or revert by hand.")
    return Verdict(ok=not problems, problems=tuple(problems))


@dataclass(frozen=True)
class Reconciled:
    """What libvirt's list says of the portal's records of one guest's snapshots."""

    gone: tuple[str, ...]  # recorded as present, not in libvirt any more
    back: tuple[str, ...]  # recorded as gone, in libvirt again
    unrecorded: tuple[str, ...]  # in libvirt, no record (taken with virsh)


def reconcile(*, recorded: dict[str, str], in_libvirt: set[str]) -> Reconciled:
    """``recorded`` maps each snapshot name the portal keeps to "present" or "missing"."""
    gone = sorted(n for n, status in recorded.items() if status == "present" and n not in in_libvirt)
    back = sorted(n for n, status in recorded.items() if status == "missing" and n in in_libvirt)
    unrecorded = sorted(n for n in in_libvirt if n not in recorded)
    return Reconciled(gone=tuple(gone), back=tuple(back), unrecorded=tuple(unrecorded))
