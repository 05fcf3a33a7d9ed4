"""migrations_app.gather: assembling PairFacts/GuestSide from what the hosts answer.

The hosts are the fake fleet (tests/fakes/fleet.py), reached through sessions as in the
portal: its shell answers the probes' commands from a model of each host's files (a
``/shared`` directory mounted from "nas" on both hosts), and its libvirt connection answers
the real libvirt and migration adapters. The probes' snippets themselves run for real in
tests/unit/adapters/test_probes_adapter.py, so the fleet only models their output.
"""

from __future__ import annotations

import contextlib
import shlex

import libvirt
import pytest

from hosts.adapters import probes as P
from hosts.adapters.batch import BATCH_SH
from hosts.adapters.errors import CommandTimeout, DomainNotFound, HostAuthError, HostUnreachable
from hosts.adapters.libvirt import DiskInfo
from migrations_app import gather as G
from migrations_app.options import MigrationOptions
from migrations_app.preflight import overall, run_preflight
from tests.fakes import virt
from tests.fakes.fleet import make_domain

GUEST_UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LIVE = MigrationOptions()
COPY = MigrationOptions(copy_storage=True)
KNOWN_SCRIPTS = {P.LISTENER_PY, P.LISTENER_SOCAT_SH, P.CONNECT_SH, P.CONNECTS_SH, P.MARKER_SH, P.DISK_PROBE_SH,
                 P.DISK_PROBES_BASH, P.DIGEST_SH, P.DIGESTS_SH, P.QEMU_IDENTITY_SH, P.MARKERS_SH, BATCH_SH}
QEMU_CONF = "/etc/libvirt/qemu.conf"
# What a probe's command line starts with, to make it fail.
PROBE_PREFIX = {
    "disk-probe": shlex.join(["bash", "-c", P.DISK_PROBES_BASH]),
    "marker": shlex.join(["sh", "-c", P.MARKER_SH]),
    "getent": "getent ahosts",
}


def disk(source: str, *, target="vda", readonly=False, shareable=False, source_type="file", protocol=""):
    return DiskInfo(target=target, device="disk", source_type=source_type, source=source, protocol=protocol,
                    format="qcow2", readonly=readonly, shareable=shareable)


class Pair:
    """Two fleet hosts, kvm-a (source, running the guest) and kvm-b, both mounting /shared from nas."""

    def __init__(self, fleet, disks=None):
        self.fleet = fleet
        fleet.add("nas", address="10.0.0.10")
        common = dict(
            files={QEMU_CONF: '#user = "libvirt-qemu"\nuser = "root"\ngroup = "root"\n'},
            mounts={"/shared": ("nfs4", "nas:/shared")}, cpu_compare="superset",
        )
        self.src = fleet.add("kvm-a", address="10.0.0.11", resolves={"kvm-b": ["10.0.0.12"]}, **common)
        self.dst = fleet.add("kvm-b", address="10.0.0.12", resolves={"kvm-a": ["10.0.0.11"]}, **dict(common, files=dict(common["files"])))
        for host in (self.src, self.dst):
            host.add_pool("default", "/var/lib/libvirt/images")
        disks = disks if disks is not None else [disk("/shared/web.qcow2")]
        self.guest = make_domain("web", uuid=GUEST_UUID, disks=disks, cpu_mode="custom", cpu_model="qemu64",
                                 machine="pc-i440fx-7.2")
        self.src.domains = {GUEST_UUID: self.guest}
        for d in disks:
            if d.source.startswith("/"):
                self.src.put(d.source, f"image of {d.target}")

    def fail(self, host, probe: str, error: Exception) -> None:
        host.script(PROBE_PREFIX[probe], error)

    def gather(self, options=LIVE, **dst_kw):
        with contextlib.ExitStack() as stack:
            src, dst = (stack.enter_context(self.fleet.session_for(self.fleet.host_row(h.name, save=False)))
                        for h in (self.src, self.dst))
            result = G.gather(source=G.Endpoint(name="kvm-a", session=src),
                              destination=G.Endpoint(name="kvm-b", session=dst, **dst_kw),
                              guest_uuid=GUEST_UUID, options=options)
        assert self.fleet.open_connections == 0  # the sessions closed all they opened
        return result

    def leftover_markers(self) -> list[str]:
        return [p for h in self.fleet.hosts.values() for p in h.files if P.MARKER_PREFIX in p]


