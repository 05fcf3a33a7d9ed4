"""Preflight checks: one table of pass/warn/fail cases per check, over hand-written facts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from migrations_app import preflight
from migrations_app.facts import DiskFact, GuestSide, HostSide, PairFacts
from migrations_app.options import MigrationOptions
from migrations_app.preflight import Candidate, Verdict, overall, rank_destinations, run_preflight

GIB = 1024 * 1024  # in KiB
HOST_UUIDS = {"kvm-a": "00000000-0000-0000-0000-00000000000a", "kvm-b": "11111111-2222-3333-4444-555555555555"}


def host(name: str, **changes) -> HostSide:
    base = HostSide(
        name=name,
        hostname=f"{name}.lan",
        host_uuid=HOST_UUIDS.get(name, "99999999-0000-0000-0000-000000000000"),
        arch="x86_64",
        hypervisor="QEMU",
        hypervisor_version=(8, 2, 0),
        libvirt_version=(10, 0, 0),
        domain_types=frozenset({"kvm", "qemu"}),
        machine_types=frozenset({"pc-q35-8.2", "q35", "pc-i440fx-8.2", "pc"}),
        memory_free_kib=32 * GIB,
        memory_total_kib=64 * GIB,
        cpus=16,
        running_vcpus=8,
        in_maintenance=False,
        reachable=True,
        address="192.0.2.10" if name == "kvm-a" else "192.0.2.11",
    )
    return dataclasses.replace(base, **changes)


def disk(target="vda", **changes) -> DiskFact:
    base = DiskFact(
        target=target,
        source=f"/var/lib/libvirt/images/web-{target}.qcow2",
        readonly=False,
        shareable=False,
        network=False,
        same_file_on_destination=True,
        destination_can_open=True,
        perm_detail="",
        size_kib=20 * GIB,
    )
    return dataclasses.replace(base, **changes)


def guest(**changes) -> GuestSide:
    base = GuestSide(
        name="web",
        uuid="6f1c6d3e-8a9b-4c1d-9e2f-0a1b2c3d4e5f",
        state="running",
        arch="x86_64",
        domain_type="kvm",
        machine="pc-q35-8.2",
        vcpus=4,
        memory_kib=8 * GIB,
        cpu_mode="host-model",
        cpu_model=None,
        disks=(disk(),),
        active_operation=None,
    )
    return dataclasses.replace(base, **changes)


def pair(src=None, dst=None, **changes) -> PairFacts:
    base = PairFacts(
        source=host("kvm-a", **(src or {})),
        destination=host("kvm-b", **(dst or {})),
        source_resolves_destination=["192.0.2.11"],
        destination_resolves_source=["192.0.2.10"],
        migration_address_reachable=True,
        ports_reachable=True,
        destination_has_domain_name=False,
        destination_has_domain_uuid=False,
        cpu_compare="identical",
        destination_pool_room_kib=100 * GIB,
        destination_pool_targets=frozenset({"/var/lib/libvirt/images"}),
    )
    return dataclasses.replace(base, **changes)


def opts(**changes) -> MigrationOptions:
    return dataclasses.replace(MigrationOptions(), **changes)


def run(check, *, src=None, dst=None, p=None, g=None, o=None) -> Verdict:
    return check(pair(src, dst, **(p or {})), guest(**(g or {})), opts(**(o or {})))


def assert_verdict(verdict: Verdict, status: str, mentions=(), fix_mentions=()):
    assert verdict.status == status, verdict
    for text in mentions:
        assert text in verdict.reason, (text, verdict.reason)
    for text in fix_mentions:
        assert text in verdict.fix, (text, verdict.fix)
    if status == "pass":
        assert verdict.fix == ""
    else:
        assert verdict.fix, "a warning or failure must say what to do"


def test_baseline_passes_everything():
    verdicts = run_preflight(pair(), guest(), opts())
    assert [v.status for v in verdicts] == ["pass"] * len(verdicts)
    assert overall(verdicts) == "pass"
    assert [v.check for v in verdicts] == [
        "reachability", "host-identity", "name-resolution", "domain-conflict", "cpu", "hypervisor",
        "storage", "capacity", "ports", "guest-state",
    ]


# --- 0. reachability ---------------------------------------------------------------

@pytest.mark.parametrize(
    "src,dst,status,mentions",
    [
        ({}, {}, "pass", []),
        ({"reachable": False}, {}, "fail", ["kvm-a (source) did not answer"]),
        ({}, {"reachable": False}, "fail", ["kvm-b (destination) did not answer"]),
    ],
)
def test_reachability(src, dst, status, mentions):
    assert_verdict(run(preflight.check_reachability, src=src, dst=dst), status, mentions)


def test_unreachable_host_leaves_other_checks_unverified_but_still_checks_guest_state():
    verdicts = {v.check: v for v in run_preflight(pair(dst={"reachable": False}), guest(state="shutoff"), opts())}
    assert verdicts["reachability"].status == "fail"
    assert verdicts["storage"].status == "warn" and "Not checked: kvm-b" in verdicts["storage"].reason
    assert verdicts["guest-state"].status == "fail"  # shut off + live, known without the hosts


# --- 1. host identity ----------------------------------------------------------------

SAME_UUID = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    "src,dst,status,mentions,fix_mentions",
    [
        ({}, {}, "pass", [], []),
        ({"host_uuid": SAME_UUID}, {}, "fail", ["Attempt to migrate guest to the same host " + SAME_UUID, "cloned"],
         ["host_uuid", "/etc/libvirt/libvirtd.conf", "uuidgen"]),
        ({"host_uuid": SAME_UUID.upper().replace("-", "")}, {}, "fail", ["same host"], []),
        ({"host_uuid": ""}, {}, "warn", ["unknown"], []),
        ({"hostname": "KVM-B.lan"}, {}, "fail", ["both call themselves", "cloned"], ["hostnamectl set-hostname"]),
        ({}, {"hostname": "localhost.localdomain"}, "fail", ["localhost", "FQDN"], ["hostnamectl set-hostname", "192.0.2.11"]),
        ({}, {"hostname": ""}, "fail", ["FQDN"], ["hostnamectl"]),
        ({"host_uuid": SAME_UUID, "hostname": "kvm-b.lan"}, {}, "fail", ["same host", "both call themselves"], []),
    ],
)
def test_host_identity(src, dst, status, mentions, fix_mentions):
    assert_verdict(run(preflight.check_host_identity, src=src, dst=dst), status, mentions, fix_mentions)


# --- 2. name resolution --------------------------------------------------------------

@pytest.mark.parametrize(
    "p,dst,status,mentions,fix_mentions",
    [
        ({}, {}, "pass", [], []),
        ({"source_resolves_destination": []}, {}, "fail", ["kvm-a cannot resolve 'kvm-b.lan'"],
         ['On kvm-a: add the line "192.0.2.11 kvm-b.lan" to /etc/hosts']),
        ({"destination_resolves_source": []}, {}, "fail", ["kvm-b cannot resolve 'kvm-a.lan'"],
         ['On kvm-b: add the line "192.0.2.10 kvm-a.lan" to /etc/hosts']),
        ({"source_resolves_destination": []}, {"address": ""}, "fail", [], ['"<address of kvm-b> kvm-b.lan"']),
        ({"source_resolves_destination": ["127.0.1.1"]}, {}, "fail", ["127.0.1.1", "not kvm-b's network address"],
         ["loopback line of /etc/hosts"]),
        ({"destination_resolves_source": ["::1"]}, {}, "fail", ["::1"], []),
        ({"source_resolves_destination": ["192.0.2.11", "fe80::1%eth0"]}, {}, "pass", [], []),
        ({"migration_address_reachable": False}, {}, "fail", ["cannot reach kvm-b's migration address"], ["firewall"]),
        ({"migration_address_reachable": None}, {}, "warn", ["Could not verify"], ["ping kvm-b.lan"]),
    ],
)
def test_name_resolution(p, dst, status, mentions, fix_mentions):
    assert_verdict(run(preflight.check_name_resolution, p=p, dst=dst), status, mentions, fix_mentions)


# --- 3. domain conflict --------------------------------------------------------------

@pytest.mark.parametrize(
    "p,status,mentions,fix_mentions",
    [
        ({}, "pass", [], []),
        ({"destination_has_domain_name": True}, "fail", ["already has a guest named 'web'"], ["virsh undefine web"]),
        ({"destination_has_domain_uuid": True}, "fail", ["UUID 6f1c6d3e"], ["grep 6f1c6d3e"]),
    ],
)
def test_domain_conflict(p, status, mentions, fix_mentions):
    assert_verdict(run(preflight.check_domain_conflict, p=p), status, mentions, fix_mentions)


# --- 4. CPU, arch, domain and machine type ---------------------------------------------

@pytest.mark.parametrize(
    "p,dst,g,status,mentions",
    [
        ({}, {}, {}, "pass", []),
        ({"cpu_compare": "superset"}, {}, {}, "pass", []),
        ({"cpu_compare": "incompatible"}, {}, {}, "fail", ["lacks features"]),
        ({"cpu_compare": "error: unsupported configuration: guest CPU feature avx512f"}, {}, {}, "fail",
         ['"unsupported configuration: guest CPU feature avx512f"']),
        ({"cpu_compare": "unknown"}, {}, {}, "warn", ["Could not compare"]),
        ({"cpu_compare": "weird"}, {}, {}, "warn", ["Unexpected"]),
        ({"cpu_compare": "superset"}, {}, {"cpu_mode": "host-passthrough"}, "warn", ["host-passthrough"]),
        ({}, {}, {"cpu_mode": "host-passthrough"}, "pass", []),
        ({}, {"arch": "aarch64"}, {}, "fail", ["x86_64 KVM guest cannot run on kvm-b, which is aarch64"]),
        ({}, {"arch": "x86_64"}, {"arch": "i686"}, "pass", []),
        ({}, {"arch": "x86_64"}, {"arch": "i386"}, "pass", []),
        ({}, {"arch": "i686"}, {"arch": "x86_64"}, "fail", ["cannot run"]),
        ({}, {"arch": "aarch64", "machine_types": frozenset({"pc-q35-8.2"})}, {"domain_type": "qemu"}, "pass", []),
        ({}, {"domain_types": frozenset({"qemu"})}, {}, "fail", ["does not offer domain type 'kvm'"]),
        ({}, {"machine_types": frozenset({"pc-q35-7.2", "q35"})}, {}, "fail", ["machine type 'pc-q35-8.2'"]),
        ({}, {"machine_types": frozenset()}, {}, "warn", ["machine types are unknown"]),
    ],
)
def test_cpu(p, dst, g, status, mentions):
    assert_verdict(run(preflight.check_cpu, p=p, dst=dst, g=g), status, mentions)


def test_cpu_missing_kvm_fix_names_dev_kvm():
    verdict = run(preflight.check_cpu, dst={"domain_types": frozenset({"qemu"})})
    assert "/dev/kvm" in verdict.fix


# --- 5. hypervisor -------------------------------------------------------------------

@pytest.mark.parametrize(
    "src,dst,status,mentions",
    [
        ({}, {}, "pass", []),
        ({}, {"hypervisor_version": (8, 2, 2)}, "pass", []),  # newer micro only
        ({}, {"hypervisor_version": (9, 0, 0)}, "warn", ["newer", "migrating the guest back"]),
        ({}, {"hypervisor_version": (8, 1, 5)}, "warn", ["OLDER DESTINATION", "8.1.5", "8.2.0"]),
        ({}, {"hypervisor_version": (8, 2, 0), "libvirt_version": (9, 0, 0)}, "warn", ["libvirt 9.0.0, older"]),
        ({}, {"hypervisor": "Xen"}, "fail", ["runs QEMU but kvm-b runs Xen"]),
        ({"hypervisor": "qemu"}, {}, "pass", []),
    ],
)
def test_hypervisor(src, dst, status, mentions):
    assert_verdict(run(preflight.check_hypervisor, src=src, dst=dst), status, mentions)


def test_older_destination_is_louder_than_newer():
    older = run(preflight.check_hypervisor, dst={"hypervisor_version": (7, 0, 0)})
    newer = run(preflight.check_hypervisor, dst={"hypervisor_version": (9, 0, 0)})
    assert "OLDER" in older.reason and "OLDER" not in newer.reason


# --- 6. storage ----------------------------------------------------------------------

LOCAL = {"same_file_on_destination": False, "destination_can_open": None}


@pytest.mark.parametrize(
    "disks,p,o,status,mentions,fix_mentions",
    [
        ((disk(),), {}, {}, "pass", [], []),
        ((), {}, {}, "pass", [], []),
        ((disk(network=True, same_file_on_destination=None, destination_can_open=None),), {}, {}, "pass", [], []),
        ((disk("sda", source="", readonly=True, same_file_on_destination=None),), {}, {}, "pass", [], []),
        ((disk(**LOCAL),), {}, {}, "fail", ["not on shared storage"], ["copy-storage"]),
        ((disk(**LOCAL),), {}, {"copy_storage": True}, "pass", [], []),
        ((disk(**LOCAL),), {"destination_pool_room_kib": 10 * GIB}, {"copy_storage": True}, "fail",
         ["need 20.0 GiB", "10.0 GiB free"], ["Free 10.0 GiB"]),
        ((disk(**LOCAL),), {"destination_pool_room_kib": None}, {"copy_storage": True}, "warn", ["room"], ["df -h"]),
        ((disk(**LOCAL, size_kib=None),), {}, {"copy_storage": True}, "warn", ["room"], []),
        ((disk(**LOCAL), disk("vdb", **LOCAL)), {"destination_pool_room_kib": 30 * GIB}, {"copy_storage": True},
         "fail", ["need 40.0 GiB"], []),
        ((disk(**LOCAL),), {}, {"live": False}, "fail", ["offline migration cannot copy"], ["both hosts mount"]),
        ((disk(same_file_on_destination=None, destination_can_open=None),), {}, {"copy_storage": True}, "warn",
         ["copying it onto itself"], []),
        ((disk(same_file_on_destination=None),), {}, {}, "warn", ["Could not verify that kvm-b sees the same file"], []),
        ((disk(destination_can_open=False, perm_detail="root:root 0600"),), {}, {}, "fail",
         ["cannot open vda", "root:root 0600"], ["chown qemu:qemu", "chmod 0660", "never 777"]),
        ((disk(destination_can_open=None),), {}, {}, "warn", ["Could not verify that QEMU on kvm-b can open"], ["ls -lZ"]),
        ((disk("hdc", readonly=True, same_file_on_destination=False),), {}, {"copy_storage": True}, "fail",
         ["read-only disk", "never copies"], []),
        ((disk("hdc", readonly=True, destination_can_open=False),), {}, {}, "fail", [], ["chmod 0640"]),
        ((disk("vdc", shareable=True, same_file_on_destination=False),), {}, {"copy_storage": True}, "fail",
         ["shareable disk"], []),
        ((disk(), disk("vdb", **LOCAL)), {}, {"copy_storage": True}, "pass", [], []),
        ((disk(), disk("vdb", **LOCAL)), {}, {"copy_storage": True, "tunnelled": True}, "fail",
         ["copied onto themselves"], ["Turn tunnelled off"]),
    ],
)
def test_storage(disks, p, o, status, mentions, fix_mentions):
    verdict = run(preflight.check_storage, p=p, g={"disks": disks}, o=o)
    assert_verdict(verdict, status, mentions, fix_mentions)
    assert "777" not in verdict.fix.replace("never 777", "")


def test_storage_offers_to_repair_exactly_the_files_qemu_cannot_open():
    disks = (
        disk(destination_can_open=False, perm_detail="root:root 0600"),
        disk("hdc", source="/srv/iso/boot.iso", readonly=True, destination_can_open=False),
        disk("vdb", source="/srv/ok.qcow2"),
        disk("vdc", source="pool/vol", network=True, destination_can_open=False),
    )
    verdict = run(preflight.check_storage, g={"disks": disks})
    assert verdict.status == "fail"
    assert verdict.repairs == ((disks[0].source, "0660"), ("/srv/iso/boot.iso", "0640"))
    assert "Repair permissions" in verdict.fix


def test_passing_storage_offers_no_repair():
    assert run(preflight.check_storage, g={"disks": (disk(),)}).repairs == ()


def test_storage_pass_names_copied_disks():
    verdict = run(preflight.check_storage, g={"disks": (disk(), disk("vdb", **LOCAL))}, o={"copy_storage": True})
    assert "vdb will be copied" in verdict.reason


@pytest.mark.parametrize(
    "disks,expected",
    [
        ((disk(),), ()),
        ((disk(**LOCAL), disk("vdb"), disk("vdc", same_file_on_destination=None)), ("vda", "vdc")),
        ((disk(**LOCAL, readonly=True), disk("vdb", **LOCAL, shareable=True), disk("vdc", **LOCAL, network=True)), ()),
        ((disk(**LOCAL, source=""),), ()),
    ],
)
def test_disks_to_copy(disks, expected):
    assert preflight.disks_to_copy(guest(disks=disks)) == expected


# --- 7. capacity ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "dst,g,o,status,mentions",
    [
        ({}, {}, {}, "pass", []),
        ({"memory_free_kib": 8 * GIB}, {}, {}, "fail", ["8.0 GiB free", "10% headroom", "8.8 GiB"]),
        ({"memory_free_kib": int(8.8 * GIB)}, {}, {}, "pass", []),  # exactly guest + 10%
        ({"memory_free_kib": int(8.8 * GIB) - 1}, {}, {}, "fail", ["headroom"]),
        ({"memory_free_kib": 1 * GIB}, {"state": "shutoff"}, {"live": False}, "warn", ["could not be started there now"]),
        ({"in_maintenance": True}, {}, {}, "fail", ["kvm-b is in maintenance"]),
        ({"cpus": 2}, {}, {}, "warn", ["4 vCPUs but kvm-b has only 2 CPUs"]),
        ({"running_vcpus": 61}, {}, {}, "warn", ["65 vCPUs on 16 CPUs", "more than 4 per CPU"]),
        ({"running_vcpus": 60}, {"vcpus": 4}, {}, "pass", []),  # exactly 4 per CPU
    ],
)
def test_capacity(dst, g, o, status, mentions):
    assert_verdict(run(preflight.check_capacity, dst=dst, g=g, o=o), status, mentions)


def test_capacity_headroom_is_the_constant(monkeypatch):
    monkeypatch.setattr(preflight, "MEMORY_HEADROOM", 0.5)
    assert run(preflight.check_capacity, dst={"memory_free_kib": 10 * GIB}).status == "fail"


# --- 8. ports ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "p,o,status,mentions,fix_mentions",
    [
        ({}, {}, "pass", [], []),
        ({"ports_reachable": False}, {}, "fail", ["49152-49215"], ["firewall-cmd --permanent --add-port=49152-49215/tcp",
                                                                     "ufw allow 49152:49215/tcp", "tunnelled"]),
        ({"ports_reachable": None}, {}, "warn", ["Could not verify"], ["firewall-cmd"]),
        ({"ports_reachable": False}, {"tunnelled": True}, "pass", ["Tunnelled", "not needed"], []),
        ({"ports_reachable": False}, {"live": False}, "pass", ["Offline"], []),
    ],
)
def test_ports(p, o, status, mentions, fix_mentions):
    assert_verdict(run(preflight.check_ports, p=p, o=o), status, mentions, fix_mentions)


# --- 9. guest state ------------------------------------------------------------------

@pytest.mark.parametrize(
    "g,o,status,mentions",
    [
        ({}, {}, "pass", ["running"]),
        ({"state": "paused"}, {}, "pass", ["arrive paused"]),
        ({"state": "shutoff"}, {}, "fail", ["shut off", "live migration needs a running guest"]),
        ({"state": "pmsuspended"}, {}, "fail", ["pmsuspended"]),
        ({"state": "crashed"}, {}, "fail", ["crashed"]),
        ({"state": "shutoff"}, {"live": False}, "pass", ["offline"]),
        ({"state": "running"}, {"live": False}, "fail", ["offline migration only moves the definition"]),
        ({"state": "shutoff", "persistent": False}, {"live": False}, "fail", ["transient"]),
        ({"active_operation": "backup"}, {}, "fail", ["Another operation is in progress on web: backup"]),
        ({"state": "paused", "active_operation": "snapshot"}, {}, "fail", ["snapshot"]),
    ],
)
def test_guest_state(g, o, status, mentions):
    assert_verdict(run(preflight.check_guest_state, g=g, o=o), status, mentions)


# --- overall, verdicts, ranking ----------------------------------------------------------

def V(status, check="x"):
    return Verdict(check, status, "why", "" if status == "pass" else "do this")


@pytest.mark.parametrize(
    "statuses,expected",
    [
        (["pass"], "pass"),
        (["pass", "warn"], "warn"),
        (["warn", "fail", "pass"], "fail"),
        (["fail", "fail"], "fail"),
        ([], "fail"),  # nothing checked is not a pass
    ],
)
def test_overall(statuses, expected):
    assert overall([V(s) for s in statuses]) == expected


def test_verdict_status_is_plain_string_and_checked():
    assert type(V("warn").status) is str
    with pytest.raises(ValueError):
        Verdict("x", "ok", "why")


def cand(name, free_gib, *statuses):
    return Candidate(host(name, memory_free_kib=free_gib * GIB), tuple(V(s) for s in statuses))


def test_rank_destinations():
    candidates = [
        cand("f-big", 500, "pass", "fail"),
        cand("w-big", 200, "warn"),
        cand("p-small", 10, "pass"),
        cand("p-big", 100, "pass", "pass"),
        cand("w-small", 20, "pass", "warn"),
        cand("p-tie-b", 10, "pass"),
        cand("f-small", 1, "fail"),
    ]
    assert [c.destination.name for c in rank_destinations(candidates)] == [
        "p-big", "p-small", "p-tie-b", "w-big", "w-small", "f-big", "f-small",
    ]
    assert rank_destinations([]) == []


def test_overall_of_a_real_failure():
    verdicts = run_preflight(pair(dst={"in_maintenance": True}, ports_reachable=None), guest(), opts())
    assert overall(verdicts) == "fail"
    assert {v.check: v.status for v in verdicts}["ports"] == "warn"


# --- purity ----------------------------------------------------------------------------

def test_modules_import_without_django_or_libvirt():
    code = (
        "import sys; import migrations_app.facts, migrations_app.preflight, migrations_app.options, "
        "migrations_app.policy, migrations_app.reconcile; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'libvirt', 'paramiko')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr



@pytest.mark.parametrize("pools, status, reason_part, fix_part", [
    (frozenset({"/var/lib/libvirt/images"}), "pass", "will be copied", None),
    (frozenset({"/srv/other"}), "fail", "no active storage pool at /var/lib/libvirt/images",
     "virsh pool-define-as var-lib-libvirt-images dir --target /var/lib/libvirt/images"),
    (frozenset(), "fail", "Storage pool not found", "virsh pool-start"),
    (None, "warn", "Could not list kvm-b's storage pools", "virsh pool-list"),
])
def test_copy_storage_needs_a_pool_at_the_disk_directory(pools, status, reason_part, fix_part):
    verdict = run(preflight.check_storage, p={"destination_pool_targets": pools},
                  g={"disks": (disk("vdb", **LOCAL),)}, o={"copy_storage": True})
    assert verdict.status == status, verdict
    assert reason_part in verdict.reason
    if fix_part:
        assert fix_part in verdict.fix


def test_pool_name_in_the_fix_is_safe_to_paste():
    from migrations_app.preflight import _pool_name

    assert _pool_name("/var/lib/libvirt/images") == "var-lib-libvirt-images"
    assert _pool_name("/") == "root"
    assert ";" not in _pool_name("/srv/a;b $(x)")



def test_name_resolution_probe_failure_is_a_warning_not_a_verdict():
    verdict = run(preflight.check_name_resolution, p={"source_resolves_destination": None})
    assert verdict.status == "warn" and "Could not verify how kvm-a resolves" in verdict.reason
    verdict = run(preflight.check_name_resolution, p={"source_resolves_destination": []})
    assert verdict.status == "fail" and "cannot resolve" in verdict.reason
