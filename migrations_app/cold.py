"""Cold migration as pure decisions: which files move where, the checks, the rewritten XML,
and what an interrupted move means. No I/O here; ``cold_runner`` gathers the facts and acts.

The recipe this replaces: ``virsh dumpxml`` → copy the qcow2 onto the share (or to the other
host) → edit ``<source file=…>`` → ``virsh define`` there → ``virsh undefine`` here → start.
The original disk is never touched before its copy is verified and the guest is defined at
its destination, so every failure can be undone.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hosts.adapters.libvirt import DiskInfo

from .preflight import Verdict
from .verdicts import VerdictStatus

# Free space the destination keeps beyond the copies (filesystem metadata, the host itself).
SPACE_HEADROOM = 0.05
SPACE_MIN_SPARE_BYTES = 64 * 1024 * 1024

ROUTE_ON_HOST = "on-host"  # the source host writes the copy: it sees the destination path (a share)
ROUTE_RELAY = "relay"  # bytes flow source host → portal → destination host over SSH
ROUTE_NONE = "none"  # the file is already where the destination reads it (shared storage)


@dataclass(frozen=True)
class FileMove:
    """One file of the guest and where it goes."""

    kind: str  # "disk" | "nvram"
    target: str  # the disk's target dev ("vda"), or "nvram"
    source_path: str  # on the source host
    destination_path: str  # as the destination host (and the new XML) sees it
    write_path: str  # where the copying host writes (the source's view of a share, or destination_path)
    route: str
    format: str = ""
    readonly: bool = False

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "target": self.target, "source_path": self.source_path,
            "destination_path": self.destination_path, "write_path": self.write_path, "route": self.route,
            "format": self.format, "readonly": self.readonly,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> FileMove:
        return cls(**{k: data[k] for k in (
            "kind", "target", "source_path", "destination_path", "write_path", "route", "format", "readonly")})

    @property
    def copied(self) -> bool:
        return self.route != ROUTE_NONE


@dataclass(frozen=True)
class Placement:
    """Where the guest's files go, as each host sees that place."""

    destination_dir: str | None  # the destination's view; None = each disk's own directory
    source_view_dir: str | None  # the same place as the source sees it (a share both mount), else None
    label: str  # for messages: "share labh3:/srv/vm" or "labh2's local storage"


def under(path: str, directory: str) -> bool:
    directory = directory.rstrip("/")
    if not directory:
        return path.startswith("/")
    return path == directory or path.startswith(directory + "/")


def plan_moves(
    *, disks: Sequence[DiskInfo], nvram: str | None, placement: Placement, same_host: bool
) -> list[FileMove]:
    """The files that make up the guest on disk and their route; cdroms and network disks stay.

    A disk already in the place (on the share, seen at the same path) is not copied. Without a
    share each disk keeps its path on the destination host. NVRAM (UEFI variables) is host-local
    state that libvirt keeps at a fixed path: it moves to the same path on another host.
    """
    moves: list[FileMove] = []
    files = [d for d in disks if d.device in ("disk", "lun") and d.source_type == "file" and d.source]
    # Disks already in the place stay; the destination sees them at its own path for it.
    staying: dict[str, str] = {}
    for disk in files:
        if placement.source_view_dir and placement.destination_dir and under(disk.source, placement.source_view_dir):
            relative = posixpath.relpath(disk.source, placement.source_view_dir)
            staying[disk.target] = posixpath.join(placement.destination_dir, relative)
    taken: set[str] = set(staying.values())
    for disk in files:
        if disk.target in staying:
            seen_as = staying[disk.target]
            moves.append(FileMove("disk", disk.target, disk.source, seen_as, disk.source, ROUTE_NONE,
                                  disk.format, disk.readonly))
            continue
        directory = placement.destination_dir or posixpath.dirname(disk.source)
        destination = _unique(posixpath.join(directory, posixpath.basename(disk.source)), taken)
        taken.add(destination)
        if placement.source_view_dir:
            write_path = posixpath.join(placement.source_view_dir, posixpath.basename(destination))
            route = ROUTE_ON_HOST
        else:
            write_path, route = destination, ROUTE_RELAY
        moves.append(FileMove("disk", disk.target, disk.source, destination, write_path, route,
                              disk.format, disk.readonly))
    if nvram and not same_host:
        moves.append(FileMove("nvram", "nvram", nvram, nvram, nvram, ROUTE_RELAY, "raw", False))
    return moves