def verdicts(pair, guest, options=LIVE) -> dict[str, object]:
    return {v.check: v for v in run_preflight(pair, guest, options)}


# --- the whole assembly ---------------------------------------------------------


def test_healthy_pair_fills_every_fact_and_passes(fleet):
    p = Pair(fleet)
    pair, guest = p.gather()
    assert pair.source.reachable and pair.destination.reachable
    assert (pair.source.hostname, pair.destination.hostname) == ("kvm-a", "kvm-b")
    assert pair.destination.hypervisor_version == (7, 2, 0) and pair.destination.libvirt_version == (9, 0, 0)
    assert pair.source.running_vcpus == 1 and pair.destination.running_vcpus == 0
    assert pair.source_resolves_destination == ["10.0.0.12"]
    assert pair.destination_resolves_source == ["10.0.0.11"]
    assert pair.migration_address_reachable is True and pair.ports_reachable is True
    assert pair.cpu_compare == "superset"
    assert not pair.destination_has_domain_name and not pair.destination_has_domain_uuid
    assert pair.destination_pool_room_kib is None  # not copying
    assert (guest.name, guest.uuid, guest.state, guest.cpu_model) == ("web", GUEST_UUID, "running", "qemu64")
    (vda,) = guest.disks
    assert vda.same_file_on_destination is True and vda.destination_can_open is True
    assert vda.perm_detail == "root:root 644"
    assert overall(run_preflight(pair, guest, LIVE)) == "pass"
    assert p.leftover_markers() == []


def test_every_remote_command_is_an_argv_with_data_outside_the_scripts(fleet):
    p = Pair(fleet, disks=[disk("/shared/it's $(rm -rf ~) `x`.qcow2")])
    p.gather()
    commands = p.src.commands + p.dst.commands
    assert commands
    for argv in commands:
        for i, arg in enumerate(argv):
            if i > 0 and argv[i - 1] == "-c":
                assert arg in KNOWN_SCRIPTS, arg  # fixed text; values come after it as "$1"…
    assert any("/shared/it's $(rm -rf ~) `x`.qcow2" in argv for argv in p.dst.commands)


def test_marker_not_seen_on_the_destination_means_not_the_same_file(fleet):
    p = Pair(fleet, disks=[disk("/var/lib/libvirt/images/web.qcow2")])
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is False
    assert vda.destination_can_open is False and vda.perm_detail == "does not exist"
    assert verdicts(pair, guest)["storage"].status == "fail"
    assert p.leftover_markers() == []  # removed on the source


def test_a_different_file_at_the_marker_path_is_not_the_same_file(fleet):
    p = Pair(fleet, disks=[disk("/var/lib/libvirt/images/web.qcow2")])
    p.dst.put("/var/lib/libvirt/images/web.qcow2", "someone else's image")
    p.dst.put(f"/var/lib/libvirt/images/{P.MARKER_PREFIX}F000000001", "stale token from another run")
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is False
    assert vda.destination_can_open is True  # there is *a* file, just not ours
    assert verdicts(pair, guest)["storage"].status == "fail"


def test_failed_probes_become_none_and_the_rest_still_answers(fleet):
    p = Pair(fleet)
    p.fail(p.dst, "disk-probe", CommandTimeout(["sh"], 10))
    p.fail(p.dst, "getent", HostUnreachable("Lost the SSH connection"))
    p.fail(p.src, "marker", RuntimeError("a bug in a probe"))
    p.dst.cpu_compare = virt.connection_lost("kvm-b")
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is None and vda.destination_can_open is None
    assert pair.destination_resolves_source is None
    assert pair.cpu_compare == "unknown"
    assert pair.source_resolves_destination == ["10.0.0.12"] and pair.ports_reachable is True
    v = verdicts(pair, guest)
    assert v["storage"].status == "warn" and "Could not verify" in v["storage"].reason
    assert v["cpu"].status == "warn"


def test_no_listener_program_leaves_ports_unverified(fleet):
    p = Pair(fleet)
    p.dst.python3 = False
    pair, _ = p.gather()
    assert pair.ports_reachable is None
    assert pair.migration_address_reachable is True  # the SSH port at that address answered
    listener_tries = [a[:3] for a in p.dst.commands if "python3" in a or P.LISTENER_SOCAT_SH in a]
    assert listener_tries == [["timeout", "5", "python3"], ["sh", "-c", P.LISTENER_SOCAT_SH]]


