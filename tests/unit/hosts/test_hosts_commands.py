"""The hosts app's management commands: host_add, inventory_refresh, vm_list, lab_onboard."""

import json

import pytest
from django.core.management import CommandError, call_command

from hosts.choices import HostStatusChoices
from hosts.models import Host
from tests.fakes.fleet import make_domain

pytestmark = pytest.mark.django_db


@pytest.fixture
def key_file(tmp_path, private_key_pem):
    path = tmp_path / "id_ed25519"
    path.write_text(private_key_pem)
    return path


def test_host_add_without_trust_prints_fingerprint_and_fails(fleet, key_file, capsys):
    hv = fleet.add("host-192.0.2.40", address="192.0.2.40")
    with pytest.raises(CommandError, match="--trust-host-key"):
        call_command("host_add", "kvm-c", "--address", hv.address, "--ssh-key", str(key_file))
    assert hv.host_key.fingerprint in capsys.readouterr().out
    assert not Host.objects.exists()


def test_host_add_with_trust_pins_and_refreshes(fleet, key_file, capsys, django_capture_on_commit_callbacks):
    hv = fleet.add("host-192.0.2.40", address="192.0.2.40", domains=[make_domain("web")])
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "host_add", "kvm-c", "--address", hv.address, "--ssh-key", str(key_file), "--ssh-user", "root",
            "--libvirt-uri", "qemu+tcp://192.0.2.40/system", "--trust-host-key",
        )
    out = capsys.readouterr().out
    assert f"trusting host key {hv.host_key.fingerprint}" in out
    host = Host.objects.get(name="kvm-c")
    assert host.host_key == hv.host_key.openssh and host.libvirt_uri == "qemu+tcp://192.0.2.40/system"
    assert host.status == HostStatusChoices.REACHABLE and host.vms.count() == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["bad name", "--address", "192.0.2.1"], "letters"),
        (["ok", "--address", "300.1.1.1"], "IPv4"),
        (["ok", "--address", "192.0.2.1", "--libvirt-uri", "qemu+ssh://h/system?command=sh"], "query"),
        (["ok", "--address", "192.0.2.1", "--ssh-key", "/nonexistent/key"], "Cannot read"),
    ],
)
def test_host_add_rejects_bad_input(fleet, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("host_add", *args)


def test_host_add_refuses_a_key_file_larger_than_the_forms_cap(fleet, tmp_path):
    big = tmp_path / "big.pem"
    big.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * (16 * 1024) + "\n")
    with pytest.raises(CommandError, match="larger than 16 KiB"):
        call_command("host_add", "ok", "--address", "192.0.2.1", "--ssh-key", str(big))


def test_host_add_stops_reading_an_endless_key_file_at_the_cap(fleet):
    # /dev/zero never ends: the command reads at most the cap and says why it refuses.
    with pytest.raises(CommandError, match="larger than 16 KiB"):
        call_command("host_add", "ok", "--address", "192.0.2.1", "--ssh-key", "/dev/zero")


def test_host_add_reports_unreachable_host(fleet):
    with pytest.raises(CommandError, match="refused"):
        call_command("host_add", "kvm-z", "--address", "192.0.2.99", "--trust-host-key")


def test_inventory_refresh_wait_prints_summary(trusted_host, fleet, capsys):
    call_command("inventory_refresh", "--wait")
    assert "kvm-a: ok, 2 guest(s)" in capsys.readouterr().out
    fleet[trusted_host.address].reachable = False
    with pytest.raises(CommandError, match="1 of 1"):
        call_command("inventory_refresh", "--wait")
    out = capsys.readouterr().out
    assert "kvm-a: failed" in out and "what to do:" in out


def test_vm_list_json_and_table(trusted_host, capsys):
    call_command("vm_list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {(r["host"], r["name"], r["state"]) for r in rows} == {("kvm-a", "web-1", "running"), ("kvm-a", "db-1", "shutoff")}
    call_command("vm_list")
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["HOST", "NAME", "STATE", "VCPUS", "MEMORY", "UUID"] and len(table) == 3


def test_vm_list_table_escapes_control_characters(trusted_host, fleet, capsys):
    from core.actors import Actor
    from hosts.services import host_inventory_save

    hv = fleet[trusted_host.address]
    host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None,
                        domains=[make_domain("evil\x1b[2Jname\n")], storage={}, actor=Actor.system())
    call_command("vm_list")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2Jname\\n" in out


