"""migrations_app.cold: which files move where, the rewritten XML, the checks and what an
interrupted move means — pure decisions, tested with plain tables of cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hosts.adapters.libvirt import DiskInfo
from migrations_app import cold
from migrations_app.cold import (
    ROUTE_NONE,
    ROUTE_ON_HOST,
    ROUTE_RELAY,
    SETTLE_MOVED,
    SETTLE_RESTORE,
    SETTLE_ROLL_BACK,
    SETTLE_UNKNOWN,
    ColdFacts,
    FileMove,
    Placement,
    Where,
)

MIB = 2**20
GIB = 2**30
IMAGES = "/var/lib/libvirt/images"
NVRAM = "/var/lib/libvirt/qemu/nvram/web-1_VARS.fd"
HOSTILE_PATH = "/mnt/vm/a b'\"<&>;$(rm -rf ~)`id`.qcow2"

SHARE = Placement(destination_dir="/mnt/vm", source_view_dir="/mnt/vm", label="share kvm-c:/srv/vm")
# The source host serves the share (sees the export), the destination mounts it.
SHARE_SERVED_BY_SOURCE = Placement(destination_dir="/mnt/vm", source_view_dir="/srv/vm", label="share kvm-a:/srv/vm")
# Only the destination mounts the share: the bytes are relayed.
SHARE_ONLY_AT_DESTINATION = Placement(destination_dir="/mnt/vm", source_view_dir=None, label="share kvm-c:/srv/vm")
OWN_STORAGE = Placement(destination_dir=None, source_view_dir=None, label="kvm-b's local storage")


def disk(target: str, source: str, *, device: str = "disk", source_type: str = "file", fmt: str = "qcow2",
         readonly: bool = False) -> DiskInfo:
    return DiskInfo(target=target, device=device, source_type=source_type, source=source, protocol="",
                    format=fmt, readonly=readonly, shareable=False)


def move(target: str, source: str, destination: str, write: str, route: str, *, kind: str = "disk",
         fmt: str = "qcow2", readonly: bool = False) -> FileMove:
    return FileMove(kind, target, source, destination, write, route, fmt, readonly)


def facts(**changes) -> ColdFacts:
    """A shut-off, persistent guest with one 1 GiB disk relayed to kvm-b, which has room."""
    fields = dict(
        guest_name="web-1", guest_state="shutoff", persistent=True, has_managed_save=False, snapshot_count=0,
        same_host=False, destination_name="kvm-b", source_name="kvm-a",
        disks=[disk("vda", f"{IMAGES}/web-1.qcow2")],
        moves=[move("vda", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", ROUTE_RELAY)],
        images={f"{IMAGES}/web-1.qcow2": ("qcow2", None)},
        sizes={f"{IMAGES}/web-1.qcow2": GIB},
        free_bytes=100 * GIB,
        placement_label="kvm-b's local storage",
    )
    fields.update(changes)
    return ColdFacts(**fields)


# --------------------------------------------------------------------------- plan_moves


@pytest.mark.parametrize(
    "disks, nvram, placement, same_host, expected",
    [
        pytest.param(  # another host, its own storage: same path there, bytes relayed
            [disk("vda", f"{IMAGES}/web-1.qcow2")], None, OWN_STORAGE, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", ROUTE_RELAY)],
            id="own-storage-relay",
        ),
        pytest.param(  # each disk keeps its own directory without a share
            [disk("vda", "/data/a/root.qcow2"), disk("vdb", "/data/b/root.qcow2")], None, OWN_STORAGE, False,
            [move("vda", "/data/a/root.qcow2", "/data/a/root.qcow2", "/data/a/root.qcow2", ROUTE_RELAY),
             move("vdb", "/data/b/root.qcow2", "/data/b/root.qcow2", "/data/b/root.qcow2", ROUTE_RELAY)],
            id="own-storage-keeps-directories",
        ),
        pytest.param(  # both hosts mount the share: the source writes the copy there itself
            [disk("vda", f"{IMAGES}/web-1.qcow2")], None, SHARE, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_ON_HOST)],
            id="share-on-host",
        ),
        pytest.param(  # the source serves the share: it writes under the export, the XML names the mount
            [disk("vda", f"{IMAGES}/web-1.qcow2")], None, SHARE_SERVED_BY_SOURCE, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/srv/vm/web-1.qcow2", ROUTE_ON_HOST)],
            id="share-served-by-source",
        ),
        pytest.param(  # the source does not mount the share: relayed to the destination's view
            [disk("vda", f"{IMAGES}/web-1.qcow2")], None, SHARE_ONLY_AT_DESTINATION, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_RELAY)],
            id="share-only-at-destination",
        ),
        pytest.param(  # already on the share, seen at the same path: nothing to copy
            [disk("vda", "/mnt/vm/web-1.qcow2")], None, SHARE, False,
            [move("vda", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_NONE)],
            id="already-on-share",
        ),
        pytest.param(  # in a subdirectory of the share: still on it
            [disk("vda", "/mnt/vm/team/web-1.qcow2")], None, SHARE, False,
            [move("vda", "/mnt/vm/team/web-1.qcow2", "/mnt/vm/team/web-1.qcow2", "/mnt/vm/team/web-1.qcow2",
                  ROUTE_NONE)],
            id="already-on-share-subdirectory",
        ),
        pytest.param(  # /mnt/vmx is not under /mnt/vm
            [disk("vda", "/mnt/vmx/web-1.qcow2")], None, SHARE, False,
            [move("vda", "/mnt/vmx/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_ON_HOST)],
            id="sibling-directory-is-not-the-share",
        ),
        pytest.param(  # two disks with one file name get distinct names on the share
            [disk("vda", "/data/a/root.qcow2"), disk("vdb", "/data/b/root.qcow2"), disk("vdc", "/data/c/root.qcow2")],
            None, SHARE, False,
            [move("vda", "/data/a/root.qcow2", "/mnt/vm/root.qcow2", "/mnt/vm/root.qcow2", ROUTE_ON_HOST),
             move("vdb", "/data/b/root.qcow2", "/mnt/vm/root-2.qcow2", "/mnt/vm/root-2.qcow2", ROUTE_ON_HOST),
             move("vdc", "/data/c/root.qcow2", "/mnt/vm/root-3.qcow2", "/mnt/vm/root-3.qcow2", ROUTE_ON_HOST)],
            id="same-file-name-made-unique",
        ),
        pytest.param(  # cdroms, network and block disks and disks without a source stay where they are
            [disk("vda", f"{IMAGES}/web-1.qcow2"), disk("hda", "/isos/debian.iso", device="cdrom", fmt="raw"),
             disk("fda", "/isos/boot.img", device="floppy", fmt="raw"),
             disk("vdb", "rbd/web-1", source_type="network", fmt="raw"),
             disk("vdc", "/dev/vg0/web-1", source_type="block", fmt="raw"), disk("vdd", "")],
            None, OWN_STORAGE, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", f"{IMAGES}/web-1.qcow2", ROUTE_RELAY)],
            id="only-file-disks-and-luns",
        ),
        pytest.param(  # a file-backed LUN is copied like a disk, read-only kept
            [disk("sda", f"{IMAGES}/lun.raw", device="lun", fmt="raw", readonly=True)], None, OWN_STORAGE, False,
            [move("sda", f"{IMAGES}/lun.raw", f"{IMAGES}/lun.raw", f"{IMAGES}/lun.raw", ROUTE_RELAY, fmt="raw",
                  readonly=True)],
            id="lun",
        ),
        pytest.param(  # NVRAM goes to the same path on the other host
            [disk("vda", f"{IMAGES}/web-1.qcow2")], NVRAM, SHARE, False,
            [move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_ON_HOST),
             move("nvram", NVRAM, NVRAM, NVRAM, ROUTE_RELAY, kind="nvram", fmt="raw")],
            id="nvram-to-other-host",
        ),
        pytest.param(  # the same host keeps its NVRAM where it is
            [disk("vda", f"{IMAGES}/web-1.qcow2")], NVRAM, SHARE, True,
            [move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_ON_HOST)],
            id="nvram-stays-on-same-host",
        ),
        pytest.param([], None, OWN_STORAGE, False, [], id="no-disks"),
    ],
)
def test_plan_moves(disks, nvram, placement, same_host, expected):
    assert cold.plan_moves(disks=disks, nvram=nvram, placement=placement, same_host=same_host) == expected


def test_plan_moves_keeps_hostile_file_names_as_they_are():
    [planned] = cold.plan_moves(disks=[disk("vda", "/data/x/" + HOSTILE_PATH.rsplit("/", 1)[1])], nvram=None,
                                placement=SHARE, same_host=False)
    assert planned.destination_path == HOSTILE_PATH and planned.write_path == HOSTILE_PATH


def test_plan_moves_never_plans_a_copy_onto_a_disk_already_on_the_share():
    moves = cold.plan_moves(
        disks=[disk("vda", "/mnt/vm/disk.qcow2"), disk("vdb", f"{IMAGES}/disk.qcow2")],
        nvram=None, placement=SHARE, same_host=False,
    )
    destinations = [m.destination_path for m in moves]
    assert len(set(destinations)) == len(destinations), destinations


def test_plan_moves_does_not_copy_a_disk_already_on_a_share_the_source_serves():
    [planned] = cold.plan_moves(disks=[disk("vda", "/srv/vm/web-1.qcow2")], nvram=None,
                                placement=SHARE_SERVED_BY_SOURCE, same_host=False)
    assert planned.route == ROUTE_NONE
    assert planned.destination_path == "/mnt/vm/web-1.qcow2"


@pytest.mark.parametrize(
    "path, directory, inside",
    [
        ("/mnt/vm/a.qcow2", "/mnt/vm", True),
        ("/mnt/vm/a.qcow2", "/mnt/vm/", True),
        ("/mnt/vm/deep/a.qcow2", "/mnt/vm", True),
        ("/mnt/vm", "/mnt/vm", True),
        ("/mnt/vmx/a.qcow2", "/mnt/vm", False),
        ("/mnt/a.qcow2", "/mnt/vm", False),
        ("/a.qcow2", "/", True),
    ],
)
def test_under(path, directory, inside):
    assert cold.under(path, directory) is inside


@pytest.mark.parametrize(
    "planned",
    [
        move("vda", f"{IMAGES}/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/srv/vm/web-1.qcow2", ROUTE_ON_HOST,
             readonly=True),
        move("nvram", NVRAM, NVRAM, NVRAM, ROUTE_RELAY, kind="nvram", fmt="raw"),
    ],
)
def test_file_move_survives_json(planned):
    assert FileMove.from_json(planned.to_json()) == planned


@pytest.mark.parametrize("route, copied", [(ROUTE_ON_HOST, True), (ROUTE_RELAY, True), (ROUTE_NONE, False)])
def test_file_move_copied(route, copied):
    assert move("vda", "/a", "/b", "/b", route).copied is copied


# --------------------------------------------------------------------------- the XML

DOMAIN_XML = f"""<domain type='kvm'>
  <name>web-1</name>
  <uuid>6f2b4c1e-2f6d-4d7e-9a51-0c2b7c9d1e11</uuid>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>{NVRAM}</nvram>
    <kernel>/boot/vmlinuz-web</kernel>
    <initrd>/boot/initrd-web.img</initrd>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{IMAGES}/web-1.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{IMAGES}/web-1-data.raw'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/debian.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb' bus='sata'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg0/web-1-logs'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
    </interface>
  </devices>
