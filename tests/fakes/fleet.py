"""The one fake fleet of hosts for unit tests, plugged in where the portal reaches a host.

    fleet = Fleet()
    kvm_a = fleet.add("kvm-a", domains=[make_domain("web-1")])
    host = fleet.host_row("kvm-a")                 # its inventory row, host key pinned
    with access.override(fleet.session_for):        # every access.open_session(host) lands here
        ...

``session_for(host)`` returns a ``FleetSession``: the real ``hosts.access.HostSession``
(credentials decrypted, trust required, everything closed) whose SSH and libvirt lead to a
``FleetHost`` instead of the network. Behind them:

- SSH (``FakeSSH.run``): the commands a host answers, interpreted over a model of its files,
  packages, services, mounts and users (``tests/fakes/shell.py``); ``host.script(prefix,
  answer)`` scripts an answer, ``host.fail_on[prefix] = (status, stderr)`` fails one.
- libvirt (``tests/fakes/virt.py``): a ``virConnect`` over ``host.domains`` (``DomainInfo``
  per UUID) and ``host.facts``, so the real adapters run on top of it.
- migration jobs (``fleet.jobs``): a scripted job in steps that moves the guest at the end,
  honouring abort, post-copy, a guest that never converges and injected failures.

Inventory rows: ``fleet.host_row(name)`` for a fleet host; or ``make_host``/``make_vm`` rows first,
then ``fleet.adopt(row, fleet.guest_of(vm))`` puts a fleet host (and the guest, its disk on a
/shared directory every adopted host mounts from "nas") behind them.

Reaching a host checks what a real host would: it must be known and ``reachable``, present
the pinned key (``HostKeyMismatch``/``HostKeyUnknown`` otherwise), and have libvirt up.
``fleet.open_connections`` counts what is open right now (0 once every session closed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import threading
import time
import uuid as uuid_module
from pathlib import Path

import libvirt

from hosts import access
from hosts.adapters.errors import CommandFailed, HostKeyMismatch, HostKeyUnknown, HostUnreachable
from hosts.adapters.libvirt import DiskInfo, DomainInfo, HostFacts, NicInfo, is_ssh_uri
from hosts.adapters.ssh import CommandResult, HostKeyInfo, SSHTarget, generate_keypair

from . import virt
from .shell import DEBIAN_OS, Shell

MIB = 1024 * 1024


def make_host_key() -> HostKeyInfo:
    _, public = generate_keypair()
    return HostKeyInfo.from_openssh(public)


def make_domain(name: str, **overrides) -> DomainInfo:
    """A running one-disk guest as the libvirt adapter reports it; ``overrides`` change any field."""
    fields = dict(
        name=name,
        uuid=str(uuid_module.uuid4()),
        state="running",
        reason="booted",
        vcpus=1,
        memory_kib=65536,
        arch="x86_64",
        domain_type="qemu",
        machine="pc-i440fx-7.2",
        persistent=True,
        autostart=False,
        cpu_mode=None,
        cpu_model=None,
        disks=[
            DiskInfo(
                target="vda", device="disk", source_type="file", source=f"/var/lib/libvirt/images/{name}.img",
                protocol="", format="raw", readonly=True, shareable=False,
            )
        ],
        nics=[NicInfo(mac="52:54:00:00:00:01", type="network", source="default", model="virtio")],
        id=1,
    )
    fields.update(overrides)
    if fields["state"] in ("shutoff", "nostate"):
        fields["id"] = None
    return DomainInfo(**fields)


# Inventory rows for tests that make them by hand; a fleet host answers for one once adopted.
_ROW_HOST_KEY = make_host_key()
_ROW_LOGIN_KEY, _ = generate_keypair()


def make_host(name: str, **changes):
    """An inventory host row: a login key of its own, a pinned host key, reachable (see ``Fleet.adopt``)."""
    from core.encryption import encrypt_secret
    from hosts.choices import HostAuthMethodChoices, HostStatusChoices
    from hosts.models import Host

    fields = dict(
        name=name, address=f"192.0.2.{10 + Host.objects.count()}", auth_method=HostAuthMethodChoices.PRIVATE_KEY,
        secret_encrypted=encrypt_secret(_ROW_LOGIN_KEY), libvirt_uri=f"qemu+tcp://{name}/system",
        host_key=_ROW_HOST_KEY.openssh, host_key_fingerprint=_ROW_HOST_KEY.fingerprint,
        status=HostStatusChoices.REACHABLE,
    )
    fields.update(changes)
    return Host.objects.create(**fields)


def make_vm(host, name: str = "web-1", **changes):
    """An inventory guest row on ``host`` (running, 1 vCPU, 64 MiB)."""
    from hosts.choices import VMStateChoices
    from hosts.models import VirtualMachine

    fields = dict(host=host, uuid=uuid_module.uuid4(), name=name, state=VMStateChoices.RUNNING, vcpus=1,
                  memory_kib=65536, domain_type="qemu", arch="x86_64", machine="pc-i440fx-7.2")
    fields.update(changes)
    return VirtualMachine.objects.create(**fields)


def default_facts(hostname: str, host_uuid: str) -> HostFacts:
    return HostFacts(
        hostname=hostname, host_uuid=host_uuid, arch="x86_64", cpu_vendor="Intel",
        cpu_model="Skylake-Client", cpu_features=["vmx", "sse4.2"], hypervisor="QEMU",
        hypervisor_version="7.2.0", libvirt_version="9.0.0", domain_types=["qemu", "kvm"],
        machine_types=["pc", "pc-i440fx-7.2"], memory_total_kib=8 * 1024 * 1024, memory_free_kib=6 * 1024 * 1024, cpus=4,
    )


@dataclasses.dataclass(eq=False)
class FleetHost(Shell):
    """One fake host: what its SSH and libvirt answer, and what was asked of them."""

    name: str
    address: str
    fleet: Fleet
    hostname: str = ""
    host_uuid: str = ""
    host_key: HostKeyInfo = dataclasses.field(default_factory=make_host_key)
    facts: HostFacts | None = None
    reachable: bool = True  # False: nothing answers (SSH and libvirt)
    libvirt_up: bool = True  # False: SSH answers, libvirtd does not
    ssh_error: Exception | None = None  # raised when logging in over SSH (e.g. HostAuthError)
    # libvirt
    domains: dict[str, DomainInfo] = dataclasses.field(default_factory=dict)
    shutdown_ignored: bool = False
    calls: list = dataclasses.field(default_factory=list)  # libvirt actions: (verb, uuid)
    libvirt_failures: dict = dataclasses.field(default_factory=dict)  # verb -> libvirtError to raise
    managed_save: set = dataclasses.field(default_factory=set)
    state_files: dict = dataclasses.field(default_factory=dict)  # path -> (DomainInfo, flags) of a save
    snapshots: dict = dataclasses.field(default_factory=dict)  # uuid -> {name: virt.FakeSnapshot}
    snapshot_clock: int = 0  # seconds after 1700000000 of the last snapshot taken
    reverted: list = dataclasses.field(default_factory=list)  # (uuid, snapshot name) per revert
    cpu_times: dict = dataclasses.field(default_factory=lambda: {"kernel": 0, "user": 0, "idle": 0, "iowait": 0})  # ns
    vcpu_times: dict = dataclasses.field(default_factory=dict)  # uuid -> cumulative vCPU ns
    vcpu_delays: dict = dataclasses.field(default_factory=dict)  # uuid -> cumulative vCPU wait ns (none: not reported)
    block_sizes: dict = dataclasses.field(default_factory=dict)  # (uuid, target) -> (capacity, allocation, physical)
    networks: set = dataclasses.field(default_factory=lambda: {"default"})
    cpu_compare: object = "identical"  # "identical" | "superset" | "incompatible" | a libvirtError
    completed: dict = dataclasses.field(default_factory=dict)  # uuid -> last finished job's stats
    job_active: set = dataclasses.field(default_factory=set)  # uuids whose incoming migration runs here
    domain_jobs: dict = dataclasses.field(default_factory=dict)  # uuid -> stats of another running job (backup…)
    block_jobs: dict = dataclasses.field(default_factory=dict)  # (uuid, target) -> blockJobInfo
    # the shell's model (see tests/fakes/shell.py)
    os_release: str = DEBIAN_OS
    family: str = "debian"
    packages: set[str] = dataclasses.field(default_factory=set)
    binaries: set[str] = dataclasses.field(default_factory=set)
    units: dict[str, str] = dataclasses.field(default_factory=dict)  # unit -> "active"/"inactive"
    ufw: bool = False
    selinux: bool = False
    sebool: bool = False
    users: dict[str, int] = dataclasses.field(default_factory=lambda: {"root": 0, "libvirt-qemu": 64055, "qemu": 107})
    groups: dict[str, int] = dataclasses.field(default_factory=lambda: {"root": 0, "kvm": 107, "qemu": 107})
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    dirs: dict[str, tuple[int, int, str]] = dataclasses.field(default_factory=lambda: {"/srv": (0, 0, "755"), "/mnt": (0, 0, "755")})
    mounts: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # mountpoint -> (fstype, source)
    firewalld_services: set[str] = dataclasses.field(default_factory=set)
    ufw_rules: list[str] = dataclasses.field(default_factory=list)
    mtimes: dict[str, int] = dataclasses.field(default_factory=dict)
    served: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    fail_on: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # argv prefix (joined) -> (status, stderr)
    scripted: dict = dataclasses.field(default_factory=dict)  # argv prefix (joined) -> answer, see script()
    commands: list[list[str]] = dataclasses.field(default_factory=list)  # every argv run over SSH
    execs: int = 0  # SSH execs (a batch of commands is one)
    # what the preflight probes meet
    resolves: dict | None = None  # name -> addresses; None: every fleet host resolves by hostname
    python3: bool = True  # the listener runs with python3, else socat
    socat: bool = False
    qemu_denied: set = dataclasses.field(default_factory=set)  # (path, "r"/"w") QEMU's user may not
    perms: dict = dataclasses.field(default_factory=dict)  # path -> "user:group mode"
    room_kib: dict = dataclasses.field(default_factory=dict)  # directory -> free KiB
    blocked_ports: bool = False  # the migration ports are REJECTed
    dropped: bool = False  # every packet to the host is dropped

    def __post_init__(self):
        self.hostname = self.hostname or self.name
        self.host_uuid = self.host_uuid or str(uuid_module.uuid4())
        self.facts = self.facts or default_facts(self.hostname, self.host_uuid)
        self._pools = None
        self._ids = itertools.count(100)

    # -- set-up helpers
    def script(self, prefix: str, answer) -> None:
        """Answer commands whose ``shlex.join`` starts with ``prefix``: a CommandResult, a callable
        ``(argv, stdin) -> CommandResult``, or an exception to raise (e.g. CommandTimeout)."""
        self.scripted[prefix] = answer

    def put(self, path: str, content: str = "data") -> None:
        """A file at ``path`` as this host sees it (below a mount: on the server)."""
        self.write(path, content)

    def add_pool(self, name: str, path: str) -> None:
        """An active ``dir`` storage pool with that target path."""
        pool = self.pools.storagePoolDefineXML(
            f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>", 0)
        pool.create(0)

    def set_state(self, domain_uuid: str, state: str, reason: str) -> None:
        self.domains[domain_uuid] = dataclasses.replace(self.domains[domain_uuid], state=state, reason=reason)

    # -- what the fakes ask
    @property
    def pools(self) -> libvirt.virConnect:
        """The host's storage pools: a private libvirt ``test://`` driver, so pools are real objects."""
        if self._pools is None:
            xml = Path(tempfile.mkdtemp()) / "node.xml"
            xml.write_text("<node></node>")
            self._pools = libvirt.open(f"test://{xml}")
        return self._pools

    def check_libvirt(self) -> None:
        if not self.reachable or not self.libvirt_up:
            raise virt.connection_lost(self.name)

    def next_domain_id(self) -> int:
        return next(self._ids)


