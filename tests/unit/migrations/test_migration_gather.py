"""migrations_app.gather: assembling PairFacts/GuestSide from what the hosts answer.

Two layers of fakes at the adapter boundary: ``FakeHost`` answers the remote
commands gather sends (as an SSH session would) from a small model of each
host's filesystem, and fake ``lv``/``mg`` modules answer the libvirt calls.
The shell and Python snippets gather sends are also run for real on this
machine (``test_script_*``), so the fakes only have to model their output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from tests.fakes.fleet import make_domain

from hosts.adapters.errors import CommandTimeout, DomainNotFound, HostAuthError, HostUnreachable
from hosts.adapters.libvirt import DiskInfo, HostFacts
from hosts.adapters.migration import BlockSize
from hosts.adapters.ssh import CommandResult, SSHTarget
from hosts.adapters import probes as P
from migrations_app import gather as G
from migrations_app.options import MigrationOptions
from migrations_app.preflight import overall, run_preflight

GUEST_UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LIVE = MigrationOptions()
COPY = MigrationOptions(copy_storage=True)
KNOWN_SCRIPTS = {P.LISTENER_PY, P.LISTENER_SOCAT_SH, P.CONNECT_SH, P.MARKER_SH, P.DISK_PROBE_SH, P.DIGEST_SH}


def disk(source: str, *, target="vda", readonly=False, shareable=False, source_type="file", protocol=""):
    return DiskInfo(target=target, device="disk", source_type=source_type, source=source, protocol=protocol,
                    format="qcow2", readonly=readonly, shareable=shareable)


@dataclasses.dataclass
class World:
    """Files by namespace: "shared" is seen by every host that mounts it, a host name only by that host."""

    files: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    listening: set[tuple[str, int]] = dataclasses.field(default_factory=set)
    marker_names: int = 0

    def ns(self, namespace: str) -> dict[str, str]:
        return self.files.setdefault(namespace, {})


@dataclasses.dataclass
class FakeHost:
    world: World
    name: str
    address: str
    domains: list = dataclasses.field(default_factory=list)
    libvirt_up: bool = True
    ssh_error: Exception | None = None
    resolves: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    qemu_conf: str | None = '#user = "libvirt-qemu"\nuser = "root"\ngroup = "root"\n'
    os_id: str = "debian"
    python3: bool = True
    socat: bool = False
    mounts: dict[str, str] = dataclasses.field(default_factory=lambda: {"/shared": "shared"})
    qemu_denied: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (path, "r"/"w")
    perms: dict[str, str] = dataclasses.field(default_factory=dict)
    room_kib: dict[str, int] = dataclasses.field(default_factory=dict)
    blocked_ports: bool = False  # REJECT 49152-49215 (the block-ports knob)
    dropped: bool = False  # every packet to it dropped
    fail: dict[str, Exception] = dataclasses.field(default_factory=dict)  # command kind -> error
    cpu_compare: object = "superset"
    operation: str | None = None
    hostname: str = ""
    commands: list[list[str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.hostname = self.hostname or self.name

    # --- filesystem view
    def _ns(self, path: str) -> dict[str, str]:
        best = max((p for p in self.mounts if path == p or path.startswith(p + "/")), key=len, default=None)
        return self.world.ns(self.mounts[best] if best else self.name)

    def put(self, path: str, content: str = "data") -> None:
        self._ns(path)[path] = content

    def read(self, path: str) -> str | None:
        return self._ns(path).get(path)

    # --- libvirt
    def facts(self) -> HostFacts:
        return HostFacts(
            hostname=self.hostname, host_uuid=f"00000000-0000-0000-0000-0000000000{self.address[-2:]}",
            arch="x86_64", cpu_vendor="AMD", cpu_model="EPYC", cpu_features=[], hypervisor="QEMU",
            hypervisor_version="7.2.0", libvirt_version="9.0.0", domain_types=["qemu", "kvm"],
            machine_types=["pc", "pc-i440fx-7.2"], memory_total_kib=16 * 2**20, memory_free_kib=8 * 2**20, cpus=8,
        )

    # --- ssh
    def run(self, argv: list[str], *, timeout: float = 30.0, check: bool = True, stdin: str | None = None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        self.commands.append(list(argv))
        kind, status, out, err = self._answer(argv, stdin)
        if kind in self.fail:
            raise self.fail[kind]
        result = CommandResult(argv=argv, exit_status=status, stdout=out, stderr=err, duration_s=0.01)
        if check and status != 0:
            from hosts.adapters.errors import CommandFailed

            raise CommandFailed(argv, status, out, err)
        return result

    def _answer(self, argv, stdin):  # noqa: C901 - one branch per command gather sends
        if argv[:2] == ["getent", "ahosts"]:
            found = self.resolves.get(argv[2], [])
            return "getent", (0 if found else 2), "".join(f"{a}      STREAM {argv[2]}\n" for a in found), ""
        if argv == ["grep", "-E", P.QEMU_CONF_PATTERN, "/etc/libvirt/qemu.conf"]:
            if self.qemu_conf is None:
                return "qemu.conf", 2, "", "grep: /etc/libvirt/qemu.conf: No such file or directory"
            lines = [x for x in self.qemu_conf.splitlines() if P._CONF_LINE.match(x)]
            return "qemu.conf", (0 if lines else 1), "".join(f"{x}\n" for x in lines), ""
        if argv in (["cat", "/etc/os-release"], ["cat", "/usr/lib/os-release"]):
            return "os-release", 0, f'ID={self.os_id}\nPRETTY_NAME="{self.os_id}"\n', ""
        if argv[:4] == ["timeout", str(P.LISTENER_LIFETIME_S), "python3", "-c"]:
            assert argv[4] == P.LISTENER_PY
            return ("listener", *self._listen()) if self.python3 else ("listener", 127, "", "no python3")
        if argv[:3] == ["sh", "-c", P.LISTENER_SOCAT_SH]:
            return ("listener", *self._listen()) if self.socat else ("listener", 127, "", "")
        if argv[:4] == ["timeout", str(P.CONNECT_TIMEOUT_S), "bash", "-c"]:
            assert argv[4] == P.CONNECT_SH
            return ("connect", *self.world_connect(argv[6], int(argv[7])))
        if argv[:3] == ["sh", "-c", P.MARKER_SH]:
            directory, prefix = argv[4], argv[5]
            if directory not in {os.path.dirname(p) for ns in self.world.files.values() for p in ns}:
                return "marker", 1, "", f"mktemp: failed to create file via template '{prefix}XXXXXXXXXX'"
            self.world.marker_names += 1
            path = f"{directory}/{prefix}F{self.world.marker_names:09d}"
            self.put(path, stdin)
            return "marker", 0, path, ""
        if argv[:3] == ["sh", "-c", P.DISK_PROBE_SH]:
            return ("disk-probe", 0, self._disk_probe(*argv[4:8]), "")
        if argv[:3] == ["rm", "-f", "--"]:
            for path in argv[3:]:
                self._ns(path).pop(path, None)
            return "rm", 0, "", ""
        if argv[:3] == ["sh", "-c", P.DIGEST_SH]:
            content = self.read(argv[4])
            if content is None:
                return "digest", 1, "", "No such file"
            return "digest", 0, f"{len(content)} {hashlib.sha256(content.encode()).hexdigest()}\n", ""
        raise AssertionError(f"unexpected command {argv}")

    def _listen(self):
        port = P.MIGRATION_PORT_MIN + 7
        self.world.listening.add((self.address, port))
        return 0, f"{port}\n", ""

    def _disk_probe(self, marker, path, write, room):
        lines = []
        if marker:
            content = self.read(marker)
            lines.append(f"marker={content if content is not None else '-'}")
        if self.read(path) is not None:
            lines += ["exists=1", f"stat={self.perms.get(path, 'root:root 644')}"]
            for mode in ("r", "w") if write == "1" else ("r",):
                lines += [f"qemu_{mode}={1 if (path, mode) in self.qemu_denied else 0}", f"root_{mode}=0"]
            lines.append("qemu_dir=0")
        else:
            lines.append("exists=0")
        if room == "1":
            lines.append(f"room={self.room_kib.get(os.path.dirname(path), '')}")
        return "\n".join(lines) + "\n"

    def world_connect(self, address: str, port: int):
        target = self.peers.get(address)
        if target is None:
            return 1, "", f"bash: connect: No route to host\nbash: /dev/tcp/{address}/{port}: No route to host\n"
        if target.dropped:
            return 124, "", ""
        if P.MIGRATION_PORT_MIN <= port <= P.MIGRATION_PORT_MAX and target.blocked_ports:
            return 1, "", f"bash: connect: Connection refused\nbash: line 1: /dev/tcp/{address}/{port}: Connection refused\n"
        if (address, port) in self.world.listening or port == 22:
            return 0, "", ""
        return 1, "", "bash: connect: Connection refused\n"


class Pair:
    """A source and a destination host with one guest on the source, and the fake adapter modules."""

    def __init__(self, monkeypatch, disks=None):
        self.world = World()
        self.src = FakeHost(self.world, "kvm-a", "10.0.0.11")
        self.dst = FakeHost(self.world, "kvm-b", "10.0.0.12")
        for host in (self.src, self.dst):
            host.peers = {"10.0.0.11": self.src, "10.0.0.12": self.dst}
        self.src.resolves = {"kvm-b": ["10.0.0.12"]}
        self.dst.resolves = {"kvm-a": ["10.0.0.11"]}
        disks = disks if disks is not None else [disk("/shared/web.qcow2")]
        self.guest = make_domain("web", uuid=GUEST_UUID, disks=disks, cpu_mode="custom", cpu_model="qemu64",
                                 machine="pc-i440fx-7.2")
        self.src.domains = [self.guest]
        for d in disks:
            if d.source.startswith("/"):
                self.src.put(d.source, f"image of {d.target}")
        self.hosts = {self.src.address: self.src, self.dst.address: self.dst}
        self.sizes: dict[str, BlockSize] = {}
        monkeypatch.setattr(G, "lv", SimpleNamespace(
            open_connection=self._open_connection,
            get_host_facts=lambda host: host.facts(),
            list_domains=lambda host: list(host.domains),
        ))
        monkeypatch.setattr(G, "mg", SimpleNamespace(
            domain_xml=lambda host, uuid, migratable=True: "<domain><cpu mode='custom'><model>qemu64</model></cpu></domain>",
            compare_guest_cpu=self._compare,
            current_operation=lambda host, uuid, disk_targets=(): host.operation,
            block_size=lambda host, uuid, target: self.sizes[target],
            active_pool_targets=lambda host: list(getattr(host, "pools", ["/var/lib/libvirt/images"])),
        ))
        monkeypatch.setattr(G, "SSHSession", self._ssh_session)

    @contextlib.contextmanager
    def _open_connection(self, uri, *, ssh_target=None):
        host = self.hosts[ssh_target.address]
        if not host.libvirt_up:
            raise HostUnreachable(f"Cannot connect to libvirt at {uri}: Connection refused")
        yield host

    @contextlib.contextmanager
    def _ssh_session(self, target):
        host = self.hosts[target.address]
        if host.ssh_error is not None:
            raise host.ssh_error
        host.target = target
        yield host

    @staticmethod
    def _compare(host, *, guest_xml, arch, domain_type, machine):
        if isinstance(host.cpu_compare, Exception):
            raise host.cpu_compare
        return host.cpu_compare

    def endpoint(self, host: FakeHost, **kw) -> G.Endpoint:
        return G.Endpoint(name=host.name, libvirt_uri=f"qemu+ssh://root@{host.address}/system",
                          ssh=SSHTarget(address=host.address, private_key_pem="k", pinned_host_key="ssh-ed25519 x"), **kw)

    def gather(self, options=LIVE, **dst_kw):
        return G.gather(source=self.endpoint(self.src), destination=self.endpoint(self.dst, **dst_kw),
                        guest_uuid=GUEST_UUID, options=options)

    def leftover_markers(self) -> list[str]:
        return [p for ns in self.world.files.values() for p in ns if P.MARKER_PREFIX in p]


def verdicts(pair, guest, options=LIVE) -> dict[str, object]:
    return {v.check: v for v in run_preflight(pair, guest, options)}


# --- the whole assembly ---------------------------------------------------------


def test_healthy_pair_fills_every_fact_and_passes(monkeypatch):
    p = Pair(monkeypatch)
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


def test_every_remote_command_is_an_argv_with_data_outside_the_scripts(monkeypatch):
    p = Pair(monkeypatch, disks=[disk("/shared/it's $(rm -rf ~) `x`.qcow2")])
    p.gather()
    commands = p.src.commands + p.dst.commands
    assert commands
    for argv in commands:
        for i, arg in enumerate(argv):
            if i > 0 and argv[i - 1] == "-c":
                assert arg in KNOWN_SCRIPTS, arg  # fixed text; values come after it as "$1"…
    assert any("/shared/it's $(rm -rf ~) `x`.qcow2" in argv for argv in p.dst.commands)


def test_marker_not_seen_on_the_destination_means_not_the_same_file(monkeypatch):
    p = Pair(monkeypatch, disks=[disk("/var/lib/libvirt/images/web.qcow2")])
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is False
    assert vda.destination_can_open is False and vda.perm_detail == "does not exist"
    assert verdicts(pair, guest)["storage"].status == "fail"
    assert p.leftover_markers() == []  # removed on the source


def test_a_different_file_at_the_marker_path_is_not_the_same_file(monkeypatch):
    p = Pair(monkeypatch, disks=[disk("/var/lib/libvirt/images/web.qcow2")])
    p.dst.put("/var/lib/libvirt/images/web.qcow2", "someone else's image")
    p.dst.put(f"/var/lib/libvirt/images/{P.MARKER_PREFIX}F000000001", "stale token from another run")
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is False
    assert vda.destination_can_open is True  # there is *a* file, just not ours
    assert verdicts(pair, guest)["storage"].status == "fail"


def test_failed_probes_become_none_and_the_rest_still_answers(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.fail["disk-probe"] = CommandTimeout(["sh"], 10)
    p.dst.fail["getent"] = HostUnreachable("Lost the SSH connection")
    p.src.fail["marker"] = RuntimeError("a bug in a probe")
    p.dst.cpu_compare = HostUnreachable("Lost the libvirt connection")
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.same_file_on_destination is None and vda.destination_can_open is None
    assert pair.destination_resolves_source is None
    assert pair.cpu_compare == "unknown"
    assert pair.source_resolves_destination == ["10.0.0.12"] and pair.ports_reachable is True
    v = verdicts(pair, guest)
    assert v["storage"].status == "warn" and "Could not verify" in v["storage"].reason
    assert v["cpu"].status == "warn"


def test_no_listener_program_leaves_ports_unverified(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.python3 = False
    pair, _ = p.gather()
    assert pair.ports_reachable is None
    assert pair.migration_address_reachable is True  # the SSH port at that address answered
    listener_tries = [a[:3] for a in p.dst.commands if "python3" in a or P.LISTENER_SOCAT_SH in a]
    assert listener_tries == [["timeout", "5", "python3"], ["sh", "-c", P.LISTENER_SOCAT_SH]]


def test_socat_replaces_a_missing_python3(monkeypatch):
    p = Pair(monkeypatch)
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
def test_blocked_or_dropped_migration_ports(monkeypatch, setup, address, ports):
    p = Pair(monkeypatch)
    setup(p.dst)
    pair, guest = p.gather()
    assert pair.migration_address_reachable is address and pair.ports_reachable is ports
    assert verdicts(pair, guest)["ports"].status == "fail"
    tunnelled = MigrationOptions(tunnelled=True)
    assert verdicts(pair, guest, tunnelled)["ports"].status == "pass"


def test_migration_address_that_does_not_route(monkeypatch):
    p = Pair(monkeypatch)
    pair, guest = p.gather(migration_address="192.0.2.1")
    assert pair.migration_address_reachable is False and pair.ports_reachable is False
    assert verdicts(pair, guest)["name-resolution"].status == "fail"


def test_name_that_does_not_resolve(monkeypatch):
    p = Pair(monkeypatch)
    p.src.resolves = {}
    pair, guest = p.gather()
    assert pair.source_resolves_destination == []
    assert "cannot resolve 'kvm-b'" in verdicts(pair, guest)["name-resolution"].reason


def test_domain_conflicts_on_the_destination(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.domains = [make_domain("web", state="shutoff"), make_domain("other", uuid=GUEST_UUID.upper())]
    pair, guest = p.gather()
    assert pair.destination_has_domain_name and pair.destination_has_domain_uuid
    assert pair.destination.running_vcpus == 1  # only the running one counts
    assert verdicts(pair, guest)["domain-conflict"].status == "fail"


def test_unreachable_destination_libvirt(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.libvirt_up = False
    pair, guest = p.gather()
    assert pair.source.reachable and not pair.destination.reachable
    assert pair.destination.name == "kvm-b" and pair.destination.address == "10.0.0.12"
    assert pair.cpu_compare == "unknown" and pair.source_resolves_destination is None
    assert guest.name == "web"
    assert verdicts(pair, guest)["reachability"].status == "fail"


def test_ssh_refused_makes_the_host_unreachable_but_keeps_libvirt_facts(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.ssh_error = HostAuthError("10.0.0.12 refused the login as root")
    pair, guest = p.gather()
    assert not pair.destination.reachable and pair.destination.hostname == "kvm-b"
    assert pair.ports_reachable is None and pair.destination_resolves_source is None
    assert guest.disks[0].same_file_on_destination is None
    assert p.leftover_markers() == []


def test_unreachable_source_gives_an_unknown_guest(monkeypatch):
    p = Pair(monkeypatch)
    p.src.libvirt_up = False
    pair, guest = p.gather()
    assert not pair.source.reachable
    assert guest.uuid == GUEST_UUID and guest.state == "unknown" and guest.disks == ()


def test_guest_missing_on_the_source_raises(monkeypatch):
    p = Pair(monkeypatch)
    p.src.domains = []
    with pytest.raises(DomainNotFound, match=GUEST_UUID):
        p.gather()


def test_maintenance_and_busy_guest(monkeypatch):
    p = Pair(monkeypatch)
    p.src.operation = "backup"
    pair, guest = p.gather(in_maintenance=True)
    assert pair.destination.in_maintenance and guest.active_operation == "backup"
    v = verdicts(pair, guest)
    assert v["capacity"].status == "fail" and v["guest-state"].status == "fail"


# --- disks -------------------------------------------------------------------------


def test_read_only_copy_with_identical_content_counts_as_the_same(monkeypatch):
    iso = "/var/lib/libvirt/images/debian.iso"
    p = Pair(monkeypatch, disks=[disk(iso, target="sda", readonly=True)])
    p.src.put(iso, "iso bytes")
    p.dst.put(iso, "iso bytes")
    pair, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is True
    assert verdicts(pair, guest)["storage"].status == "pass"
    p.dst.put(iso, "another release")
    _, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is False


def test_read_only_disk_missing_on_the_destination(monkeypatch):
    iso = "/var/lib/libvirt/images/debian.iso"
    p = Pair(monkeypatch, disks=[disk(iso, target="sda", readonly=True)])
    pair, guest = p.gather()
    assert guest.disks[0].same_file_on_destination is False
    assert "libvirt never copies read-only disks" in verdicts(pair, guest)["storage"].reason


def test_network_block_and_empty_disks_are_not_probed_by_marker(monkeypatch):
    disks = [
        disk("rbd/web", target="vda", source_type="network", protocol="rbd"),
        disk("/dev/mapper/mpatha", target="vdb", source_type="block"),
        disk("", target="sda", source_type="file", readonly=True),
    ]
    p = Pair(monkeypatch, disks=disks)
    p.src.put("/dev/mapper/mpatha", "lun")
    p.dst.put("/dev/mapper/mpatha", "lun")
    pair, guest = p.gather()
    rbd, lun, cdrom = guest.disks
    assert rbd.network and rbd.same_file_on_destination is None
    assert lun.same_file_on_destination is None and lun.destination_can_open is True
    assert cdrom.source == "" and cdrom.destination_can_open is None
    assert not any(a[:3] == ["sh", "-c", P.MARKER_SH] for a in p.src.commands)


def test_copy_storage_sizes_and_room(monkeypatch):
    path = "/var/lib/libvirt/images/web.qcow2"
    p = Pair(monkeypatch, disks=[disk(path)])
    p.sizes["vda"] = BlockSize(capacity=20 * 2**30, allocation=3 * 2**30, physical=3 * 2**30)
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


def test_qemu_user_cannot_open_the_disk(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.qemu_conf = 'user = "qemu"\ngroup = "qemu"\ndynamic_ownership = 0\n'
    p.dst.qemu_denied = {("/shared/web.qcow2", "w")}
    p.dst.perms["/shared/web.qcow2"] = "root:root 644"
    pair, guest = p.gather()
    (vda,) = guest.disks
    assert vda.destination_can_open is False and vda.perm_detail == "root:root 644, as qemu"
    v = verdicts(pair, guest)["storage"]
    assert v.status == "fail" and "found root:root 644, as qemu" in v.reason
    probe = next(a for a in p.dst.commands if a[:3] == ["sh", "-c", P.DISK_PROBE_SH])
    assert probe[-4:] == ["runuser", "-u", "qemu", "--"]


def test_dynamic_ownership_lets_libvirt_fix_the_owner(monkeypatch):
    p = Pair(monkeypatch)
    p.dst.qemu_conf = "# nothing set\n"
    p.dst.os_id = "debian"
    p.dst.qemu_denied = {("/shared/web.qcow2", "r"), ("/shared/web.qcow2", "w")}
    _, guest = p.gather()
    (vda,) = guest.disks
    assert vda.destination_can_open is True and "dynamic_ownership" in vda.perm_detail
    probe = next(a for a in p.dst.commands if a[:3] == ["sh", "-c", P.DISK_PROBE_SH])
    assert probe[-4:] == ["runuser", "-u", "libvirt-qemu", "--"]  # Debian's default user


# --- pure parsing ------------------------------------------------------------------


# What grep finds in Debian 12's /etc/libvirt/qemu.conf.
DEBIAN_QEMU_CONF = """#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#       user = "100"    # A user named "100" or a user with uid=100
#user = "libvirt-qemu"
#group = "libvirt-qemu"
#dynamic_ownership = 1
"""


@pytest.mark.parametrize(
    ("text", "default", "user", "group", "dynamic"),
    [
        ('user = "root"\ngroup = "root"\n', None, "root", "root", True),
        ('#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n', None, "libvirt-qemu", "libvirt-qemu", True),
        ('user = "a"\nuser = "b"\n', None, "a", None, True),  # libvirt reads the first
        (DEBIAN_QEMU_CONF, None, "libvirt-qemu", "libvirt-qemu", True),  # examples are not the default
        (DEBIAN_QEMU_CONF + 'user = "root"\ngroup = "root"\ndynamic_ownership = 0\n', None, "root", "root", False),
        ('  user="qemu"  # comment\ndynamic_ownership = 0\n', None, "qemu", None, False),
        ('user = "+107"\ngroup = "+107"\n', None, "+107", "+107", True),
        ("", "libvirt-qemu", "libvirt-qemu", None, True),
        ("", None, "qemu", None, True),
    ],
)
def test_parse_qemu_conf(text, default, user, group, dynamic):
    got = P.parse_qemu_conf(text, distro_default_user=default)
    assert (got.user, got.group, got.dynamic_ownership) == (user, group, dynamic)


def test_runas_argv():
    assert P.QemuIdentity("qemu", "qemu", True).runas_argv() == ["runuser", "-u", "qemu", "--"]
    assert P.QemuIdentity("+107", "+36", True).runas_argv() == [
        "setpriv", "--reuid=107", "--regid=36", "--clear-groups", "--"]


def test_distro_default_user():
    from hosts.adapters.facts import OsRelease

    assert P.distro_qemu_user(OsRelease("ubuntu", "debian", "24.04", "")) == "libvirt-qemu"
    assert P.distro_qemu_user(OsRelease("rocky", "rhel centos fedora", "9", "")) == "qemu"
    assert P.distro_qemu_user(OsRelease("opensuse-leap", "suse opensuse", "15", "")) == "qemu"


@pytest.mark.parametrize(
    ("status", "stderr", "outcome"),
    [
        (0, "", "open"),
        (1, "bash: connect: Connection refused\n", "refused"),
        (124, "", "timeout"),
        (1, "bash: connect: No route to host\n", "unreachable"),
        (1, "bash: kvm-b: Name or service not known\n", "unreachable"),
        (127, "timeout: failed to run command 'bash'", None),
        (1, "something else", None),
    ],
)
def test_classify_connect(status, stderr, outcome):
    assert P.classify_connect(status, stderr) == outcome


def test_parse_version():
    assert G.parse_version("9.0.0") == (9, 0, 0)
    assert G.parse_version("7.2") == (7, 2, 0)
    assert G.parse_version("") == (0, 0, 0)


# --- the remote snippets, run for real on this machine ---------------------------


def sh(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)


def test_script_marker_and_disk_probe(tmp_path):
    directory = tmp_path / "it's a $(dir)"
    directory.mkdir()
    image = directory / "web.qcow2"
    image.write_text("x")
    image.chmod(0o640)
    made = sh(["sh", "-c", P.MARKER_SH, "marker", str(directory), P.MARKER_PREFIX], stdin="tok123")
    assert made.returncode == 0, made.stderr
    marker = made.stdout
    assert marker.startswith(f"{directory}/{P.MARKER_PREFIX}") and open(marker).read() == "tok123"
    me = ["env", "--"]  # "as QEMU's user" = as ourselves here
    probe = P.parse_disk_probe(sh(["sh", "-c", P.DISK_PROBE_SH, "p", marker, str(image), "1", "1", *me]).stdout)
    assert probe.marker == "tok123" and probe.exists
    assert probe.qemu_read is True and probe.qemu_write is True and probe.qemu_reaches_dir is True
    assert probe.perm.endswith(" 640") and probe.room_kib and probe.room_kib > 0
    sh(["rm", "-f", "--", marker])
    missing = P.parse_disk_probe(sh(["sh", "-c", P.DISK_PROBE_SH, "p", marker, str(tmp_path / "nope"), "0", "0", *me]).stdout)
    assert missing.marker == "-" and not missing.exists and missing.room_kib is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="runuser needs root")
def test_script_disk_probe_as_another_user(tmp_path):
    image = tmp_path / "secret.img"
    image.write_text("x")
    image.chmod(0o600)
    tmp_path.chmod(0o755)
    out = sh(["sh", "-c", P.DISK_PROBE_SH, "p", "", str(image), "1", "0", "runuser", "-u", "nobody", "--"]).stdout
    probe = P.parse_disk_probe(out)
    assert probe.qemu_read is False and probe.root_read is True
    assert P.can_open(probe, writable=True, identity=P.QemuIdentity("nobody", None, False)) == (
        False, f"{probe.perm}, as nobody")
    unknown = sh(["sh", "-c", P.DISK_PROBE_SH, "p", "", str(image), "0", "0", "runuser", "-u", "no-such-user-x", "--"])
    assert P.parse_disk_probe(unknown.stdout).qemu_read is None  # runuser complained: could not verify


def test_script_digest(tmp_path):
    f = tmp_path / "a.iso"
    f.write_bytes(b"abc")
    out = sh(["sh", "-c", P.DIGEST_SH, "d", str(f), "100"]).stdout.split()
    assert out == ["3", hashlib.sha256(b"abc").hexdigest()]
    assert sh(["sh", "-c", P.DIGEST_SH, "d", str(f), "2"]).stdout.split() == ["3", "-"]


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_script_listener_is_one_shot_and_returns_at_once():
    started = time.monotonic()
    made = sh(["timeout", "5", sys.executable, "-c", P.LISTENER_PY, "49152", "49215", "3"])
    assert made.returncode == 0, made.stderr
    assert time.monotonic() - started < 2.5  # the listener went to the background
    port = int(made.stdout)
    assert P.MIGRATION_PORT_MIN <= port <= P.MIGRATION_PORT_MAX
    first = sh(["timeout", "3", "bash", "-c", P.CONNECT_SH, "c", "127.0.0.1", str(port)])
    assert P.classify_connect(first.returncode, first.stderr) == "open"
    time.sleep(0.2)
    again = sh(["timeout", "3", "bash", "-c", P.CONNECT_SH, "c", "127.0.0.1", str(port)])
    assert P.classify_connect(again.returncode, again.stderr) == "refused"


def test_script_listener_skips_busy_ports():
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("0.0.0.0", 0))
    port = busy.getsockname()[1]
    busy.listen(1)
    try:
        made = sh(["timeout", "5", sys.executable, "-c", P.LISTENER_PY, str(port), str(port), "1"])
        assert made.returncode == 3 and made.stdout == ""
    finally:
        busy.close()
