"""A fake world of libvirt hosts for the migration runner, at the adapter boundary.

It stands in for ``endpoints.connect`` / ``endpoints.gather_pair`` and the
``hosts.adapters.migration`` module: same signatures, same dataclasses and errors
(MigrationAborted, LibvirtFailure, HostUnreachable), so services, runner and reconciler
run for real above it. ``migrate`` plays a scripted job in steps, moving the guest at the
end, and honours abort, post-copy and injected failures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from types import SimpleNamespace

from hosts.adapters.errors import HostUnreachable, LibvirtFailure, MigrationAborted
from hosts.adapters.migration import PresenceInfo
from hosts.choices import HostAuthMethodChoices, HostStatusChoices, VMStateChoices
from hosts.models import Host, VirtualMachine
from migrations_app.facts import DiskFact, GuestSide, HostSide, PairFacts

MIB = 1024 * 1024


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake"


def make_host(name: str, **changes) -> Host:
    fields = dict(
        name=name, address=f"192.0.2.{10 + Host.objects.count()}", auth_method=HostAuthMethodChoices.PORTAL_KEY,
        libvirt_uri=f"qemu+tcp://{name}/system", host_key=HOST_KEY, host_key_fingerprint="SHA256:fake",
        status=HostStatusChoices.REACHABLE,
    )
    fields.update(changes)
    return Host.objects.create(**fields)


def make_vm(host: Host, name: str = "web-1", **changes) -> VirtualMachine:
    fields = dict(host=host, uuid=uuid.uuid4(), name=name, state=VMStateChoices.RUNNING, vcpus=1, memory_kib=65536,
                  domain_type="qemu", arch="x86_64", machine="pc-i440fx-7.2")
    fields.update(changes)
    return VirtualMachine.objects.create(**fields)


@dataclasses.dataclass
class FakeDomain:
    uuid: str
    name: str
    state: str = "running"
    reason: str = "booted"
    persistent: bool = True


@dataclasses.dataclass
class FakeHost:
    name: str
    domains: dict = dataclasses.field(default_factory=dict)
    reachable: bool = True
    completed: dict = dataclasses.field(default_factory=dict)
    job_active: set = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class FakeConn:
    host: FakeHost


@dataclasses.dataclass
class FakeJob:
    uuid: str
    source: str
    stats: dict = dataclasses.field(default_factory=dict)
    abort: bool = False
    postcopy: bool = False
    running: bool = True


def host_side(name: str, **changes) -> HostSide:
    base = HostSide(
        name=name, hostname=name, host_uuid=f"uuid-{name}", arch="x86_64", hypervisor="QEMU",
        hypervisor_version=(7, 2, 0), libvirt_version=(9, 0, 0), domain_types=frozenset({"qemu"}),
        machine_types=frozenset({"pc-i440fx-7.2", "pc"}), memory_free_kib=4 * 1024 * 1024,
        memory_total_kib=8 * 1024 * 1024, cpus=4, running_vcpus=1, in_maintenance=False, reachable=True,
        address=f"192.0.2.{sum(map(ord, name)) % 200 + 1}",
    )
    return dataclasses.replace(base, **changes)


class FakeMigrationWorld:
    def __init__(self, *, steps: int = 8, step_s: float = 0.02):
        self.hosts: dict[str, FakeHost] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple] = []
        self.steps = steps
        self.step_s = step_s
        self.fail_with: Exception | None = None  # raised by migrate at the end, guest stays put
        self.gather_error: Exception | None = None
        self.pair_changes: dict = {}
        self.destination_changes: dict = {}
        self.guest_changes: dict = {}
        self.on_step = None  # callable(step) run inside migrate's thread (no database there)
        self.step = -1  # how far the current migrate call got
        self.pending_actions: list = []  # (step, callable) run in the job's thread, see when()
        self.dirty = False  # a guest that never converges: runs until aborted or forced
        self.lock = threading.Lock()

    # -- set-up
    def add_host(self, name: str, *domains: FakeDomain) -> FakeHost:
        host = FakeHost(name=name, domains={d.uuid: d for d in domains})
        self.hosts[name] = host
        return host

    def where(self, uuid: str) -> dict[str, str]:
        return {h.name: h.domains[uuid].state for h in self.hosts.values() if uuid in h.domains}

    def when(self, step: int, action) -> None:
        """Run action() in the job's thread (where the database is) once migrate reached ``step``."""
        self.pending_actions.append((step, action))

    def run_due_actions(self) -> None:
        due = [(s, a) for s, a in self.pending_actions if self.step >= s]
        for item in due:
            self.pending_actions.remove(item)
            item[1]()

    # -- endpoints
    @contextlib.contextmanager
    def connect(self, host_row):
        host = self.hosts[host_row.name]
        if not host.reachable:
            raise HostUnreachable(f"Cannot connect to libvirt at {host_row.name}: Connection refused")
        yield FakeConn(host)

    def gather_pair(self, *, source, destination, guest_uuid, options):
        self.calls.append(("gather", source.name, destination.name))
        if self.gather_error is not None:
            raise self.gather_error
        domain = self.hosts[source.name].domains[guest_uuid]
        guest = GuestSide(
            name=domain.name, uuid=guest_uuid, state=domain.state, arch="x86_64", domain_type="qemu",
            machine="pc-i440fx-7.2", vcpus=1, memory_kib=65536, cpu_mode="custom", cpu_model="qemu64",
            disks=(DiskFact(target="vda", source=f"/srv/{domain.name}.img", readonly=True, shareable=False,
                            network=False, same_file_on_destination=True, destination_can_open=True),),
            active_operation=None, persistent=domain.persistent,
        )
        guest = dataclasses.replace(guest, **self.guest_changes)
        pair = PairFacts(
            source=host_side(source.name),
            destination=host_side(destination.name, in_maintenance=destination.in_maintenance,
                                  **self.destination_changes),
            source_resolves_destination=["192.0.2.2"], destination_resolves_source=["192.0.2.1"],
            migration_address_reachable=True, ports_reachable=True, destination_has_domain_name=False,
            destination_has_domain_uuid=False, cpu_compare="identical", destination_pool_room_kib=None,
        )
        return dataclasses.replace(pair, **self.pair_changes), guest

    # -- hosts.adapters.migration
    def migrate(self, src_conn, *, domain_uuid, dest_uri, flags, params, dest_conn=None):
        self.calls.append(("migrate", src_conn.host.name, dest_uri, flags, dict(params), dest_conn is not None))
        job = FakeJob(uuid=domain_uuid, source=src_conn.host.name)
        self.jobs[domain_uuid] = job
        total = 64 * MIB
        step = 0
        try:
            while step < self.steps or self.dirty:
                if job.abort:
                    src_conn.host.completed[domain_uuid] = {"type": 5, "time_elapsed": step * 20}
                    raise MigrationAborted(
                        f"migrating guest {domain_uuid} to {dest_uri}: operation aborted: migration out: canceled by client"
                    )
                if job.postcopy:
                    break
                remaining = total if self.dirty else max(0, total - (step + 1) * total // self.steps)
                job.stats = {
                    "type": 2, "time_elapsed": step * 20, "data_total": total, "data_remaining": remaining,
                    "data_processed": total - remaining + step * MIB, "memory_total": total,
                    "memory_remaining": remaining, "memory_processed": total - remaining,
                    "memory_iteration": step // 3 + 1, "memory_bps": 30 * MIB, "memory_dirty_rate": 100 if not self.dirty else 20000,
                    "memory_page_size": 4096,
                }
                self.step = step
                if self.on_step:
                    self.on_step(step)
                step += 1
                time.sleep(self.step_s)
            if self.fail_with is not None:
                raise self.fail_with
            source = src_conn.host
            dest_name = dest_uri.split("//", 1)[1].split("/", 1)[0]
            destination = self.hosts[dest_name]
            domain = source.domains.pop(domain_uuid)
            offline = bool(flags & (1 << 10))  # VIR_MIGRATE_OFFLINE: only the definition moves
            destination.domains[domain_uuid] = dataclasses.replace(
                domain, state="shutoff" if offline else "running", reason="migrated"
            )
            destination.completed[domain_uuid] = {
                "type": 3, "time_elapsed": 1234, "downtime": 42, "setup_time": 7, "data_processed": 80 * MIB,
                "memory_processed": 80 * MIB, "memory_iteration": 3,
            }
        finally:
            job.running = False

    def job_stats(self, conn, uuid):
        job = self.jobs.get(uuid)
        if job is None or not job.running or job.source != conn.host.name:
            return {}
        return dict(job.stats)

    def completed_job_stats(self, conn, uuid):
        return dict(conn.host.completed.get(uuid, {}))

    def abort_job(self, conn, uuid):
        self.calls.append(("abort_job", conn.host.name))
        self.jobs[uuid].abort = True

    def set_max_downtime(self, conn, uuid, ms):
        self.calls.append(("set_max_downtime", ms))

    def start_postcopy(self, conn, uuid):
        self.calls.append(("start_postcopy",))
        self.jobs[uuid].postcopy = True

    def domain_presence(self, conn, uuid):
        domain = conn.host.domains.get(uuid)
        if domain is None:
            return PresenceInfo(exists=False, state=None, reason=None, job_active=False, persistent=False)
        return PresenceInfo(
            exists=True, state=domain.state, reason=domain.reason, job_active=uuid in conn.host.job_active,
            persistent=domain.persistent,
        )

    def adapter(self) -> SimpleNamespace:
        return SimpleNamespace(
            migrate=self.migrate, job_stats=self.job_stats, completed_job_stats=self.completed_job_stats,
            abort_job=self.abort_job, set_max_downtime=self.set_max_downtime, start_postcopy=self.start_postcopy,
            domain_presence=self.domain_presence,
        )


def failure(message: str) -> LibvirtFailure:
    return LibvirtFailure(message)
