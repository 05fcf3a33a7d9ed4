"""hosts.adapters.libvirt: pure parsing and naming, plus the real binding on
libvirt's built-in ``test:///default`` driver (no daemon, no hypervisor)."""

from __future__ import annotations

import os
import queue
import shlex
import stat
import subprocess
from urllib.parse import parse_qs, urlsplit

import libvirt
import pytest

from hosts.adapters import libvirt as lv
from hosts.adapters.errors import (
    AdapterError,
    DomainNotFound,
    HostAuthError,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
    LibvirtFailure,
)
from hosts.adapters.ssh import HostKeyInfo, SSHTarget, generate_keypair

TEST_URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the "test" domain of that driver

CAPABILITIES_XML = """
<capabilities>
  <host>
    <uuid>2e915f4d-cc2c-5299-bce7-4a77ccfe15cd</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Skylake-Client-IBRS</model>
      <vendor>Intel</vendor>
      <microcode version='240'/>
      <topology sockets='1' dies='1' cores='4' threads='2'/>
      <feature name='ds'/>
      <feature name='vmx'/>
      <feature name='pdcm'/>
      <pages unit='KiB' size='4'/>
    </cpu>
    <migration_features><live/><uri_transports><uri_transport>tcp</uri_transport></uri_transports></migration_features>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <domain type='qemu'/>
    </arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine maxCpus='288'>pc-q35-7.2</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'>
        <machine maxCpus='710'>pc-q35-7.2-kvm-only</machine>
      </domain>
    </arch>
  </guest>
</capabilities>
"""

DOMAIN_XML = """
<domain type='kvm' id='7'>
  <name>web-01</name>
  <uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>
  <memory unit='GiB'>4</memory>
  <currentMemory unit='MiB'>2048</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <cpu mode='custom' match='exact' check='partial'>
    <model fallback='forbid'>Skylake-Client</model>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/sr0'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/web-01-data'>
        <host name='ceph-mon1' port='6789'/>
      </source>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='default' volume='web-01-logs.qcow2'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:01'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:02'/>
      <source bridge='br0'/>
      <model type='e1000e'/>
    </interface>
    <interface type='direct'>
      <source dev='eno1' mode='bridge'/>
    </interface>
  </devices>
</domain>
"""


@pytest.fixture
def conn():
    with lv.open_connection(TEST_URI) as connection:
        yield connection


# --- names for states, reasons and events ---------------------------------


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, ("running", "booted")),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, ("running", "migrated")),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED, ("running", "unpaused")),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, ("paused", "user")),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, ("paused", "migrating")),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR, ("paused", "io_error")),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, ("paused", "postcopy_failed")),
        (libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTDOWN_USER, ("shutdown", "user")),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, ("shutoff", "shutdown")),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, ("shutoff", "destroyed")),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED, ("shutoff", "migrated")),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED, ("shutoff", "failed")),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DAEMON, ("shutoff", "daemon")),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, ("crashed", "panicked")),
        (libvirt.VIR_DOMAIN_BLOCKED, 0, ("blocked", "unknown")),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, ("pmsuspended", "unknown")),
        (libvirt.VIR_DOMAIN_NOSTATE, 0, ("nostate", "unknown")),
        (libvirt.VIR_DOMAIN_RUNNING, 999, ("running", "unknown")),  # a reason newer than us
        (42, 1, ("nostate", "unknown")),  # a state newer than us
    ],
)
def test_state_and_reason_names(state, reason, expected):
    assert (lv.state_name(state), lv.reason_name(state, reason)) == expected


