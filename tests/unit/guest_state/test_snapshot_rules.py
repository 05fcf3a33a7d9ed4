"""Snapshot decisions, pure: which guests libvirt can snapshot internally (and with memory), what
it can revert, names and notes, and what libvirt's list says of the portal's records."""

from __future__ import annotations

import pytest

from guest_state.snapshot_rules import (
    DiskFact,
    NameProblem,
    RevertFacts,
    SnapshotFacts,
    reconcile,
    revert_verdict,
    snapshot_verdict,
    validate_name,
    validate_note,
)
from hosts.adapters import libvirt as lv

QCOW = DiskFact(target="vda", source="/shared/web.qcow2", format="qcow2")
RAW = DiskFact(target="vdb", source="/var/lib/libvirt/images/data.img", format="raw")
RO_RAW = DiskFact(target="vdc", source="/srv/boot.img", format="raw", readonly=True)
CDROM = DiskFact(target="sda", source="/srv/debian.iso", format="raw", device="cdrom")


def facts(**changes) -> SnapshotFacts:
    fields = dict(name="web-1", state="running", libvirt_version="9.0.0", disks=(QCOW,))
    fields.update(changes)
    return SnapshotFacts(**fields)


@pytest.mark.parametrize("changes, ok, memory, words", [
    ({}, True, True, None),
    ({"state": "paused"}, True, True, None),
    ({"state": "shutoff"}, True, False, None),
    ({"disks": (QCOW, RO_RAW, CDROM)}, True, True, None),  # read-only raw and CD-ROM are left out
    ({"disks": (QCOW, RAW)}, False, True, "Disk vdb (/var/lib/libvirt/images/data.img) is raw"),
    ({"disks": (QCOW, RAW)}, False, True, "qemu-img convert -O qcow2"),
    ({"disks": (DiskFact(target="vda", source="/x", format=""),)}, False, True, "of an unknown format"),
    ({"disks": (RO_RAW,)}, False, True, "has no writable disk"),
    ({"disks": ()}, False, True, "has no writable disk"),
    ({"state": "crashed"}, False, False, "web-1 is crashed"),
    ({"state": "pmsuspended"}, False, False, "Start it or shut it down"),
    ({"persistent": False}, False, True, "transient"),
    ({"managed_save": True, "state": "shutoff"}, False, False, "has a managed save"),
    ({"host_devices": 1}, False, True, "host device"),
    ({"host_devices": 1, "state": "shutoff"}, True, False, None),  # disks only: no device state to keep
    ({"pflash": True}, True, True, None),  # libvirt 9.0 still takes them
    ({"pflash": True, "libvirt_version": "9.2.0"}, False, True, "pflash"),
    ({"disks": (DiskFact(target="vda", source="pool/vol", format="qcow2", source_type="volume"),)}, False, True,
     "storage pool volume"),
    ({"disks": (DiskFact(target="vda", source="ceph/img", format="qcow2", source_type="network"),)}, True, True, None),
    ({"disks": (DiskFact(target="vda", source="ceph/img", format="qcow2", source_type="network"),), "state": "shutoff"},
     False, False, "network disk"),
])
def test_snapshot_verdict(changes, ok, memory, words):
    verdict = snapshot_verdict(facts(**changes))
    assert (verdict.ok, verdict.with_memory) == (ok, memory), verdict.problems
    if words:
        assert any(words in p for p in verdict.problems), verdict.problems
    else:
        assert verdict.problems == ()


def test_every_raw_disk_is_named():
    other = DiskFact(target="vdd", source="/srv/other.img", format="raw")
    problems = snapshot_verdict(facts(disks=(QCOW, RAW, other))).problems
    assert [p.split(" (")[0] for p in problems] == ["Disk vdb", "Disk vdd"]