def test_socat_replaces_a_missing_python3(fleet):
    p = Pair(fleet)
    p.dst.python3, p.dst.socat = False, True
    pair, _ = p.gather()
    assert pair.ports_reachable is True


@pytest.mark.parametrize(
    ("setup", "address", "ports"),
    [
        (lambda d: setattr(d, "blocked_ports", True), True, False),  # REJECT: the host answers, the ports do not
        (lambda d: setattr(d, "dropped", True), False, False),  # nothing answers at all
    ],
)
def test_blocked_or_dropped_migration_ports(fleet, setup, address, ports):
    p = Pair(fleet)
    setup(p.dst)
    pair, guest = p.gather()
    assert pair.migration_address_reachable is address and pair.ports_reachable is ports
    assert verdicts(pair, guest)["ports"].status == "fail"
    tunnelled = MigrationOptions(tunnelled=True)
    assert verdicts(pair, guest, tunnelled)["ports"].status == "pass"


def test_migration_address_that_does_not_route(fleet):
    p = Pair(fleet)
    pair, guest = p.gather(migration_address="192.0.2.1")
    assert pair.migration_address_reachable is False and pair.ports_reachable is False
    assert verdicts(pair, guest)["name-resolution"].status == "fail"


def test_name_that_does_not_resolve(fleet):
    p = Pair(fleet)
    p.src.resolves = {}
    pair, guest = p.gather()
    assert pair.source_resolves_destination == []
    assert "cannot resolve 'kvm-b'" in verdicts(pair, guest)["name-resolution"].reason


def test_domain_conflicts_on_the_destination(fleet):
    p = Pair(fleet)
    p.dst.domains = {d.uuid: d for d in (make_domain("web", state="shutoff"), make_domain("other", uuid=GUEST_UUID.upper()))}
    pair, guest = p.gather()
    assert pair.destination_has_domain_name and pair.destination_has_domain_uuid
    assert pair.destination.running_vcpus == 1  # only the running one counts
    assert verdicts(pair, guest)["domain-conflict"].status == "fail"


def test_unreachable_destination_libvirt(fleet):
    p = Pair(fleet)
    p.dst.libvirt_up = False
    pair, guest = p.gather()
    assert pair.source.reachable and not pair.destination.reachable
    assert pair.destination.name == "kvm-b" and pair.destination.address == "10.0.0.12"
    assert pair.cpu_compare == "unknown" and pair.source_resolves_destination is None
    assert guest.name == "web"
    assert verdicts(pair, guest)["reachability"].status == "fail"


def test_ssh_refused_makes_the_host_unreachable_but_keeps_libvirt_facts(fleet):
    p = Pair(fleet)
    p.dst.ssh_error = HostAuthError("10.0.0.12 refused the login as root")
    pair, guest = p.gather()
    assert not pair.destination.reachable and pair.destination.hostname == "kvm-b"
    assert pair.ports_reachable is None and pair.destination_resolves_source is None
    assert guest.disks[0].same_file_on_destination is None
    assert p.leftover_markers() == []


def test_unreachable_source_gives_an_unknown_guest(fleet):
    p = Pair(fleet)
    p.src.libvirt_up = False
    pair, guest = p.gather()
    assert not pair.source.reachable
    assert guest.uuid == GUEST_UUID and guest.state == "unknown" and guest.disks == ()


def test_guest_missing_on_the_source_raises(fleet):
    p = Pair(fleet)
    p.src.domains = {}
    with pytest.raises(DomainNotFound, match=GUEST_UUID):
        p.gather()


def test_maintenance_and_busy_guest(fleet):
    p = Pair(fleet)
    p.src.domain_jobs[GUEST_UUID] = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "operation": 9}  # a backup
    pair, guest = p.gather(in_maintenance=True)
    assert pair.destination.in_maintenance and guest.active_operation == "backup"
    v = verdicts(pair, guest)
    assert v["capacity"].status == "fail" and v["guest-state"].status == "fail"


# --- disks -------------------------------------------------------------------------


def test_read_only_copy_with_identical_content_counts_as_the_same(fleet):
    iso = "/var/lib/libvirt/images/debian.iso"
    p = Pair(fleet, disks=[disk(iso, target="sda", readonly=True)])
    p.src.put(iso, "iso bytes")
    p.dst.put(iso, "iso bytes")
    pair, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is True
    assert verdicts(pair, guest)["storage"].status == "pass"
    p.dst.put(iso, "another release")
    _, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is False