def test_every_reason_constant_of_the_binding_has_a_name():
    prefixes = {
        "VIR_DOMAIN_RUNNING_": libvirt.VIR_DOMAIN_RUNNING,
        "VIR_DOMAIN_PAUSED_": libvirt.VIR_DOMAIN_PAUSED,
        "VIR_DOMAIN_SHUTOFF_": libvirt.VIR_DOMAIN_SHUTOFF,
        "VIR_DOMAIN_CRASHED_": libvirt.VIR_DOMAIN_CRASHED,
        # (VIR_DOMAIN_SHUTDOWN_* are mostly shutdownFlags() flags, not reasons)
    }
    checked = 0
    for name in dir(libvirt):
        for prefix, state in prefixes.items():
            if name.startswith(prefix) and not name.endswith(("_UNKNOWN", "_LAST")):
                checked += 1
                assert lv.reason_name(state, getattr(libvirt, name)) != "unknown", name
    assert checked > 25


@pytest.mark.parametrize(
    ("event", "detail", "expected"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED, ("started", "booted")),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED, ("started", "migrated")),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, ("suspended", "paused")),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED, ("suspended", "migrated")),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, ("resumed", "unpaused")),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED, ("resumed", "migrated")),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, ("stopped", "destroyed")),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED, ("stopped", "migrated")),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED, ("stopped", "failed")),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED, ("undefined", "removed")),
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED, ("defined", "added")),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST, ("shutdown", "guest")),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED, ("crashed", "panicked")),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, 99, ("stopped", "unknown")),
        (99, 0, ("unknown", "unknown")),
    ],
)
def test_event_names(event, detail, expected):
    assert lv.event_names(event, detail) == expected


@pytest.mark.parametrize(("number", "text"), [(9000000, "9.0.0"), (7002022, "7.2.22"), (10010001, "10.10.1")])
def test_format_version(number, text):
    assert lv.format_version(number) == text


# --- XML parsing ----------------------------------------------------------


def test_parse_capabilities():
    caps = lv.parse_capabilities(CAPABILITIES_XML)
    assert caps["host_uuid"] == "2e915f4d-cc2c-5299-bce7-4a77ccfe15cd"
    assert (caps["arch"], caps["cpu_vendor"], caps["cpu_model"]) == ("x86_64", "Intel", "Skylake-Client-IBRS")
    assert caps["cpu_features"] == ["ds", "vmx", "pdcm"]
    # only the guests of the host's own architecture count
    assert caps["domain_types"] == ["qemu", "kvm"]
    assert caps["machine_types"] == ["pc-i440fx-7.2", "pc", "pc-q35-7.2", "q35", "pc-q35-7.2-kvm-only"]


def test_parse_capabilities_tolerates_a_bare_document():
    caps = lv.parse_capabilities("<capabilities><host/></capabilities>")
    assert caps == {
        "host_uuid": "", "arch": "", "cpu_vendor": "", "cpu_model": "",
        "cpu_features": [], "domain_types": [], "machine_types": [],
    }


def test_parse_domain_xml():
    info = lv.parse_domain_xml(
        DOMAIN_XML,
        state=libvirt.VIR_DOMAIN_PAUSED,
        reason=libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
        persistent=True,
        autostart=True,
    )
    assert (info.name, info.uuid) == ("web-01", "c7a5fdbd-cdaf-9455-926a-d65c16db1809")
    assert (info.state, info.reason) == ("paused", "migrating")
    assert info.vcpus == 2
    assert (info.memory_kib, info.max_memory_kib) == (2048 * 1024, 4 * 1024 * 1024)
    assert (info.arch, info.domain_type, info.machine) == ("x86_64", "kvm", "pc-q35-7.2")
    assert (info.cpu_mode, info.cpu_model) == ("custom", "Skylake-Client")
    assert info.persistent and info.autostart
    assert info.id == 7  # from the XML when not given

    disks = {d.target: d for d in info.disks}
    assert disks["vda"] == lv.DiskInfo(
        target="vda", device="disk", source_type="file",
        source="/var/lib/libvirt/images/web-01.qcow2", protocol="", format="qcow2",
        readonly=False, shareable=False,
    )
    assert (disks["sda"].device, disks["sda"].source, disks["sda"].readonly) == ("cdrom", "/dev/sr0", True)
    assert (disks["vdb"].protocol, disks["vdb"].source, disks["vdb"].shareable) == ("rbd", "pool/web-01-data", True)
    assert (disks["vdc"].source_type, disks["vdc"].source) == ("volume", "default/web-01-logs.qcow2")
    assert (disks["sdb"].source, disks["sdb"].format) == ("", "")  # empty cdrom tray

    assert info.nics == [
        lv.NicInfo(mac="52:54:00:aa:bb:01", type="network", source="default", model="virtio"),
        lv.NicInfo(mac="52:54:00:aa:bb:02", type="bridge", source="br0", model="e1000e"),
        lv.NicInfo(mac="", type="direct", source="eno1", model=""),
    ]


