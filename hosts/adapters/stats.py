"""Load figures of one host in one go: libvirt's bulk domain stats plus the node's CPU and memory.

``host_stats(conn)`` makes one ``getAllDomainStats`` call for every guest (state, balloon,
vCPU and block groups), one ``getCPUStats`` and one ``getMemoryStats`` for the node. The block
group's sizes of each disk (capacity, allocation, physical) are what the inventory records of
it, so disk sizes cost no call of their own. Counters
stay cumulative here (CPU nanoseconds); ``cpu_use_percent`` / ``vcpu_use_percent`` turn two
samples into a use between them. Never imports Django.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import libvirt

from .libvirt import state_name, translate_error

_ALL_CELLS = -1  # VIR_NODE_CPU_STATS_ALL_CPUS / VIR_NODE_MEMORY_STATS_ALL_CELLS
# What a host can make us keep per guest: disks beyond these are not read, sizes beyond 2^63 are nonsense.
MAX_DISKS = 256
MAX_SIZE_BYTES = 2**63 - 1

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


@dataclass(frozen=True)
class DiskStats:
    """One disk's sizes as libvirt's block group gives them; None where libvirt gave none
    (an empty cdrom tray, a network disk it cannot size, a file it could not read)."""

    name: str  # target (vda…)
    path: str  # the source libvirt sized ("" for network disks and empty trays)
    capacity_bytes: int | None  # what the guest sees
    allocation_bytes: int | None  # what holds data (a file's allocated blocks; QEMU's highest write when running)
    physical_bytes: int | None  # the container: a file's size, a block device's size


@dataclass(frozen=True)
class DomainStats:
    uuid: str
    name: str
    state: str  # running | paused | shutoff…
    balloon_current_kib: int  # memory the guest has now (0 when shut off)
    balloon_maximum_kib: int
    rss_kib: int  # what QEMU takes on the host (0 when not reported)
    vcpus: int
    vcpu_time_ns: int  # cumulative over all vCPUs
    disks: tuple[DiskStats, ...] = ()
    # Cumulative over all vCPUs: time their threads waited for a host CPU (the guest's steal
    # time, libvirt's vcpu.N.delay); None when libvirt reports none.
    vcpu_delay_ns: int | None = None


@dataclass(frozen=True)
class NodeStats:
    cpus: int
    cpu_busy_ns: int  # cumulative kernel + user (+ iowait counts as idle)
    cpu_total_ns: int  # cumulative busy + idle + iowait
    memory_total_kib: int
    memory_free_kib: int  # free + buffers + cached: what guests could still take

    @property
    def memory_used_kib(self) -> int:
        return max(self.memory_total_kib - self.memory_free_kib, 0)


@dataclass(frozen=True)
class HostStats:
    node: NodeStats
    domains: tuple[DomainStats, ...]
    monotonic_s: float  # when read, for deltas between two samples


def _size(value) -> int | None:
    """A byte count libvirt reported, or None when it reported none (or nonsense)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if 0 <= size <= MAX_SIZE_BYTES else None


def _domain(dom, values: dict) -> DomainStats:
    vcpus = int(values.get("vcpu.current", 0) or 0)
    indexes = range(int(values.get("vcpu.maximum", vcpus) or 0))
    vcpu_time = sum(int(values.get(f"vcpu.{i}.time", 0) or 0) for i in indexes)
    delays = [int(values[f"vcpu.{i}.delay"]) for i in indexes if f"vcpu.{i}.delay" in values]
    disks = []
    for i in range(min(int(values.get("block.count", 0) or 0), MAX_DISKS)):
        name = str(values.get(f"block.{i}.name", ""))[:32]
        if not name:
            continue
        disks.append(DiskStats(
            name=name,
            path=str(values.get(f"block.{i}.path", ""))[:4096],
            capacity_bytes=_size(values.get(f"block.{i}.capacity")),
            allocation_bytes=_size(values.get(f"block.{i}.allocation")),
            physical_bytes=_size(values.get(f"block.{i}.physical")),
        ))
    return DomainStats(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=state_name(int(values.get("state.state", libvirt.VIR_DOMAIN_NOSTATE))),
        balloon_current_kib=int(values.get("balloon.current", 0) or 0),
        balloon_maximum_kib=int(values.get("balloon.maximum", 0) or 0),
        rss_kib=int(values.get("balloon.rss", 0) or 0),
        vcpus=vcpus,
        vcpu_time_ns=vcpu_time,
        disks=tuple(disks),
        vcpu_delay_ns=sum(delays) if delays else None,
    )


def node_stats(conn) -> NodeStats:
    """The node's cumulative CPU times and its memory now (raises libvirtError)."""
    cpu = conn.getCPUStats(_ALL_CELLS, 0)
    mem = conn.getMemoryStats(_ALL_CELLS, 0)
    busy = int(cpu.get("kernel", 0)) + int(cpu.get("user", 0))
    total = busy + int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))
    free = int(mem.get("free", 0)) + int(mem.get("buffers", 0)) + int(mem.get("cached", 0))
    return NodeStats(
        cpus=int(conn.getInfo()[2]), cpu_busy_ns=busy, cpu_total_ns=total,
        memory_total_kib=int(mem.get("total", 0)), memory_free_kib=free,
    )


def host_stats(conn) -> HostStats:
    """Every guest's stats in one bulk call, and the node's, from one libvirt connection."""
    try:
        node = node_stats(conn)
        found = conn.getAllDomainStats(STATS_GROUPS, 0)
        domains = tuple(sorted((_domain(dom, values) for dom, values in found), key=lambda d: d.name))
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="reading load statistics") from exc
    return HostStats(node=node, domains=domains, monotonic_s=time.monotonic())


def running_guests_cpu(conn) -> tuple[DomainStats, ...]:
    """The running guests' vCPU counters (time used, time waiting for a host CPU) in one bulk call,
    without the node's figures or the disks: cheap enough to read around a migration."""
    try:
        # NOWAIT: a guest whose job holds it (the one arriving) is reported without what needs the job.
        found = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU,
                                       libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING
                                       | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
        domains = tuple(sorted((_domain(dom, values) for dom, values in found), key=lambda d: d.name))
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="reading the guests' CPU counters") from exc
    return domains


def cpu_use_percent(before_busy: int, before_total: int, after_busy: int, after_total: int) -> float | None:
    """Share of the node's CPU time that was busy between two samples; None when no time passed or counters reset."""
    total = after_total - before_total
    busy = after_busy - before_busy
    if total <= 0 or busy < 0:
        return None
    return round(min(max(100.0 * busy / total, 0.0), 100.0), 1)


def vcpu_use_percent(before_ns: int, after_ns: int, elapsed_s: float, vcpus: int) -> float | None:
    """Share of its vCPUs' time a guest used between two samples; None when unknowable (restart, no time)."""
    if elapsed_s <= 0 or vcpus <= 0 or after_ns < before_ns:
        return None
    return round(min(100.0 * (after_ns - before_ns) / (elapsed_s * 1e9 * vcpus), 100.0), 1)