def test_lab_onboard_adds_then_updates(fleet, key_file, tmp_path, capsys, django_capture_on_commit_callbacks):
    a = fleet.add("host-10.77.0.11", address="10.77.0.11", hostname="labh1", domains=[make_domain("hb-labh1-1")])
    b = fleet.add("host-10.77.0.12", address="10.77.0.12", hostname="labh2")
    status = {"hosts": [
        {"name": "labh1", "address": a.address, "libvirt_uri": "qemu+tcp://10.77.0.11/system", "ssh_user": "root", "ssh_port": 22, "ssh_key": str(key_file)},
        {"name": "labh2", "address": b.address, "libvirt_uri": "qemu+tcp://10.77.0.12/system", "ssh_user": "root", "ssh_port": 22, "ssh_key": str(key_file)},
    ]}
    status_file = tmp_path / "lab.json"
    status_file.write_text(json.dumps(status))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("lab_onboard", "--status-file", str(status_file))
    assert Host.objects.filter(status=HostStatusChoices.REACHABLE).count() == 2
    assert Host.objects.get(name="labh1").vms.get().name == "hb-labh1-1"

    from tests.fakes.fleet import make_host_key

    a.host_key = make_host_key()  # lab rebuilt: new host key, re-pinned on onboarding
    with django_capture_on_commit_callbacks(execute=True):
        call_command("lab_onboard", "--status-file", str(status_file))
    assert Host.objects.get(name="labh1").host_key == a.host_key.openssh
    assert "labh1: updated" in capsys.readouterr().out


def test_vm_list_json_streams_valid_json_in_chunks(trusted_host, capsys, monkeypatch):
    import uuid as uuid_mod

    from hosts.management.commands import vm_list
    from hosts.models import VirtualMachine

    call_command("vm_list", "--json")
    assert len(json.loads(capsys.readouterr().out)) == 2
    monkeypatch.setattr(vm_list, "CHUNK", 3)  # several chunks for a few rows
    VirtualMachine.objects.bulk_create(VirtualMachine(host=trusted_host, uuid=uuid_mod.uuid4(), name=f"g{i}",
                                                      state="running") for i in range(7))
    call_command("vm_list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and rows[0]["host"] == "kvm-a" and isinstance(rows[0]["uuid"], str)
    VirtualMachine.objects.all().delete()
    call_command("vm_list", "--json")
    assert json.loads(capsys.readouterr().out) == []


def test_vm_list_json_gives_each_guests_disks_and_sizes(trusted_host, capsys):
    from hosts.models import VirtualDisk

    web = trusted_host.vms.get(name="web-1")
    VirtualDisk.objects.filter(vm=web).update(capacity_bytes=20 * 2**30, allocation_bytes=3 * 2**30)
    VirtualDisk.objects.create(vm=web, target="vdb", device="disk", source_type="file", source="/data/web-1-b.qcow2",
                               capacity_bytes=2**30, allocation_bytes=2**20)
    VirtualDisk.objects.create(vm=web, target="sda", device="cdrom", source_type="file", source="/iso/d.iso",
                               capacity_bytes=2**29, allocation_bytes=2**29)
    call_command("vm_list", "--json")
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    web_row, db_row = rows["web-1"], rows["db-1"]
    assert [d["target"] for d in web_row["disks"]] == ["sda", "vda", "vdb"]
    assert web_row["disk_capacity_bytes"] == 21 * 2**30  # the cdrom is not a data disk
    assert web_row["disk_allocation_bytes"] == 3 * 2**30 + 2**20
    assert web_row["disks"][1] == {"target": "vda", "device": "disk", "source": "/var/lib/libvirt/images/web-1.img",
                                   "storage": "local", "capacity_bytes": 20 * 2**30, "allocation_bytes": 3 * 2**30}
    # never sized: said as unknown, not as zero
    assert db_row["disks"][0]["capacity_bytes"] is None and db_row["disk_capacity_bytes"] is None