def _unique(path: str, taken: set[str]) -> str:
    if path not in taken:
        return path
    stem, ext = posixpath.splitext(path)
    n = 2
    while f"{stem}-{n}{ext}" in taken:
        n += 1
    return f"{stem}-{n}{ext}"


def rewrite_sources(domain_xml: str, new_paths: Mapping[str, str]) -> str:
    """The domain XML with each file disk's ``<source file>`` (by target dev) replaced.

    ``new_paths`` maps target dev → new path; "nvram" maps the ``<os><nvram>`` path. Nothing
    else changes (name, UUID, MACs stay: it is the same guest, moved).
    """
    root = ET.fromstring(domain_xml)
    seen = set()
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        source = disk.find("source")
        if dev in new_paths and source is not None and source.get("file"):
            source.set("file", new_paths[dev])
            seen.add(dev)
    nvram = root.find("os/nvram")
    if "nvram" in new_paths and nvram is not None:
        nvram.text = new_paths["nvram"]
        seen.add("nvram")
    missing = set(new_paths) - seen
    if missing:
        raise ValueError(f"no file disk {', '.join(sorted(missing))} in the guest's XML")
    return ET.tostring(root, encoding="unicode")


def boot_files(domain_xml: str) -> list[str]:
    """Files the guest needs on any host but that do not move: emulator, kernel, initrd, loader, cdroms."""
    root = ET.fromstring(domain_xml)
    paths = []
    for xpath in ("devices/emulator", "os/kernel", "os/initrd", "os/dtb", "os/loader"):
        el = root.find(xpath)
        if el is not None and (el.text or "").strip().startswith("/"):
            paths.append(el.text.strip())
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if disk.get("device") in ("cdrom", "floppy") and source is not None and source.get("file"):
            paths.append(source.get("file"))
    return paths


def nvram_path(domain_xml: str) -> str | None:
    el = ET.fromstring(domain_xml).find("os/nvram")
    text = (el.text or "").strip() if el is not None else ""
    return text or None


# --------------------------------------------------------------------------
# The checks


@dataclass(frozen=True)
class ColdFacts:
    """What the runner found on both hosts, before anything changes."""

    guest_name: str
    guest_state: str  # state_name(): "shutoff", "running", …
    persistent: bool
    has_managed_save: bool
    snapshot_count: int
    same_host: bool
    destination_name: str
    source_name: str
    # Guests already defined at the destination, by UUID and by name (other host only).
    destination_has_uuid: bool = False
    destination_has_name: bool = False
    disks: Sequence[DiskInfo] = ()
    moves: Sequence[FileMove] = ()
    # Per source path: (format, backing file or None) from qemu-img; None = could not read it.
    images: Mapping[str, tuple[str, str | None] | None] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)  # source path → bytes
    existing_destinations: Sequence[str] = ()  # destination paths already taken
    free_bytes: int | None = None  # at the destination directory (as the writer sees it)
    placement_ok: bool = True  # the place exists and the writer can create files there
    placement_problem: str = ""
    missing_boot_files: Sequence[str] = ()
    missing_networks: Sequence[str] = ()
    placement_label: str = ""


def _v(check: str, status: VerdictStatus, reason: str, fix: str = "") -> Verdict:
    return Verdict(check=check, status=status.value, reason=reason, fix=fix)