</domain>"""


def _sources(xml: str) -> dict[str, str | None]:
    root = ET.fromstring(xml)
    found = {}
    for d in root.findall("devices/disk"):
        source = d.find("source")
        found[d.find("target").get("dev")] = source.get("file") if source is not None else None
    return found


def test_rewrite_sources_changes_only_the_named_disks_and_nvram():
    new = cold.rewrite_sources(DOMAIN_XML, {"vda": "/mnt/vm/web-1.qcow2", "nvram": "/mnt/vm/web-1_VARS.fd"})
    assert _sources(new) == {"vda": "/mnt/vm/web-1.qcow2", "vdb": f"{IMAGES}/web-1-data.raw",
                             "sda": "/isos/debian.iso", "sdb": None, "vdc": None}
    root = ET.fromstring(new)
    assert root.findtext("os/nvram") == "/mnt/vm/web-1_VARS.fd"
    assert root.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS.fd"
    # The same guest, moved: identity and devices untouched.
    assert root.findtext("name") == "web-1" and root.findtext("uuid") == "6f2b4c1e-2f6d-4d7e-9a51-0c2b7c9d1e11"
    assert root.find("devices/interface/mac").get("address") == "52:54:00:12:34:56"
    assert root.find("devices/disk/driver").get("type") == "qcow2"


def test_rewrite_sources_writes_hostile_paths_as_exact_attribute_values():
    new = cold.rewrite_sources(DOMAIN_XML, {"vda": HOSTILE_PATH, "vdb": "/mnt/vm/</source><evil/>.raw"})
    assert _sources(new)["vda"] == HOSTILE_PATH
    assert _sources(new)["vdb"] == "/mnt/vm/</source><evil/>.raw"
    assert ET.fromstring(new).find(".//evil") is None


@pytest.mark.parametrize(
    "new_paths, missing",
    [
        ({"vdz": "/mnt/vm/x.qcow2"}, "vdz"),  # no such disk
        ({"sdb": "/mnt/vm/x.iso"}, "sdb"),  # a cdrom without a file
        ({"vdc": "/mnt/vm/x.raw"}, "vdc"),  # a block disk has no <source file>
    ],
)
def test_rewrite_sources_refuses_disks_it_cannot_rewrite(new_paths, missing):
    with pytest.raises(ValueError, match=missing):
        cold.rewrite_sources(DOMAIN_XML, new_paths)


def test_rewrite_sources_refuses_nvram_for_a_guest_without_one():
    without = DOMAIN_XML.replace(f"<nvram template='/usr/share/OVMF/OVMF_VARS.fd'>{NVRAM}</nvram>", "")
    with pytest.raises(ValueError, match="nvram"):
        cold.rewrite_sources(without, {"nvram": "/mnt/vm/web-1_VARS.fd"})


def test_boot_files_are_emulator_kernel_initrd_loader_and_cdrom_files():
    assert sorted(cold.boot_files(DOMAIN_XML)) == sorted([
        "/usr/bin/qemu-system-x86_64", "/boot/vmlinuz-web", "/boot/initrd-web.img",
        "/usr/share/OVMF/OVMF_CODE.fd", "/isos/debian.iso",
    ])


@pytest.mark.parametrize(
    "xml, expected",
    [
        ("<domain><os><type>hvm</type></os><devices><emulator>/usr/bin/qemu-kvm</emulator></devices></domain>",
         ["/usr/bin/qemu-kvm"]),
        # Not an absolute path (firmware auto-selection, empty loader) is nothing to look for.
        ("<domain><os firmware='efi'><loader/><kernel>vmlinuz</kernel><dtb>/boot/board.dtb</dtb></os></domain>",
         ["/boot/board.dtb"]),
        ("<domain><devices><disk type='file' device='floppy'><source file='/isos/f.img'/></disk>"
         "<disk type='file' device='disk'><source file='/images/d.qcow2'/></disk></devices></domain>",
         ["/isos/f.img"]),
        ("<domain/>", []),
    ],
)
def test_boot_files_table(xml, expected):
    assert cold.boot_files(xml) == expected


@pytest.mark.parametrize(
    "xml, expected",
    [
        (DOMAIN_XML, NVRAM),
        (f"<domain><os><nvram>\n  {NVRAM}\n</nvram></os></domain>", NVRAM),
        ("<domain><os><nvram template='/usr/share/OVMF/OVMF_VARS.fd'/></os></domain>", None),
        ("<domain><os><nvram>   </nvram></os></domain>", None),
        ("<domain><os><type>hvm</type></os></domain>", None),
    ],
)
def test_nvram_path(xml, expected):
    assert cold.nvram_path(xml) == expected


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize(
    "changes, status, reason_has, fix_has",
    [
        ({}, "pass", "shut off and persistent", ""),
        ({"persistent": False}, "fail", "transient", "virsh define"),
        ({"persistent": False, "guest_state": "running"}, "fail", "transient", "virsh define"),  # transient first
        ({"guest_state": "running"}, "fail", "web-1 is running, not shut off", "Shut it down"),
        ({"guest_state": "paused"}, "fail", "is paused", "Shut it down"),
        ({"has_managed_save": True}, "fail", "managedsave", "virsh managedsave-remove"),
        ({"snapshot_count": 2}, "fail", "2 snapshot(s); their metadata stays on kvm-a", "snapshot-delete"),
    ],
)
def test_check_state(changes, status, reason_has, fix_has):
    v = cold.check_state(facts(**changes))
    assert (v.check, v.status) == ("state", status)
    assert reason_has in v.reason and fix_has in v.fix


@pytest.mark.parametrize(
    "changes, status, reason_has",
    [
        ({}, "pass", "No guest of that name or UUID on kvm-b"),
        ({"destination_has_uuid": True}, "fail", "kvm-b already has a guest with this UUID"),
        ({"destination_has_uuid": True, "destination_has_name": True}, "fail", "UUID"),
        ({"destination_has_name": True}, "fail", "kvm-b already has a guest named web-1"),
        # On its own host the guest's own definition is no conflict.
        ({"same_host": True, "destination_has_uuid": True, "destination_has_name": True}, "pass", "stays on kvm-a"),
    ],
)
def test_check_identity(changes, status, reason_has):
    v = cold.check_identity(facts(**changes))
    assert (v.check, v.status) == ("identity", status)
    assert reason_has in v.reason


ROOT = f"{IMAGES}/web-1.qcow2"
DATA = f"{IMAGES}/web-1-data.raw"


@pytest.mark.parametrize(
    "changes, status, reason_has",
    [
        ({}, "pass", "1 file(s) to copy, 1024.0 MiB"),
        ({"disks": [disk("vda", ROOT), disk("vdb", DATA, fmt="raw")],
          "moves": [move("vda", ROOT, ROOT, ROOT, ROUTE_RELAY), move("vdb", DATA, DATA, DATA, ROUTE_RELAY, fmt="raw")],
          "images": {ROOT: ("qcow2", None), DATA: ("raw", None)}, "sizes": {ROOT: GIB, DATA: 512 * MIB}},
         "pass", "2 file(s) to copy, 1536.0 MiB"),
        ({"disks": [disk("vda", ROOT), disk("vdb", "pool/web-1-data", source_type="network")]},
         "fail", "vdb (network) cannot"),
        ({"disks": [disk("vdc", "/dev/vg0/web-1", source_type="block"), disk("vdd", "data/vol", source_type="volume")]},
         "fail", "vdc (block), vdd (volume) cannot"),
        ({"images": {ROOT: None}}, "fail", f"Could not read {ROOT} on kvm-a"),
        ({"images": {}}, "fail", f"Could not read {ROOT}"),
        ({"images": {ROOT: ("qcow2", f"{IMAGES}/base.qcow2")}}, "fail", f"overlay on {IMAGES}/base.qcow2"),
        ({"disks": [], "moves": [], "images": {}}, "pass", "no file disks to move"),
        ({"moves": [move("vda", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", "/mnt/vm/web-1.qcow2", ROUTE_NONE)],
          "images": {}}, "pass", "already on the chosen storage"),
        # A cdrom without a network source is not a disk to refuse.
        ({"disks": [disk("vda", ROOT), disk("hda", "", device="cdrom", source_type="network")]}, "pass", "1 file(s)"),
    ],
)
def test_check_disks(changes, status, reason_has):
    v = cold.check_disks(facts(**changes))
    assert (v.check, v.status) == ("disks", status)
    assert reason_has in v.reason


def test_check_disks_says_how_to_flatten_an_overlay():
    v = cold.check_disks(facts(images={ROOT: ("qcow2", "/base.qcow2")}))
    assert f"qemu-img convert -O qcow2 {ROOT} NEW.qcow2" in v.fix


def test_check_disks_passes_a_uefi_guest_whose_nvram_moves_too():
    # As cold_runner.check fills the facts: qemu-img for disks, stat sizes for every copied file.
    v = cold.check_disks(facts(
        moves=[move("vda", ROOT, ROOT, ROOT, ROUTE_RELAY), move("nvram", NVRAM, NVRAM, NVRAM, ROUTE_RELAY,
                                                               kind="nvram", fmt="raw")],
        images={ROOT: ("qcow2", None)}, sizes={ROOT: GIB, NVRAM: 128 * 1024},
    ))
    assert v.status == "pass", v.reason


@pytest.mark.parametrize(
    "moves, sizes, needed",
    [
        ([move("vda", ROOT, ROOT, ROOT, ROUTE_RELAY)], {ROOT: GIB}, int(GIB * 1.05) + 64 * MIB),
        ([move("vda", ROOT, ROOT, ROOT, ROUTE_RELAY), move("vdb", DATA, DATA, DATA, ROUTE_ON_HOST)],
         {ROOT: GIB, DATA: GIB}, int(2 * GIB * 1.05) + 64 * MIB),
        # Disks already in place and NVRAM do not count; a size not read counts as nothing.
        ([move("vda", ROOT, ROOT, ROOT, ROUTE_NONE), move("nvram", NVRAM, NVRAM, NVRAM, ROUTE_RELAY, kind="nvram")],
         {ROOT: GIB, NVRAM: MIB}, 64 * MIB),
        ([move("vda", ROOT, ROOT, ROOT, ROUTE_RELAY)], {}, 64 * MIB),
    ],
)
def test_space_needed(moves, sizes, needed):
    assert cold.space_needed(facts(moves=moves, sizes=sizes)) == needed


NEED_1GIB = int(GIB * 1.05) + 64 * MIB


@pytest.mark.parametrize(
    "changes, status, reason_has",
    [
        ({}, "pass", "kvm-b's local storage has room (100.0 GiB free)"),
        ({"free_bytes": NEED_1GIB}, "pass", "has room"),  # exactly enough is enough
        ({"free_bytes": NEED_1GIB - 1}, "fail", "the copy needs 1139 MiB"),
        ({"free_bytes": 0}, "fail", "has 0 MiB free"),
        ({"free_bytes": None}, "warn", "Could not tell the free space on kvm-b's local storage"),
        ({"placement_ok": False, "placement_problem": "/mnt/vm does not exist on kvm-a."}, "fail",
         "/mnt/vm does not exist on kvm-a."),
        ({"placement_ok": False}, "fail", "kvm-b's local storage cannot be written"),
        ({"existing_destinations": [ROOT, DATA]}, "fail", f"{ROOT}, {DATA} already exist(s)"),
        # Nothing copied: no space needed, even with none free.
        ({"moves": [move("vda", ROOT, ROOT, ROOT, ROUTE_NONE)], "free_bytes": 0}, "pass", "Nothing to copy"),
        ({"moves": [], "free_bytes": None}, "pass", "Nothing to copy"),
    ],
)
def test_check_storage(changes, status, reason_has):
    v = cold.check_storage(facts(**changes))
    assert (v.check, v.status) == ("storage", status)
    assert reason_has in v.reason


def test_check_storage_tells_how_much_to_free_when_it_cannot_tell():
    v = cold.check_storage(facts(free_bytes=None))
    assert "at least 1139 MiB free" in v.fix


@pytest.mark.parametrize(
    "changes, status, reason_has",
    [
        ({}, "pass", "kvm-b has the emulator"),
        ({"missing_boot_files": ["/isos/debian.iso", "/boot/vmlinuz-web"]}, "fail",
         "missing on kvm-b: /isos/debian.iso, /boot/vmlinuz-web"),
        ({"missing_networks": ["default", "br0"]}, "fail", "no network/bridge default, br0 on kvm-b"),
        ({"missing_boot_files": ["/x"], "missing_networks": ["br0"]}, "fail", "missing on kvm-b: /x; no network"),
    ],
)
def test_check_destination_files(changes, status, reason_has):
    v = cold.check_destination_files(facts(**changes))
    assert (v.check, v.status) == ("destination", status)
    assert reason_has in v.reason


def test_verdicts_run_every_check_in_order_and_blocking_keeps_only_failures():
    found = cold.verdicts(facts(guest_state="running", free_bytes=None, missing_networks=["br0"]))
    assert [v.check for v in found] == ["state", "identity", "disks", "storage", "destination"]
    assert [v.status for v in found] == ["fail", "pass", "pass", "warn", "fail"]
    assert [v.check for v in cold.blocking(found)] == ["state", "destination"]


def test_a_healthy_guest_has_nothing_blocking():
    found = cold.verdicts(facts())
    assert {v.status for v in found} == {"pass"} and cold.blocking(found) == []


# --------------------------------------------------------------------------- after an interruption


@pytest.mark.parametrize(
    "where, expected",
    [
        # Another host.
        (Where(True, True, False, False), SETTLE_ROLL_BACK),  # still only at the source
        (Where(True, True, True, False), SETTLE_ROLL_BACK),  # defined at both, not started: the source is intact
        (Where(False, None, True, False), SETTLE_MOVED),  # defined at the destination only
        (Where(False, None, True, True), SETTLE_MOVED),
        (Where(True, True, True, True), SETTLE_MOVED),  # running at the destination: it moved
        (Where(False, None, False, False), SETTLE_RESTORE),  # defined nowhere
        (Where(None, None, True, True), SETTLE_UNKNOWN),  # the source did not answer
        (Where(True, True, None, None), SETTLE_UNKNOWN),  # the destination did not answer
        (Where(False, None, None, None), SETTLE_UNKNOWN),
    ],
)
def test_settle_other_host(where, expected):
    assert cold.settle(where, same_host=False) == expected


@pytest.mark.parametrize(
    "where, expected",
    [
        (Where(True, True, True, False), SETTLE_ROLL_BACK),  # still names the original disks
        (Where(True, False, True, False), SETTLE_MOVED),  # redefined with the copies' paths
        (Where(True, False, True, True), SETTLE_MOVED),
        (Where(False, False, False, False), SETTLE_RESTORE),
        (Where(None, True, None, None), SETTLE_UNKNOWN),
        (Where(True, None, True, False), SETTLE_UNKNOWN),  # could not read its XML
    ],
)
def test_settle_same_host(where, expected):
    assert cold.settle(where, same_host=True) == expected
