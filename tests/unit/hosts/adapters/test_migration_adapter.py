"""hosts.adapters.migration: which libvirt call each function makes, how errors
are translated, and presence/XML on libvirt's ``test:///default`` driver.

Fake domain objects stand in where the test driver has no support (migration,
job stats, CPU comparison); errors are real ``libvirt.libvirtError`` objects
carrying the codes libvirt uses.
"""

from __future__ import annotations

import threading

import libvirt
import pytest

from hosts.adapters import migration as mg
from hosts.adapters.errors import DomainNotFound, HostUnreachable, LibvirtFailure, MigrationAborted

TEST_URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
UUID = "c7a5fdbd-cdaf-9455-926a-d65c16db1809"

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, 2, None, None, None, 0, 0)
    return exc


class FakeDomain:
    """Records calls; ``fail`` maps a method name to the libvirtError it raises."""

    def __init__(self, *, stats=None, completed=None, fail=None, state=(1, 1), persistent=1, blockjobs=None):
        self.calls: list[tuple] = []
        self.stats = stats if stats is not None else {"type": 0}
        self.completed = completed if completed is not None else {"type": 0}
        self.fail = fail or {}
        self._state = state
        self._persistent = persistent
        self.blockjobs = blockjobs or {}

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def migrateToURI3(self, uri, params, flags):
        self._call("migrateToURI3", uri, params, flags)

    def migrate3(self, dconn, params, flags):
        self._call("migrate3", dconn, params, flags)

    def jobStats(self, flags=0):
        self._call("jobStats", flags)
        return dict(self.completed if flags & libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED else self.stats)

    def abortJob(self):
        self._call("abortJob")

    def migrateSetMaxDowntime(self, ms, flags):
        self._call("migrateSetMaxDowntime", ms, flags)

    def migrateSetMaxSpeed(self, mibps, flags):
        self._call("migrateSetMaxSpeed", mibps, flags)

    def migrateStartPostCopy(self, flags):
        self._call("migrateStartPostCopy", flags)

    def state(self):
        self._call("state")
        return list(self._state)

    def isPersistent(self):
        return self._persistent

    def XMLDesc(self, flags):
        self._call("XMLDesc", flags)
        return "<domain/>"

    def blockJobInfo(self, target, flags):
        self._call("blockJobInfo", target)
        return self.blockjobs.get(target, {})

    def blockInfo(self, target, flags):
        self._call("blockInfo", target)
        return [10 * 2**30, 3 * 2**30, 4 * 2**30]


class FakeConn:
    def __init__(self, domain: FakeDomain | None = None, *, compare=None):
        self.domain = domain
        self.compare = compare
        self.compared: list[tuple] = []

    def lookupByUUIDString(self, uuid):
        if self.domain is None:
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, f"Domain not found: no domain with matching uuid '{uuid}'")
        return self.domain

    def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml, flags):
        self.compared.append((emulator, arch, machine, virttype, xml, flags))
        if isinstance(self.compare, Exception):
            raise self.compare
        return self.compare


P2P = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST


# --- migrate -----------------------------------------------------------------


def test_peer_to_peer_migrates_to_the_uri_with_params_and_flags():
    dom = FakeDomain()
    mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={"bandwidth": 100})
    assert dom.calls == [("migrateToURI3", "qemu+tcp://b/system", {"bandwidth": 100}, P2P)]


def test_managed_migration_uses_the_destination_connection():
    dom, dest = FakeDomain(), object()
    flags = libvirt.VIR_MIGRATE_LIVE
    mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="", flags=flags, params={}, dest_conn=dest)
    assert dom.calls == [("migrate3", dest, {}, flags)]


def test_managed_migration_without_destination_connection_is_refused_before_libvirt():
    dom = FakeDomain()
    with pytest.raises(ValueError, match="dest_conn"):
        mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="", flags=libvirt.VIR_MIGRATE_LIVE, params={})
    assert dom.calls == []


def test_aborted_migration_raises_migration_aborted():
    err = libvirt_error(libvirt.VIR_ERR_OPERATION_ABORTED, "operation aborted: migration out: canceled by client")
    dom = FakeDomain(fail={"migrateToURI3": err})
    with pytest.raises(MigrationAborted, match="canceled by client") as caught:
        mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="qemu+tcp://b/system?x=1", flags=P2P, params={})
    assert caught.value.code == 78
    assert isinstance(caught.value, LibvirtFailure)
    assert "x=1" not in caught.value.message  # the URI's query is not echoed


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        (libvirt.VIR_ERR_OPERATION_FAILED, "Unknown CPU model EPYC-Milan", LibvirtFailure),
        (libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", DomainNotFound),
        (libvirt.VIR_ERR_SYSTEM_ERROR, "unable to connect to server: Connection refused", HostUnreachable),
    ],
)
def test_other_migration_errors_are_translated(code, message, error):
    dom = FakeDomain(fail={"migrateToURI3": libvirt_error(code, message)})
    with pytest.raises(error) as caught:
        mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={})
    assert not isinstance(caught.value, MigrationAborted)
    assert message in caught.value.message