@pytest.mark.parametrize("changes, ok, words", [
    ({}, True, None),
    ({"in_libvirt": False}, False, "no longer has the snapshot"),
    ({"managed_save": True}, False, "managed save"),
    ({"kind": "external"}, False, "cannot revert to one (9.7 and later can)"),
    ({"kind": "external", "libvirt_version": "9.7.0"}, True, None),
    ({"kind": "mixed", "libvirt_version": ""}, False, "mixed snapshot"),
])
def test_revert_verdict(changes, ok, words):
    fields = dict(name="web-1", snapshot="clean", in_libvirt=True, libvirt_version="9.0.0")
    fields.update(changes)
    verdict = revert_verdict(RevertFacts(**fields))
    assert verdict.ok == ok, verdict.problems
    if words:
        assert any(words in p for p in verdict.problems), verdict.problems


@pytest.mark.parametrize("text, expected", [
    ("clean-install", "clean-install"), ("  v1.2_b  ", "v1.2_b"), ("x" * 64, "x" * 64), ("9", "9"),
])
def test_good_names(text, expected):
    assert validate_name(text) == expected


@pytest.mark.parametrize("text, words", [
    ("", "Give the snapshot a name"), ("x" * 65, "at most 64"), ("-lead", "letters, digits"),
    ("<script>", "letters, digits"), ("a b", "letters, digits"), ("a/b", "letters, digits"),
    ("snap\u00e9", "letters, digits"), ("a\nb", "letters, digits"), ("..", "letters, digits"),
])
def test_bad_names(text, words):
    with pytest.raises(NameProblem, match=words):
        validate_name(text)


@pytest.mark.parametrize("text, words", [("n" * 501, "longer than 500"), ("a\x00b", "control characters"),
                                         ("bell\x07", "control characters")])
def test_bad_notes(text, words):
    with pytest.raises(NameProblem, match=words):
        validate_note(text)


def test_a_note_may_hold_markup_and_lines():
    assert validate_note(" before <b>&</b> the next user\nsecond line ") == "before <b>&</b> the next user\nsecond line"


@pytest.mark.parametrize("recorded, in_libvirt, gone, back, unrecorded", [
    ({}, set(), (), (), ()),
    ({"a": "present"}, {"a"}, (), (), ()),
    ({"a": "present", "b": "present"}, {"a"}, ("b",), (), ()),  # deleted with virsh behind our back
    ({"a": "missing"}, {"a"}, (), ("a",), ()),
    ({"a": "missing"}, set(), (), (), ()),
    ({}, {"by-virsh"}, (), (), ("by-virsh",)),
    ({"a": "present"}, {"z", "b"}, ("a",), (), ("b", "z")),
])
def test_reconcile(recorded, in_libvirt, gone, back, unrecorded):
    result = reconcile(recorded=recorded, in_libvirt=in_libvirt)
    assert (result.gone, result.back, result.unrecorded) == (gone, back, unrecorded)


def test_snapshot_xml_leaves_read_only_disks_out_and_escapes():
    disks = [lv.DiskInfo(target="vda", device="disk", source_type="file", source="/a.qcow2", protocol="",
                         format="qcow2", readonly=False, shareable=False),
             lv.DiskInfo(target="vdb", device="disk", source_type="file", source="/b.img", protocol="",
                         format="raw", readonly=True, shareable=False)]
    xml = lv.snapshot_xml(name="clean", description="a <b> & c", memory=True, disks=disks)
    assert '<memory snapshot="internal" />' in xml
    assert '<disk name="vda" snapshot="internal" />' in xml and '<disk name="vdb" snapshot="no" />' in xml
    assert "a &lt;b&gt; &amp; c" in xml
    info = lv.parse_snapshot_xml(
        "<domainsnapshot><name>clean</name><description>x</description><state>running</state>"
        "<creationTime>1700000100</creationTime><memory snapshot='internal'/>"
        "<disks><disk name='vda' snapshot='internal'/><disk name='vdb' snapshot='no'/></disks>"
        "<parent><name>base</name></parent></domainsnapshot>", current=True)
    assert (info.name, info.with_memory, info.kind, info.created, info.parent, info.current) == (
        "clean", True, "internal", 1700000100, "base", True)
    external = lv.parse_snapshot_xml("<domainsnapshot><name>e</name><memory snapshot='no'/>"
                                     "<disks><disk name='vda' snapshot='external'/></disks></domainsnapshot>")
    assert (external.with_memory, external.kind) == (False, "external")
