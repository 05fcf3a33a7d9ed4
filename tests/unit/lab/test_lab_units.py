"""Lab logic that needs no root: heartbeat analysis, prerequisites, guest XML."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from lab import config, guests, heartbeat, system
from lab.heartbeat import analyse


def beats(*pairs):
    return list(pairs)


def test_heartbeat_continuous_and_largest_gap():
    rep = analyse("g", beats((0.0, 5), (0.1, 6), (0.2, 7), (0.55, 8), (0.65, 9)), now=0.7)
    assert rep.continuous and rep.beats == 5
    assert rep.max_gap_s == pytest.approx(0.35)
    assert rep.max_gap_at == pytest.approx(0.2)
    assert rep.last_beat_age_s == pytest.approx(0.05)


@pytest.mark.parametrize("seq", [[(0, 1), (0.1, 3)], [(0, 7), (0.1, 0)], [(0, 4), (0.1, 4)]])
def test_heartbeat_skip_restart_or_repeat_is_not_continuous(seq):
    assert not analyse("g", seq).continuous


def test_heartbeat_no_beats():
    rep = analyse("g", [])
    assert rep.beats == 0 and not rep.continuous and rep.last_beat is None


def test_heartbeat_log_parsing_respects_since(tmp_path, monkeypatch):
    monkeypatch.setenv("VMPORTAL_LAB_DIR", str(tmp_path))
    (tmp_path / "hb").mkdir()
    (tmp_path / "hb" / "g.log").write_text("10.0 HB 1\n10.1 HB 2\ngarbage\n10.2 SeaBIOS\n10.3 HB 3\n")
    assert heartbeat.read_beats("g", since=10.05) == [(10.1, 2), (10.3, 3)]
    assert heartbeat.report("g").continuous


def test_prerequisites_name_the_missing_package(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(system.shutil, "which", lambda tool, path=None: None if tool == "bindfs" else real_which(tool) or "/x")
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    with pytest.raises(system.LabError, match=r"apt-get install -y bindfs"):
        system.check_prerequisites()


def test_up_without_root_fails_clearly_and_creates_nothing(tmp_path, monkeypatch):
    from lab import hosts

    monkeypatch.setenv("VMPORTAL_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(system.LabError, match="the lab needs root"):
        hosts.up(3, log=lambda *_: None)
    assert not (tmp_path / "lab").exists()


def test_cli_reports_lab_errors_without_traceback(tmp_path):
    env = {**os.environ, "VMPORTAL_LAB_DIR": str(tmp_path / "lab"), "PYTHONPATH": str(config.PROJECT_DIR)}
    proc = subprocess.run([sys.executable, "-m", "lab", "knob", "throttle", "labh9"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("lab: the lab is not up") and "Traceback" not in proc.stderr


def test_guest_xml_is_escaped_and_readonly_by_default(tmp_path):
    spec = guests.GuestSpec(name="hb-<x>&'y'").with_uuid()
    xml = guests.domain_xml(spec, tmp_path / "d'isk.img")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "hb-<x>&'y'"
    assert root.find("devices/disk/readonly") is not None
    assert root.find("devices/disk/source").get("file") == str(tmp_path / "d'isk.img")
    assert root.get("type") == "qemu"
    assert root.find("devices/serial/source").get("mode") == "connect"


def test_host_specs_are_distinct():
    specs = config.host_specs(3)
    assert len({s.host_uuid for s in specs}) == 3
    assert [s.address for s in specs] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert config.host_specs(3)[0].host_uuid == specs[0].host_uuid  # stable across runs


def test_guests_assemble_to_boot_sectors(tmp_path, monkeypatch):
    if not shutil.which("as"):
        pytest.skip("binutils missing")
    monkeypatch.setenv("VMPORTAL_LAB_DIR", str(tmp_path))
    built = guests.build_guests()
    for kind, path in built.items():
        data = open(path, "rb").read()
        assert len(data) == guests.IMAGE_SIZE and data[510:512] == b"\x55\xaa", kind


def test_heartbeat_probe_for_the_portal(tmp_path, monkeypatch):
    monkeypatch.setenv("VMPORTAL_LAB_DIR", str(tmp_path))
    (tmp_path / "hb").mkdir()
    (tmp_path / "hb" / "g.log").write_text("1.0 HB 1\n1.1 HB 2\n1.5 HB 3\n")
    assert heartbeat.probe("g", since=0) == {"max_gap_s": 0.4, "continuous": True, "beats": 3}
    assert heartbeat.probe("not-a-lab-guest", since=0) is None


def test_recorder_keeps_a_line_the_switch_over_cut_between_the_two_qemus():
    """Seen in an evacuation: "HB " came from the source QEMU, "726" from the destination."""
    from lab.recorder import GuestStream

    stream = GuestStream()
    assert stream.feed(b"HB 724\r\nHB 725\r\nHB ") == ["HB 724", "HB 725"]  # the source's last bytes
    assert stream.feed(b"726\r\nHB 7") == ["HB 726"]  # the destination goes on mid-line
    assert stream.feed(b"27\r\n\r\n") == ["HB 727"]