def test_a_broken_migration_stream_is_not_a_lost_connection():
    err = libvirt_error(
        libvirt.VIR_ERR_OPERATION_FAILED,
        "operation failed: job 'migration out' failed: Unable to write to socket: Broken pipe",
    )
    dom = FakeDomain(fail={"migrateToURI3": err})
    with pytest.raises(LibvirtFailure, match="Broken pipe") as caught:
        mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={})
    assert type(caught.value) is LibvirtFailure


def test_a_cancel_that_qemu_reports_as_failed_is_still_aborted():
    """QEMU 7.2 race: the stream breaks before QEMU sees the cancel, so libvirt says "failed"."""
    started, release = threading.Event(), threading.Event()
    err = libvirt_error(
        libvirt.VIR_ERR_OPERATION_FAILED,
        "operation failed: job 'migration out' failed: Unable to write to socket: Broken pipe",
    )

    class Migrating(FakeDomain):
        def migrateToURI3(self, uri, params, flags):
            started.set()
            release.wait(5)
            raise err

    dom = Migrating()
    outcome = []

    def run():
        try:
            mg.migrate(FakeConn(dom), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={})
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(5)
    mg.abort_job(FakeConn(dom), UUID.upper())  # from "another connection", any UUID spelling
    release.set()
    thread.join(5)
    (error,) = outcome
    assert isinstance(error, MigrationAborted) and "Broken pipe" in error.message
    assert "after the job was aborted" in error.message
    # The note does not outlive that migration.
    dom2 = FakeDomain(fail={"migrateToURI3": err})
    with pytest.raises(LibvirtFailure) as caught:
        mg.migrate(FakeConn(dom2), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={})
    assert not isinstance(caught.value, MigrationAborted)


def test_missing_guest_is_domain_not_found():
    with pytest.raises(DomainNotFound):
        mg.migrate(FakeConn(None), domain_uuid=UUID, dest_uri="qemu+tcp://b/system", flags=P2P, params={})


# --- job stats and steering ------------------------------------------------------


def test_job_stats_are_raw_and_empty_without_a_job():
    running = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "operation": 5, "memory_remaining": 42}
    assert mg.job_stats(FakeConn(FakeDomain(stats=running)), UUID) == running
    assert mg.job_stats(FakeConn(FakeDomain(stats={"type": 0})), UUID) == {}


def test_job_stats_of_a_guest_that_stopped_are_empty():
    err = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: domain is not running")
    assert mg.job_stats(FakeConn(FakeDomain(fail={"jobStats": err})), UUID) == {}


def test_completed_job_stats_ask_for_the_completed_job():
    done = {"type": libvirt.VIR_DOMAIN_JOB_COMPLETED, "downtime": 247, "setup_time": 1}
    dom = FakeDomain(completed=done)
    assert mg.completed_job_stats(FakeConn(dom), UUID) == done
    assert dom.calls == [("jobStats", libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)]
    assert mg.completed_job_stats(FakeConn(FakeDomain()), UUID) == {}


def test_steering_calls():
    dom = FakeDomain()
    conn = FakeConn(dom)
    mg.abort_job(conn, UUID)
    mg.set_max_downtime(conn, UUID, 750)
    mg.set_max_speed(conn, UUID, 200)
    mg.start_postcopy(conn, UUID)
    assert dom.calls == [
        ("abortJob",),
        ("migrateSetMaxDowntime", 750, 0),
        ("migrateSetMaxSpeed", 200, 0),
        ("migrateStartPostCopy", 0),
    ]


def test_abort_without_a_job_is_a_libvirt_failure():
    err = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: no job is active")
    with pytest.raises(LibvirtFailure, match="no job is active") as caught:
        mg.abort_job(FakeConn(FakeDomain(fail={"abortJob": err})), UUID)
    assert not isinstance(caught.value, MigrationAborted)


def test_job_operation_names():
    assert mg.job_operation({"type": 2, "operation": 5}) == "outgoing migration"
    assert mg.job_operation({"type": 1, "operation": 9}) == "backup"
    assert mg.job_operation({"type": 3, "operation": 5}) is None  # finished
    assert mg.job_operation({}) is None


def test_current_operation_sees_domain_and_block_jobs():
    migrating = FakeDomain(stats={"type": 2, "operation": 5})
    assert mg.current_operation(FakeConn(migrating), UUID, disk_targets=["vda"]) == "outgoing migration"
    copying = FakeDomain(blockjobs={"vdb": {"type": 2, "cur": 1, "end": 10}})
    assert mg.current_operation(FakeConn(copying), UUID, disk_targets=["vda", "vdb"]) == "block copy on vdb"
    assert mg.current_operation(FakeConn(FakeDomain()), UUID, disk_targets=["vda"]) is None


def test_block_size():
    size = mg.block_size(FakeConn(FakeDomain()), UUID, "vda")
    assert (size.capacity, size.allocation, size.physical) == (10 * 2**30, 3 * 2**30, 4 * 2**30)


# --- presence and XML ------------------------------------------------------------