def test_parse_domain_xml_tolerates_missing_elements():
    xml = "<domain type='qemu'><name>bare</name><uuid>u-1</uuid></domain>"
    info = lv.parse_domain_xml(xml, state=libvirt.VIR_DOMAIN_SHUTOFF, reason=libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED)
    assert (info.name, info.state, info.reason) == ("bare", "shutoff", "destroyed")
    assert (info.vcpus, info.memory_kib, info.arch, info.machine) == (0, 0, "", "")
    assert (info.cpu_mode, info.cpu_model, info.id) == (None, None, None)
    assert info.disks == [] and info.nics == []


@pytest.mark.parametrize(
    ("cpu_xml", "expected"),
    [
        ("<cpu mode='host-passthrough' check='none'/>", ("host-passthrough", None)),
        ("<cpu mode='host-model'><model fallback='allow'/></cpu>", ("host-model", None)),
        ("<cpu><model>Haswell</model></cpu>", ("custom", "Haswell")),
        ("<cpu><topology sockets='1' cores='2' threads='1'/></cpu>", (None, None)),
    ],
)
def test_cpu_mode_and_model(cpu_xml, expected):
    info = lv.parse_domain_xml(f"<domain type='kvm'><name>x</name><uuid>u</uuid>{cpu_xml}</domain>")
    assert (info.cpu_mode, info.cpu_model) == expected


# --- the real binding on the test driver -----------------------------------


def test_host_facts_from_the_test_driver(conn):
    facts = lv.get_host_facts(conn)
    assert facts.hypervisor == "TEST"
    assert facts.arch == "i686"
    assert facts.cpus == 16
    assert facts.memory_total_kib == 3 * 1024 * 1024  # getInfo() fallback: no node memory stats
    assert 0 < facts.memory_free_kib <= facts.memory_total_kib
    assert facts.domain_types == ["test"]
    assert facts.libvirt_version == lv.format_version(libvirt.getVersion())
    assert facts.hostname


def test_list_domains_from_the_test_driver(conn):
    (test,) = lv.list_domains(conn)
    assert (test.name, test.uuid) == ("test", TEST_DOMAIN_UUID)
    assert (test.state, test.reason) == ("running", "unknown")  # the driver gives no reason
    assert test.persistent and test.id == 1
    assert [d.source for d in test.disks] == ["/guest/diskimage1"]
    assert [n.mac for n in test.nics] == ["aa:bb:cc:dd:ee:ff"]


def test_actions_change_the_domain_state(conn):
    lv.suspend_domain(conn, TEST_DOMAIN_UUID)
    assert (lv.get_domain(conn, TEST_DOMAIN_UUID).state, lv.get_domain(conn, TEST_DOMAIN_UUID).reason) == (
        "paused", "user",
    )
    lv.resume_domain(conn, TEST_DOMAIN_UUID)
    lv.destroy_domain(conn, TEST_DOMAIN_UUID)
    stopped = lv.get_domain(conn, TEST_DOMAIN_UUID)
    assert (stopped.state, stopped.reason, stopped.id) == ("shutoff", "destroyed", None)
    lv.start_domain(conn, TEST_DOMAIN_UUID)
    assert lv.get_domain(conn, TEST_DOMAIN_UUID).state == "running"
    lv.shutdown_domain(conn, TEST_DOMAIN_UUID)
    assert lv.get_domain(conn, TEST_DOMAIN_UUID).state == "shutoff"