def check_state(f: ColdFacts) -> Verdict:
    if not f.persistent:
        return _v("state", VerdictStatus.FAIL, f"{f.guest_name} is a transient guest: it has no definition to move.",
                  "Define it persistently (virsh define) first, or live-migrate it.")
    if f.guest_state != "shutoff":
        return _v("state", VerdictStatus.FAIL, f"{f.guest_name} is {f.guest_state}, not shut off; a cold migration moves "
                  "a shut-off guest.",
                  "Shut it down from its page first, or use live migration for a running guest.")
    if f.has_managed_save:
        return _v("state", VerdictStatus.FAIL, f"{f.guest_name} has a saved memory image (managedsave) that would be lost.",
                  "Start it (it resumes from the image) and shut it down cleanly, or discard the image with "
                  "`virsh managedsave-remove`.")
    if f.snapshot_count:
        return _v("state", VerdictStatus.FAIL,
                  f"{f.guest_name} has {f.snapshot_count} snapshot(s); their metadata stays on {f.source_name}.",
                  "Delete or merge the snapshots first (virsh snapshot-list / snapshot-delete).")
    return _v("state", VerdictStatus.PASS, f"{f.guest_name} is shut off and persistent, with no saved state or snapshots.")


def check_identity(f: ColdFacts) -> Verdict:
    if f.same_host:
        return _v("identity", VerdictStatus.PASS, f"The guest stays on {f.source_name}; only its disks move.")
    if f.destination_has_uuid:
        return _v("identity", VerdictStatus.FAIL, f"{f.destination_name} already has a guest with this UUID.",
                  f"Find out which copy is the real one before moving anything: `virsh list --all --uuid` "
                  f"on both hosts; undefine the stale definition on {f.destination_name}.")
    if f.destination_has_name:
        return _v("identity", VerdictStatus.FAIL, f"{f.destination_name} already has a guest named {f.guest_name}.",
                  "Rename one of them (virsh domrename) or move the other guest away first.")
    return _v("identity", VerdictStatus.PASS, f"No guest of that name or UUID on {f.destination_name}.")


def check_disks(f: ColdFacts) -> Verdict:
    unsupported = [d for d in f.disks if d.device in ("disk", "lun") and d.source and d.source_type != "file"]
    if unsupported:
        names = ", ".join(f"{d.target} ({d.source_type})" for d in unsupported)
        return _v("disks", VerdictStatus.FAIL, f"Only file-backed disks can be copied; {names} cannot.",
                  "Move block, volume or network disks with your storage's own tools, or detach them first.")
    copied = [m for m in f.moves if m.copied]
    for move in copied:
        if move.kind != "disk":  # NVRAM: a plain file, only its size is read
            if move.source_path not in f.sizes:
                return _v("disks", VerdictStatus.FAIL, f"Could not read {move.source_path} on {f.source_name}.",
                          "Check that the guest's UEFI variables file exists and that root can read it.")
            continue
        image = f.images.get(move.source_path)
        if image is None:
            return _v("disks", VerdictStatus.FAIL, f"Could not read {move.source_path} on {f.source_name}.",
                      "Check that the file exists and that root can read it on the source host.")
        _fmt, backing = image
        if backing:
            return _v("disks", VerdictStatus.FAIL,
                      f"{move.source_path} is an overlay on {backing}; copying it alone would break the chain.",
                      f"Flatten it first: `qemu-img convert -O qcow2 {move.source_path} NEW.qcow2`, point the "
                      "guest at NEW.qcow2, then migrate.")
    if not f.moves:
        return _v("disks", VerdictStatus.PASS, "The guest has no file disks to move.")
    if not copied:
        return _v("disks", VerdictStatus.PASS, "Every disk is already on the chosen storage; only the definition moves.")
    total = sum(f.sizes.get(m.source_path, 0) for m in copied)
    return _v("disks", VerdictStatus.PASS, f"{len(copied)} file(s) to copy, {total / 2**20:.1f} MiB.")


def space_needed(f: ColdFacts) -> int:
    total = sum(f.sizes.get(m.source_path, 0) for m in f.moves if m.copied and m.kind == "disk")
    return int(total * (1 + SPACE_HEADROOM)) + SPACE_MIN_SPARE_BYTES