def test_presence_on_the_test_driver():
    conn = libvirt.open(TEST_URI)
    try:
        found = mg.domain_presence(conn, TEST_DOMAIN_UUID)
        assert found == mg.PresenceInfo(exists=True, state="running", reason="unknown", job_active=False, persistent=True)
        absent = mg.domain_presence(conn, "00000000-0000-0000-0000-000000000001")
        assert absent == mg.PresenceInfo(exists=False, state=None, reason=None, job_active=False, persistent=False)
        xml = mg.domain_xml(conn, TEST_DOMAIN_UUID)
        assert f"<uuid>{TEST_DOMAIN_UUID}</uuid>" in xml
    finally:
        conn.close()


def test_presence_counts_the_destination_refusing_stats_as_a_job():
    err = libvirt_error(
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        "Operation not supported: migration statistics are available only on the source host",
    )
    incoming = FakeDomain(state=(3, 2), persistent=0, fail={"jobStats": err})  # paused, migrating
    presence = mg.domain_presence(FakeConn(incoming), UUID)
    assert presence == mg.PresenceInfo(exists=True, state="paused", reason="migrating", job_active=True, persistent=False)
    outgoing = FakeDomain(stats={"type": 2, "operation": 5})
    assert mg.domain_presence(FakeConn(outgoing), UUID).job_active is True


def test_presence_on_a_lost_connection_raises():
    dom = FakeDomain(fail={"state": libvirt_error(libvirt.VIR_ERR_RPC, "client socket is closed")})
    with pytest.raises(HostUnreachable):
        mg.domain_presence(FakeConn(dom), UUID)


def test_domain_xml_flags():
    dom = FakeDomain()
    mg.domain_xml(FakeConn(dom), UUID)
    mg.domain_xml(FakeConn(dom), UUID, secure=True, migratable=False)
    assert [c[1] for c in dom.calls] == [libvirt.VIR_DOMAIN_XML_MIGRATABLE, libvirt.VIR_DOMAIN_XML_SECURE]


# --- CPU comparison --------------------------------------------------------------

CUSTOM = """<domain type='kvm'><name>g</name><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
<cpu mode='custom' match='exact' check='partial'><model fallback='forbid'>EPYC-Milan</model>
<feature policy='require' name='x2apic'/></cpu></domain>"""


@pytest.mark.parametrize(
    ("result", "word"),
    [
        (libvirt.VIR_CPU_COMPARE_IDENTICAL, "identical"),
        (libvirt.VIR_CPU_COMPARE_SUPERSET, "superset"),
        (libvirt.VIR_CPU_COMPARE_INCOMPATIBLE, "incompatible"),
    ],
)
def test_compare_guest_cpu_results(result, word):
    conn = FakeConn(compare=result)
    got = mg.compare_guest_cpu(conn, guest_xml=CUSTOM, arch="x86_64", domain_type="kvm", machine="pc-q35-7.2")
    assert got == word
    (emulator, arch, machine, virttype, xml, flags), = conn.compared
    assert (emulator, arch, machine, virttype, flags) == (None, "x86_64", "pc-q35-7.2", "kvm", 0)
    assert xml.startswith("<cpu") and "EPYC-Milan" in xml and "x2apic" in xml and "<name>" not in xml


def test_compare_guest_cpu_reports_libvirts_message():
    conn = FakeConn(compare=libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: Unknown CPU model EPYC-Milan"))
    got = mg.compare_guest_cpu(conn, guest_xml=CUSTOM, arch="x86_64", domain_type="kvm", machine="pc-q35-7.2")
    assert got == "error: internal error: Unknown CPU model EPYC-Milan"


def test_compare_guest_cpu_raises_when_the_destination_is_gone():
    conn = FakeConn(compare=libvirt_error(libvirt.VIR_ERR_RPC, "client socket is closed"))
    with pytest.raises(HostUnreachable):
        mg.compare_guest_cpu(conn, guest_xml=CUSTOM, arch="x86_64", domain_type="kvm", machine=None)


@pytest.mark.parametrize(
    "cpu",
    [
        "",
        "<cpu mode='host-passthrough' check='none' migratable='on'/>",
        "<cpu mode='maximum'/>",
        "<cpu mode='host-model' check='partial'/>",
    ],
)
def test_nothing_to_compare_is_unknown(cpu):
    conn = FakeConn(compare=libvirt.VIR_CPU_COMPARE_IDENTICAL)
    xml = f"<domain type='kvm'><name>g</name>{cpu}</domain>"
    assert mg.compare_guest_cpu(conn, guest_xml=xml, arch="x86_64", domain_type="kvm", machine=None) == "unknown"
    assert conn.compared == []


def test_expanded_host_model_is_compared():
    conn = FakeConn(compare=libvirt.VIR_CPU_COMPARE_SUPERSET)
    xml = "<domain><cpu mode='host-model'><model fallback='forbid'>Skylake-Client-IBRS</model></cpu></domain>"
    assert mg.compare_guest_cpu(conn, guest_xml=xml, arch="x86_64", domain_type="kvm", machine=None) == "superset"