def test_starting_a_running_domain_is_a_libvirt_failure(conn):
    with pytest.raises(LibvirtFailure) as exc:
        lv.start_domain(conn, TEST_DOMAIN_UUID)
    assert isinstance(exc.value.code, int) and exc.value.code != libvirt.VIR_ERR_NO_DOMAIN
    assert type(exc.value) is LibvirtFailure
    assert "already running" in exc.value.message


@pytest.mark.parametrize("action", [lv.start_domain, lv.shutdown_domain, lv.destroy_domain, lv.get_domain])
def test_unknown_uuid_is_domain_not_found(conn, action):
    with pytest.raises(DomainNotFound) as exc:
        action(conn, "00000000-0000-0000-0000-000000000000")
    assert exc.value.code == libvirt.VIR_ERR_NO_DOMAIN


def test_open_connection_always_closes():
    with pytest.raises(RuntimeError):
        with lv.open_connection(TEST_URI) as connection:
            raise RuntimeError("boom")
    with pytest.raises(libvirt.libvirtError):
        connection.getHostname()  # closed


def test_unreachable_daemon_is_host_unreachable(free_port):
    with pytest.raises(HostUnreachable) as exc:
        with lv.open_connection(f"qemu+tcp://127.0.0.1:{free_port}/system"):
            pass
    assert exc.value.code == libvirt.VIR_ERR_SYSTEM_ERROR


def test_event_watcher_delivers_lifecycle_events():
    events: queue.Queue = queue.Queue()
    with lv.EventWatcher() as watcher, lv.open_connection(TEST_URI) as conn:
        watcher.watch(TEST_URI, lambda uri, ev: events.put((uri, ev)), lambda uri, reason: None)
        assert watcher.watching() == [TEST_URI]
        lv.suspend_domain(conn, TEST_DOMAIN_UUID)
        lv.resume_domain(conn, TEST_DOMAIN_UUID)
        got = [events.get(timeout=5), events.get(timeout=5)]
    assert got == [
        (TEST_URI, lv.DomainEvent(TEST_DOMAIN_UUID, "test", "suspended", "paused")),
        (TEST_URI, lv.DomainEvent(TEST_DOMAIN_UUID, "test", "resumed", "unpaused")),
    ]
    assert watcher.watching() == []


def test_event_watcher_unwatch_stops_events_and_survives_a_failing_callback():
    events: queue.Queue = queue.Queue()

    def on_event(uri, ev):
        events.put(ev)
        raise ValueError("a buggy consumer must not kill the event loop")

    watcher = lv.EventWatcher()
    with lv.open_connection(TEST_URI) as conn:
        watcher.watch(TEST_URI, on_event, lambda uri, reason: None)
        lv.suspend_domain(conn, TEST_DOMAIN_UUID)
        assert events.get(timeout=5).event == "suspended"
        lv.resume_domain(conn, TEST_DOMAIN_UUID)
        assert events.get(timeout=5).event == "resumed"
        watcher.unwatch(TEST_URI)
        watcher.unwatch(TEST_URI)  # idempotent
        lv.suspend_domain(conn, TEST_DOMAIN_UUID)
        lv.resume_domain(conn, TEST_DOMAIN_UUID)
        with pytest.raises(queue.Empty):
            events.get(timeout=1)


# --- error translation ------------------------------------------------------


class _FakeLibvirtError(libvirt.libvirtError):
    def __init__(self, code: int, message: str):
        Exception.__init__(self, message)
        self._code, self._message = code, message

    def get_error_code(self):
        return self._code

    def get_error_message(self):
        return self._message


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", DomainNotFound),
        (libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: client socket is closed", HostUnreachable),
        (libvirt.VIR_ERR_SYSTEM_ERROR, "Cannot recv data: Connection reset by peer", HostUnreachable),
        (libvirt.VIR_ERR_RPC, "RPC failed", HostUnreachable),
        (libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running", LibvirtFailure),
        (libvirt.VIR_ERR_OPERATION_FAILED, "migration failed", LibvirtFailure),
    ],
)
def test_translate_error(code, message, expected):
    err = lv.translate_error(_FakeLibvirtError(code, message), action="doing it")
    assert type(err) is expected
    assert err.code == code
    assert err.message.startswith("doing it") or "doing it" in err.message
    assert err.hint