class FakeSSH:
    """A logged-in SSH session to a fleet host (what ``hosts.adapters.ssh.SSHSession`` gives)."""

    def __init__(self, host: FleetHost, target: SSHTarget):
        self.fleet_host = host
        self.target = target
        self.host_key = host.host_key

    def run(self, argv: list[str], *, timeout: float = 30.0, check: bool = True, stdin: str | None = None,
            on_stderr=None) -> CommandResult:
        if not self.fleet_host.reachable:
            raise HostUnreachable(f"Lost the SSH connection to {self.target.address}: connection reset",
                                  address=self.target.address)
        self.fleet_host.execs += 1
        result = self.fleet_host.answer(list(argv), stdin)
        if on_stderr is not None and result.stderr:
            on_stderr(result.stderr.encode())
        if check and result.exit_status != 0:
            raise CommandFailed(list(argv), result.exit_status, result.stdout, result.stderr)
        return result


class FleetSession(access.HostSession):
    """``access.HostSession`` whose SSH and libvirt connections lead to the fleet."""

    def __init__(self, fleet: Fleet, host):
        super().__init__(host)
        self.fleet = fleet

    def _reach(self, address: str) -> FleetHost:
        fleet_host = self.fleet.by_address(address)
        if fleet_host is None or not fleet_host.reachable:
            raise HostUnreachable(f"{address}:{self.host.ssh_port} refused the connection", address=address)
        return fleet_host

    def _check_pin(self, fleet_host: FleetHost, target: SSHTarget) -> None:
        key = fleet_host.host_key
        if not target.pinned_host_key:
            raise HostKeyUnknown(fingerprint=key.fingerprint, key_type=key.key_type, key_b64=key.key_b64)
        if target.pinned_host_key != key.openssh:
            raise HostKeyMismatch(
                expected_fingerprint=HostKeyInfo.from_openssh(target.pinned_host_key).fingerprint,
                actual_fingerprint=key.fingerprint,
                address=target.address,
            )

    @contextlib.contextmanager
    def _connect_ssh(self, target: SSHTarget):
        fleet_host = self._reach(target.address)
        self._check_pin(fleet_host, target)
        if fleet_host.ssh_error is not None:
            raise fleet_host.ssh_error
        with self.fleet.opened(("ssh", fleet_host.name)):
            yield FakeSSH(fleet_host, target)

    @contextlib.contextmanager
    def _connect_libvirt(self, uri: str, target: SSHTarget):
        fleet_host = self._reach(target.address)
        if is_ssh_uri(uri):  # the pinned key guards qemu+ssh as it guards SSH
            self._check_pin(fleet_host, target)
        if not fleet_host.libvirt_up:
            raise HostUnreachable(f"Cannot connect to libvirt at {uri}: Connection refused")
        conn = virt.FakeConnect(fleet_host)
        with self.fleet.opened(("libvirt", fleet_host.name)):
            try:
                yield conn
            finally:
                conn.close()

    def presented_host_key(self) -> HostKeyInfo:
        return self._reach(self.host.address).host_key