def check_storage(f: ColdFacts) -> Verdict:
    if not f.placement_ok:
        return _v("storage", VerdictStatus.FAIL, f.placement_problem or f"{f.placement_label} cannot be written.",
                  "Check the share's page (its grid shows what is missing), or choose other storage.")
    if f.existing_destinations:
        return _v("storage", VerdictStatus.FAIL,
                  f"{', '.join(f.existing_destinations)} already exist(s) on {f.placement_label}; it is never overwritten.",
                  "Move the existing file away (or delete it if it is stale), then retry.")
    if any(m.copied for m in f.moves):
        need = space_needed(f)
        if f.free_bytes is None:
            return _v("storage", VerdictStatus.WARN, f"Could not tell the free space on {f.placement_label}.",
                      f"Check it has at least {need / 2**20:.0f} MiB free.")
        if f.free_bytes < need:
            return _v("storage", VerdictStatus.FAIL,
                      f"{f.placement_label} has {f.free_bytes / 2**20:.0f} MiB free; the copy needs {need / 2**20:.0f} MiB.",
                      "Free space there or choose other storage.")
        return _v("storage", VerdictStatus.PASS, f"{f.placement_label} has room ({f.free_bytes / 2**30:.1f} GiB free).")
    return _v("storage", VerdictStatus.PASS, f"Nothing to copy onto {f.placement_label}.")


def check_destination_files(f: ColdFacts) -> Verdict:
    problems = []
    if f.missing_boot_files:
        problems.append(f"missing on {f.destination_name}: {', '.join(f.missing_boot_files)}")
    if f.missing_networks:
        problems.append(f"no network/bridge {', '.join(f.missing_networks)} on {f.destination_name}")
    if problems:
        return _v("destination", VerdictStatus.FAIL, "The guest would not start there: " + "; ".join(problems) + ".",
                  "Install the emulator/firmware or copy the kernel/ISO to the same path, define the network "
                  "(virsh net-define/net-start), or edit the guest to drop it.")
    return _v("destination", VerdictStatus.PASS, f"{f.destination_name} has the emulator, boot files and networks it uses.")


CHECKS = (check_state, check_identity, check_disks, check_storage, check_destination_files)


def verdicts(facts: ColdFacts) -> list[Verdict]:
    return [check(facts) for check in CHECKS]


def blocking(found: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in found if v.status == VerdictStatus.FAIL]


# --------------------------------------------------------------------------
# After an interruption


@dataclass(frozen=True)
class Where:
    """Where the guest is defined after an interruption (None = could not ask)."""

    source_defined: bool | None
    source_points_at_original: bool | None  # its XML still names the original disk paths
    destination_defined: bool | None
    destination_running: bool | None


SETTLE_MOVED = "moved"  # defined (and maybe running) at the destination only: the move happened
SETTLE_ROLL_BACK = "roll-back"  # still at the source: undo whatever was done at the destination
SETTLE_RESTORE = "restore"  # defined nowhere: define the original XML at the source again
SETTLE_UNKNOWN = "unknown"  # a host did not answer: leave everything, a person decides


def settle(where: Where, *, same_host: bool) -> str:
    """What an interrupted cold migration means, from where the guest is defined now."""
    if same_host:
        if where.source_defined is None:
            return SETTLE_UNKNOWN
        if not where.source_defined:
            return SETTLE_RESTORE
        if where.source_points_at_original is None:
            return SETTLE_UNKNOWN
        return SETTLE_ROLL_BACK if where.source_points_at_original else SETTLE_MOVED
    if where.source_defined is None or where.destination_defined is None:
        return SETTLE_UNKNOWN
    if where.destination_running:
        return SETTLE_MOVED
    if where.source_defined:
        return SETTLE_ROLL_BACK
    if where.destination_defined:
        return SETTLE_MOVED
    return SETTLE_RESTORE
