"""May a saved state be restored here? Pure decisions over facts gathered elsewhere.

Restoring a memory state whose disks moved on since the save corrupts the guest (its page
cache and the filesystem disagree), so every disk must be present and unchanged, or the admin
confirms it changed. The destination must see the state file and the disks (the same host, or
shared storage), run the same or a newer QEMU, and support the machine type of the save. On
another host only disks that were on shared (or network) storage at the save count as "the
same disk": a local path there is another file. And the guest must run nowhere: a second copy
started from the state would write the same disks as the one still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DiskAtSave:
    """What a disk looked like when the state was saved: a cheap fingerprint, not a checksum."""

    path: str
    size: int
    mtime_ns: int
    storage: str = ""  # hosts' DiskStorageChoices at the save ("" on records made before it was kept)


# Storage that another host sees as the very same disk.
SHARED_STORAGE = frozenset({"shared", "network"})


@dataclass(frozen=True)
class DiskNow:
    """What the destination sees at that path now (``present`` False: not there)."""

    path: str
    present: bool
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class RestoreFacts:
    same_host: bool
    file_seen: bool  # the destination sees the state file (its size and checksum match)
    qemu_at_save: str  # "8.2.0"
    qemu_here: str
    machine_at_save: str  # "pc-i440fx-7.2"
    machines_here: tuple[str, ...]
    disks_at_save: tuple[DiskAtSave, ...]
    disks_now: tuple[DiskNow, ...]
    changed_disks_confirmed: bool = False
    saved_on: str = ""  # the host the state was saved on
    guest: str = ""
    active_on: tuple[str, ...] = ()  # hosts that run (or pause) a guest with the state's UUID now
    unanswered: tuple[str, ...] = ()  # hosts that might and did not answer


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...] = field(default_factory=tuple)
    changed_disks: tuple[str, ...] = field(default_factory=tuple)


def parse_version(text: str) -> tuple[int, ...] | None:
    """"8.2.0" → (8, 2, 0); None when it is not a dotted number."""
    parts = text.strip().split(".")
    if not text.strip() or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def restore_verdict(facts: RestoreFacts) -> Verdict:
    """Every reason this state may not be restored with these facts (empty: it may)."""
    problems: list[str] = []
    if not facts.file_seen:
        where = "this host" if facts.same_host else "the destination"
        problems.append(f"The state file is not seen by {where} (or its size or checksum differ): "
                        "restore where the file is, or save onto a share both hosts mount.")
    saved, here = parse_version(facts.qemu_at_save), parse_version(facts.qemu_here)
    if saved is None or here is None:
        problems.append(f"QEMU versions cannot be compared ({facts.qemu_at_save or '?'} at save, "
                        f"{facts.qemu_here or '?'} here): refresh the host's facts.")
    elif here < saved:
        problems.append(f"QEMU here is {facts.qemu_here}, older than the {facts.qemu_at_save} the state was "
                        "saved with: restore on a host with the same or a newer QEMU.")
    if facts.machine_at_save and facts.machine_at_save not in facts.machines_here:
        problems.append(f"Machine type {facts.machine_at_save} is not supported here: choose a host whose "
                        "QEMU offers it.")
    guest = facts.guest or "The guest"
    for host in facts.active_on:
        problems.append(f"{guest} is running on {host} now: a restore would start a second copy of it on the "
                        f"same disks. Shut it down on {host} first (its disks then changed since the save, "
                        "which the restore asks you to confirm), or keep it and delete this state.")
    for host in facts.unanswered:
        problems.append(f"{host} did not answer, so it may still run {facts.guest or 'the guest'}: restore once "
                        f"{host} answers, or, if {host} is dead, recover its guests from its page.")
    now = {disk.path: disk for disk in facts.disks_now}
    changed: list[str] = []
    for disk in facts.disks_at_save:
        seen = now.get(disk.path)
        if not facts.same_host and disk.storage not in SHARED_STORAGE:
            origin = facts.saved_on or "its host"
            where = (f"{origin}'s local storage" if disk.storage == "local"
                     else f"storage of {origin} not known to be shared")
            problems.append(f"Disk {disk.path} was on {where} when the state was saved: another host sees "
                            f"another file there. Restore on {origin}, or move the disk to shared storage "
                            "and save again.")
        elif seen is None or not seen.present:
            problems.append(f"Disk {disk.path} is not there: restore where the guest's disks are (shared storage).")
        elif (seen.size, seen.mtime_ns) != (disk.size, disk.mtime_ns):
            changed.append(disk.path)
    if changed and not facts.changed_disks_confirmed:
        problems.append(f"Disk {', '.join(changed)} changed since the save: restoring would corrupt the guest. "
                        "Confirm that the change is wanted, or delete this state.")
    return Verdict(ok=not problems, problems=tuple(problems), changed_disks=tuple(changed))