def migration_error(message: str) -> libvirt.libvirtError:
    """What libvirt raises when a migration job fails ("operation failed"), for ``jobs.fail_with``."""
    return virt.error(message, libvirt.VIR_ERR_OPERATION_FAILED)


class MigrationJobs:
    """Live migrations in the fleet: each ``migrate`` plays a job in ``steps`` steps, then moves the guest.

    Knobs: ``fail_with`` (a libvirtError raised at the end, the guest stays put), ``dirty`` (never
    converges: runs until aborted or switched to post-copy), ``on_step(step)`` (runs in the
    migration's thread, no database there), ``when(step, action)`` (runs in the job's thread).
    """

    def __init__(self, fleet: Fleet, *, steps: int = 8, step_s: float = 0.02):
        self.fleet = fleet
        self.steps = steps
        self.step_s = step_s
        self.fail_with: Exception | None = None
        self.dirty = False
        self.on_step = None
        self.step = -1  # how far the current migration got
        self.pending_actions: list = []
        self.calls: list[tuple] = []
        self._running: dict[str, dict] = {}  # uuid -> {"source", "stats", "abort", "postcopy"}
        self.lock = threading.Lock()

    def when(self, step: int, action) -> None:
        """Run ``action()`` in the job's thread (where the database is) once a migration reached ``step``."""
        self.pending_actions.append((step, action))

    def run_due_actions(self) -> None:
        due = [(s, a) for s, a in self.pending_actions if self.step >= s]
        for item in due:
            self.pending_actions.remove(item)
            item[1]()

    def stats(self, host: FleetHost, domain_uuid: str) -> dict:
        job = self._running.get(domain_uuid)
        if job is None or job["source"] is not host:
            return {"type": libvirt.VIR_DOMAIN_JOB_NONE}
        return dict(job["stats"])

    def abort(self, host: FleetHost, domain_uuid: str) -> None:
        self.calls.append(("abort_job", host.name))
        job = self._running.get(domain_uuid)
        if job is None:
            raise virt.error("Requested operation is not valid: no job is active on the domain",
                             libvirt.VIR_ERR_OPERATION_INVALID)
        job["abort"] = True

    def start_postcopy(self, host: FleetHost, domain_uuid: str) -> None:
        self.calls.append(("start_postcopy",))
        self._running[domain_uuid]["postcopy"] = True

    def migrate(self, source: FleetHost, domain_uuid: str, *, dest_uri: str, params: dict, flags: int, dest_conn) -> None:
        self.calls.append(("migrate", source.name, dest_uri, flags, dict(params), dest_conn is not None))
        job = {"source": source, "stats": {}, "abort": False, "postcopy": False}
        self._running[domain_uuid] = job
        total = 64 * MIB
        step = 0
        try:
            while step < self.steps or self.dirty:
                if job["abort"]:
                    source.completed[domain_uuid] = {"type": libvirt.VIR_DOMAIN_JOB_CANCELLED, "time_elapsed": step * 20}
                    raise virt.error("operation aborted: migration out: canceled by client",
                                     libvirt.VIR_ERR_OPERATION_ABORTED)
                if job["postcopy"]:
                    break
                remaining = total if self.dirty else max(0, total - (step + 1) * total // self.steps)
                job["stats"] = {
                    "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "time_elapsed": step * 20, "data_total": total,
                    "data_remaining": remaining, "data_processed": total - remaining + step * MIB,
                    "memory_total": total, "memory_remaining": remaining, "memory_processed": total - remaining,
                    # A dirty guest goes round pass after pass; a quiet one sends its memory in one
                    # pass and finishes with a short second.
                    "memory_iteration": step // 3 + 1 if self.dirty else 1 + (step >= self.steps - 1),
                    "memory_bps": 30 * MIB,
                    "memory_dirty_rate": 20000 if self.dirty else 100, "memory_page_size": 4096,
                }
                self.step = step
                if self.on_step:
                    self.on_step(step)
                step += 1
                time.sleep(self.step_s)
            if self.fail_with is not None:
                raise self.fail_with
            destination = dest_conn.host if dest_conn is not None else self.fleet.for_uri(dest_uri)
            domain = source.domains.pop(domain_uuid)
            offline = bool(flags & libvirt.VIR_MIGRATE_OFFLINE)  # only the definition moves
            destination.domains[domain_uuid] = dataclasses.replace(
                domain, state="shutoff" if offline else "running", reason="migrated",
                id=None if offline else destination.next_domain_id(),
            )
            destination.completed[domain_uuid] = {
                "type": libvirt.VIR_DOMAIN_JOB_COMPLETED, "time_elapsed": 1234, "downtime": 42, "setup_time": 7,
                "data_processed": 80 * MIB, "memory_processed": 80 * MIB, "memory_iteration": 3,
            }
        finally:
            self._running.pop(domain_uuid, None)


class Fleet:
    """Fake hosts by name; ``session_for`` is the factory for ``access.override``."""

    def __init__(self):
        self.hosts: dict[str, FleetHost] = {}
        self.jobs = MigrationJobs(self)
        self.open_connections = 0
        self.connections: list[tuple[str, str]] = []  # every connection made: ("ssh" | "libvirt", host name)
        self.listening: set[tuple[str, int]] = set()  # (address, port) of the probes' listeners
        self.marker_names = itertools.count(1)
        self._addresses = itertools.count(10)
        self._lock = threading.Lock()

    def add(self, name: str, *, address: str | None = None, domains=(), **fields) -> FleetHost:
        """A new host; ``fields`` set any FleetHost field (hostname, facts, files, packages …)."""
        host = FleetHost(name=name, address=address or f"192.0.2.{next(self._addresses)}", fleet=self,
                         domains={d.uuid: d for d in domains}, **fields)
        self.hosts[name] = host
        return host

    def __getitem__(self, key) -> FleetHost:
        """A host by name, by address, or by its inventory row."""
        if not isinstance(key, str):
            key = key.address
        host = self.by_address(key)
        if host is None:
            raise KeyError(key)
        return host

    def by_address(self, address: str) -> FleetHost | None:
        return next((h for h in self.hosts.values() if h.address == address), None) or self.hosts.get(address)

    def for_uri(self, uri: str) -> FleetHost:
        """The host a libvirt URI ("qemu+ssh://root@10.0.0.2:22/system") points at."""
        authority = uri.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        return self[host.strip("[]")]

    def where(self, domain_uuid: str) -> dict[str, str]:
        """{host name: state} of every host that has the guest."""
        return {h.name: h.domains[domain_uuid].state for h in self.hosts.values() if domain_uuid in h.domains}

    def all_commands(self) -> list[list[str]]:
        return [argv for host in self.hosts.values() for argv in host.commands]

    def host_row(self, name: str, *, save: bool = True, **changes):
        """The inventory row of fleet host ``name``: a login key of its own, its host key pinned, reachable.

        ``save=False`` gives the row unsaved (for tests without a database)."""
        from core.encryption import encrypt_secret
        from hosts.choices import HostAuthMethodChoices, HostStatusChoices
        from hosts.models import Host

        fleet_host = self.hosts[name]
        fields = dict(
            name=name, address=fleet_host.address, auth_method=HostAuthMethodChoices.PRIVATE_KEY,
            secret_encrypted=encrypt_secret(_ROW_LOGIN_KEY),
            libvirt_uri=f"qemu+tcp://{fleet_host.address}/system", host_key=fleet_host.host_key.openssh,
            host_key_fingerprint=fleet_host.host_key.fingerprint, status=HostStatusChoices.REACHABLE,
        )
        fields.update(changes)
        return Host.objects.create(**fields) if save else Host(**fields)

    def adopt(self, row, *guests: DomainInfo, shared: bool = True, **fields) -> FleetHost:
        """The fleet host behind inventory row ``row`` (its name, address and pinned key), running ``guests``.

        ``shared``: /shared is mounted from the fleet's "nas" (added on first use), where
        ``guest_of`` keeps the guests' disks, so a guest can move between adopted hosts.
        """
        mounts = {"/shared": ("nfs4", "nas:/shared")} if shared else {}
        if shared and "nas" not in self.hosts:
            self.add("nas", address="192.0.2.250")
        return self.add(row.name, address=row.address, host_key=HostKeyInfo.from_openssh(row.host_key),
                        domains=guests, mounts=mounts, **fields)

    def guest_of(self, vm, **changes) -> DomainInfo:
        """The libvirt guest behind inventory row ``vm`` (its UUID, name and shape), its disk on /shared."""
        path = f"/shared/images/{vm.name}.qcow2"
        nas = self.hosts.get("nas") or self.add("nas", address="192.0.2.250")
        nas.write(path, f"image of {vm.name}")
        fields = dict(
            uuid=str(vm.uuid), state=vm.state, reason=vm.state_reason or ("booted" if vm.state == "running" else "shutdown"),
            vcpus=vm.vcpus, memory_kib=vm.memory_kib, arch=vm.arch,
            domain_type=vm.domain_type, machine=vm.machine, cpu_mode="custom", cpu_model="qemu64",
            disks=[DiskInfo(target="vda", device="disk", source_type="file", source=path, protocol="",
                            format="qcow2", readonly=False, shareable=False)],
        )
        fields.update(changes)
        return make_domain(vm.name, **fields)

    def session_for(self, host) -> FleetSession:
        return FleetSession(self, host)

    @contextlib.contextmanager
    def opened(self, what):
        with self._lock:
            self.open_connections += 1
            self.connections.append(what)
        try:
            yield
        finally:
            with self._lock:
                self.open_connections -= 1


def nfs_lab(fleet: Fleet | None = None) -> Fleet:
    """Three Debian hosts h1–h3 (10.0.0.11–13) like the lab: Ganesha installed everywhere, QEMU runs as root."""
    from storage.facts import FSTAB, GANESHA_CONF

    fleet = fleet if fleet is not None else Fleet()
    conf = 'user = "root"\ngroup = "root"\n'
    for i, name in enumerate(("h1", "h2", "h3"), start=1):
        fleet.add(
            name, address=f"10.0.0.1{i}",
            packages={"nfs-ganesha", "nfs-ganesha-vfs", "rpcbind", "nfs-common"},
            binaries={"/usr/bin/ganesha.nfsd", "/sbin/mount.nfs"},
            files={"/etc/libvirt/qemu.conf": conf, FSTAB: f"# /etc/fstab of {name}\n",
                   GANESHA_CONF: "# Ganesha example\n#EXPORT {\n#  Export_Id = 12345;\n#}\n"},
        )
    return fleet