# --- qemu+ssh: host key pinned through the OpenSSH wrapper ------------------


def _pinned_target(keypair, host_key: HostKeyInfo, port: int = 22) -> SSHTarget:
    return SSHTarget(
        address="127.0.0.1", port=port, private_key_pem=keypair[0],
        pinned_host_key=host_key.openssh, connect_timeout=5,
    )


def test_prepare_uri_points_libvirt_at_a_wrapper_that_allows_only_the_pin(tmp_path, client_keypair):
    host_key = HostKeyInfo.from_openssh(generate_keypair()[1])
    target = _pinned_target(client_keypair, host_key)
    prepared = lv._prepare_uri(
        "qemu+ssh://admin@hv1.example:2222/system?known_hosts_verify=ignore&no_verify=1&mode=direct",
        target, str(tmp_path),
    )
    try:
        parts = urlsplit(prepared.uri)
        params = parse_qs(parts.query)
        assert (parts.scheme, parts.netloc, parts.path) == ("qemu+ssh", "admin@hv1.example:2222", "/system")
        # the caller's weakening parameters are gone, harmless ones stay
        assert set(params) == {"command", "mode"}
        wrapper = params["command"][0]
        workdir = os.path.dirname(wrapper)
        assert os.path.dirname(workdir) == str(tmp_path)
        assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(wrapper).st_mode) == 0o700
        for name in ("id_portal", "known_hosts"):
            assert stat.S_IMODE(os.stat(os.path.join(workdir, name)).st_mode) == 0o600
        with open(os.path.join(workdir, "known_hosts")) as f:
            assert f.read() == f"{lv.PINNED_HOST_ALIAS} {host_key.openssh}\n"
        with open(os.path.join(workdir, "id_portal")) as f:
            assert f.read().strip() == client_keypair[0].strip()
        with open(wrapper) as f:
            script = f.read()
        exec_line = script.splitlines()[1]
        argv = shlex.split(exec_line)
        assert argv[0] == "exec" and argv[-2:] == ["$@", "2>>" + os.path.join(workdir, "ssh.log")]
        options = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
        assert options["StrictHostKeyChecking"] == "yes"
        assert options["HostKeyAlgorithms"] == "ssh-ed25519"
        assert options["HostKeyAlias"] == lv.PINNED_HOST_ALIAS
        assert options["UserKnownHostsFile"] == os.path.join(workdir, "known_hosts")
        assert options["GlobalKnownHostsFile"] == "/dev/null"
        assert options["IdentityFile"] == os.path.join(workdir, "id_portal")
        assert options["BatchMode"] == "yes"
        assert argv[1:4] == [argv[1], "-F", "/dev/null"]
    finally:
        lv.shutil.rmtree(prepared.workdir)


def test_prepare_uri_leaves_tcp_alone():
    assert lv._prepare_uri("qemu+tcp://10.0.0.1/system", None, None).uri == "qemu+tcp://10.0.0.1/system"


def test_ssh_uri_needs_a_target_and_a_private_key(client_keypair):
    with pytest.raises(AdapterError):
        lv._prepare_uri("qemu+ssh://root@hv1/system", None, None)
    host_key = HostKeyInfo.from_openssh(generate_keypair()[1])
    no_key = SSHTarget(address="hv1", pinned_host_key=host_key.openssh, password="pw")
    with pytest.raises(HostAuthError):
        lv._prepare_uri("qemu+ssh://root@hv1/system", no_key, None)


def test_ssh_uri_without_a_pin_reports_the_hosts_key(ssh_server, client_keypair):
    target = SSHTarget(address="127.0.0.1", port=ssh_server.port, private_key_pem=client_keypair[0])
    with pytest.raises(HostKeyUnknown) as exc:
        lv.connect(f"qemu+ssh://root@127.0.0.1:{ssh_server.port}/system", ssh_target=target)
    assert exc.value.fingerprint == ssh_server.host_key.fingerprint