def test_read_only_disk_missing_on_the_destination(fleet):
    iso = "/var/lib/libvirt/images/debian.iso"
    p = Pair(fleet, disks=[disk(iso, target="sda", readonly=True)])
    pair, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is False
    assert "libvirt never copies read-only disks" in verdicts(pair, guest)["storage"].reason


def test_network_block_and_empty_disks_are_not_probed_by_marker(fleet):
    disks = [
        disk("rbd/web", target="vda", source_type="network", protocol="rbd"),
        disk("/dev/mapper/mpatha", target="vdb", source_type="block"),
        disk("", target="sda", source_type="file", readonly=True),
    ]
    p = Pair(fleet, disks=disks)
    p.src.put("/dev/mapper/mpatha", "lun")
    p.dst.put("/dev/mapper/mpatha", "lun")
    pair, guest = p.gather()
    rbd, lun, cdrom = guest.disks
    assert rbd.network and rbd.same_file_on_destination is None
    assert lun.same_file_on_destination is None and lun.destination_can_open is True
    assert cdrom.source == "" and cdrom.destination_can_open is None
    assert not any(a[:3] == ["sh", "-c", P.MARKER_SH] for a in p.src.commands)


def test_copy_storage_sizes_and_room(fleet):
    path = "/var/lib/libvirt/images/web.qcow2"
    p = Pair(fleet, disks=[disk(path)])
    p.src.block_sizes[(GUEST_UUID, "vda")] = (20 * 2**30, 3 * 2**30, 3 * 2**30)  # capacity, allocation, physical
    p.dst.room_kib["/var/lib/libvirt/images"] = 50 * 2**20
    pair, guest = p.gather(COPY)
    assert guest.disks[0].size_kib == 3 * 2**20
    assert pair.destination_pool_room_kib == 50 * 2**20
    assert verdicts(pair, guest, COPY)["storage"].status == "pass"
    p.dst.room_kib["/var/lib/libvirt/images"] = 1 * 2**20
    pair, guest = p.gather(COPY)
    assert "need 3.0 GiB but kvm-b has 1.0 GiB" in verdicts(pair, guest, COPY)["storage"].reason
    del p.dst.room_kib["/var/lib/libvirt/images"]  # the directory is not there
    pair, guest = p.gather(COPY)
    assert pair.destination_pool_room_kib is None
    assert verdicts(pair, guest, COPY)["storage"].status == "warn"


def disk_probe_runas(host) -> list[str]:
    """The prefix the destination's disk probe ran QEMU's tests with."""
    probe = next(a for a in host.commands if a[:3] == ["bash", "-c", P.DISK_PROBES_BASH])
    return probe[6:6 + int(probe[5])]


def test_qemu_user_cannot_open_the_disk(fleet):
    p = Pair(fleet)
    p.dst.files[QEMU_CONF] = 'user = "qemu"\ngroup = "qemu"\ndynamic_ownership = 0\n'
    p.dst.qemu_denied = {("/shared/web.qcow2", "w")}
    p.dst.perms["/shared/web.qcow2"] = "root:root 644"
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.destination_can_open is False and vda.perm_detail == "root:root 644, as qemu"
    v = verdicts(pair, guest)["storage"]
    assert v.status == "fail" and "found root:root 644, as qemu" in v.reason
    assert disk_probe_runas(p.dst) == ["runuser", "-u", "qemu", "--"]


def test_dynamic_ownership_lets_libvirt_fix_the_owner(fleet):
    p = Pair(fleet)
    p.dst.files[QEMU_CONF] = "# nothing set\n"
    p.dst.os_release = 'ID=debian\nPRETTY_NAME="debian"\n'
    p.dst.qemu_denied = {("/shared/web.qcow2", "r"), ("/shared/web.qcow2", "w")}
    _, guest = p.gather()
    (vda,) = guest.disks
    assert vda.destination_can_open is True and "dynamic_ownership" in vda.perm_detail
    assert disk_probe_runas(p.dst) == ["runuser", "-u", "libvirt-qemu", "--"]  # Debian's default user


def test_parse_version():
    assert G.parse_version("9.0.0") == (9, 0, 0)
    assert G.parse_version("7.2") == (7, 2, 0)
    assert G.parse_version("") == (0, 0, 0)