@pytest.mark.skipif(not lv.shutil.which("ssh"), reason="needs the OpenSSH client")
def test_libvirt_over_ssh_accepts_only_the_pinned_key(ssh_server, client_keypair, tmp_path):
    """Real libvirt + OpenSSH against the in-process server, which records the
    command it is asked to run and fails it (no libvirt daemon there), so the
    open fails after login. With the right pin it gets that far; with a wrong
    one ssh stops before offering any credentials."""
    ssh_server.mode = "reject"
    uri = f"qemu+ssh://root@127.0.0.1:{ssh_server.port}/system"

    with pytest.raises(AdapterError) as after_login:
        lv.connect(uri, ssh_target=_pinned_target(client_keypair, ssh_server.host_key, ssh_server.port),
                   known_hosts_dir=str(tmp_path))
    assert not isinstance(after_login.value, (HostKeyMismatch, HostAuthError))
    assert ssh_server.log.auth_attempts[-1] == ("root", "publickey")
    assert any("virt-ssh-helper" in c or "libvirt-sock" in c for c in ssh_server.log.commands)
    assert list(tmp_path.iterdir()) == []  # key, known_hosts and wrapper removed

    attempts_before = len(ssh_server.log.auth_attempts)
    wrong = HostKeyInfo.from_openssh(generate_keypair()[1])
    with pytest.raises(HostKeyMismatch) as mismatch:
        lv.connect(uri, ssh_target=_pinned_target(client_keypair, wrong, ssh_server.port),
                   known_hosts_dir=str(tmp_path))
    assert mismatch.value.expected_fingerprint == wrong.fingerprint
    assert mismatch.value.actual_fingerprint == ssh_server.host_key.fingerprint
    assert len(ssh_server.log.auth_attempts) == attempts_before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not lv.shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_wrapper_known_hosts_is_readable_by_openssh(tmp_path, client_keypair):
    host_key = HostKeyInfo.from_openssh(generate_keypair()[1])
    prepared = lv._prepare_uri("qemu+ssh://root@hv1/system", _pinned_target(client_keypair, host_key), str(tmp_path))
    try:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-F", lv.PINNED_HOST_ALIAS, "-f", os.path.join(prepared.workdir, "known_hosts")],
            capture_output=True, text=True, check=True,
        ).stdout
        assert host_key.fingerprint in out
    finally:
        lv.shutil.rmtree(prepared.workdir)


@pytest.mark.parametrize("metadata, expected", [
    ("", lv.PlacementTags()),
    ('<vmportal:placement xmlns:vmportal="urn:vmportal:placement:1" pinned="yes"/>', lv.PlacementTags(pinned=True)),
    ('<p:placement xmlns:p="urn:vmportal:placement:1" pinned="no" pin-to=" kvm-b " anti-affinity="web, db,,web"/>',
     lv.PlacementTags(pin_to="kvm-b", anti_affinity=("db", "web"))),
    ('<placement pinned="yes"/>', lv.PlacementTags()),  # not our namespace: somebody else's tag
    ('<vmportal:placement xmlns:vmportal="urn:vmportal:placement:1" pin-to="' + "x" * 300 + '"/>',
     lv.PlacementTags(pin_to="x" * 63)),
])
def test_placement_tags_from_metadata(metadata, expected):
    xml = f"<domain type='kvm'><name>g</name><uuid>u</uuid><metadata>{metadata}</metadata></domain>"
    assert lv.parse_domain_xml(xml).placement == expected


def test_host_devices_are_counted():
    xml = ("<domain type='kvm'><name>g</name><uuid>u</uuid><devices>"
           "<hostdev mode='subsystem' type='pci'/><hostdev mode='subsystem' type='usb'/></devices></domain>")
    assert lv.parse_domain_xml(xml).host_devices == 2
