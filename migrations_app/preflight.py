"""Preflight: will this guest migrate from this source to this destination, and if not, why and what to do.

Pure decision code. Every check is ``check_<thing>(pair, guest, options) -> Verdict``
over facts gathered beforehand (facts.py); none does I/O. A verdict's reason is in
plain words and its fix says exactly what to run or change.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .facts import DiskFact, GuestSide, HostSide, PairFacts
from .options import MigrationOptions
from .verdicts import VerdictStatus, severity, worst


# Free memory the destination must have beyond the guest's own: QEMU's overhead
# (page tables, device state, migration buffers) and room for the host itself.
MEMORY_HEADROOM = 0.10
# Above this many vCPUs per host CPU (counting the incoming guest) we warn.
VCPU_OVERCOMMIT_WARN = 4.0
# libvirt's default migration port range (qemu.conf migration_port_min/max).
MIGRATION_PORTS = "49152-49215"

# Guest arch -> host arches KVM can run it on (hardware virtualisation runs the
# 32-bit variant of an arch on its 64-bit host, not the other way round).
KVM_HOST_ARCHES: dict[str, frozenset[str]] = {
    "x86_64": frozenset({"x86_64"}),
    "i686": frozenset({"i686", "x86_64"}),
    "aarch64": frozenset({"aarch64"}),
    "armv7l": frozenset({"armv7l", "aarch64"}),
    "ppc64le": frozenset({"ppc64le"}),
    "ppc64": frozenset({"ppc64"}),
    "s390x": frozenset({"s390x"}),
}
_ARCH_ALIASES = {"i386": "i686", "i486": "i686", "i586": "i686", "amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Verdict:
    check: str
    status: str  # a VerdictStatus value
    reason: str
    fix: str = ""
    # Files whose owner/mode the portal can fix for QEMU's user on the destination: ((path, mode), …).
    repairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Stored as the plain string (JSON, templates); an unknown status is a bug, so it raises.
        object.__setattr__(self, "status", VerdictStatus(self.status).value)


@dataclass(frozen=True)
class _Finding:
    status: VerdictStatus
    reason: str
    fix: str = ""
    repair: tuple[str, str] | None = None  # (path, mode) the portal can fix


def _verdict(check: str, findings: Iterable[_Finding], ok: str) -> Verdict:
    """Fold a check's findings into one verdict: the worst status, with every non-pass reason and fix."""
    problems = [f for f in findings if f.status != VerdictStatus.PASS]
    if not problems:
        return Verdict(check, VerdictStatus.PASS, ok, "")
    worst_status = worst(f.status for f in problems)
    problems.sort(key=lambda f: -severity(f.status))
    reason = " ".join(f.reason for f in problems)
    fix = " ".join(dict.fromkeys(f.fix for f in problems if f.fix))  # de-duplicated, in order
    repairs = tuple(dict.fromkeys(f.repair for f in problems if f.repair))
    return Verdict(check, worst_status, reason, fix, repairs)


def _unverified(check: str, host: HostSide) -> Verdict:
    return Verdict(
        check,
        VerdictStatus.WARN,
        f"Not checked: {host.name} did not answer.",
        f"Bring {host.name} back (libvirtd running, SSH reachable) and run the preflight again.",
    )


def _kib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f} GiB"


def _version(v: Sequence[int]) -> str:
    return ".".join(str(part) for part in v)


def _address(host: HostSide) -> str:
    return host.address or f"<address of {host.name}>"


# ---------------------------------------------------------------------------
# The checks


def check_reachability(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Both hosts answered the gatherer; without that every other fact is missing."""
    findings = [
        _Finding(
            VerdictStatus.FAIL,
            f"{host.name} ({role}) did not answer, so nothing about it could be checked.",
            f"Check that {host.name} is up, that libvirtd runs there and that VMPortal can reach it over SSH.",
        )
        for role, host in (("source", pair.source), ("destination", pair.destination))
        if not host.reachable
    ]
    return _verdict("reachability", findings, "Both hosts answered.")


def check_host_identity(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Distinct host UUIDs (libvirt compares them) and distinct hostnames."""
    src, dst = pair.source, pair.destination
    findings: list[_Finding] = []
    src_uuid = src.host_uuid.strip().lower().replace("-", "")
    dst_uuid = dst.host_uuid.strip().lower().replace("-", "")
    if not src_uuid or not dst_uuid:
        findings.append(_Finding(
            VerdictStatus.WARN,
            "The host UUID of one host is unknown, so libvirt's same-host check could not be predicted.",
            "Refresh both hosts in the inventory.",
        ))
    elif src_uuid == dst_uuid:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{src.name} and {dst.name} report the same host UUID {dst.host_uuid}; libvirt will refuse with "
            f"\"Attempt to migrate guest to the same host {dst.host_uuid}\". If they are two machines, one was "
            "cloned from the other (same SMBIOS UUID or /etc/machine-id).",
            f"On {dst.name}: set a new UUID with host_uuid = \"<output of uuidgen>\" in "
            "/etc/libvirt/libvirtd.conf (or regenerate /etc/machine-id with "
            "systemd-machine-id-setup and set host_uuid_source = \"machine-id\"), then restart libvirtd.",
        ))
    src_name, dst_name = src.hostname.strip().lower(), dst.hostname.strip().lower()
    if dst_name.split(".")[0] == "localhost" or not dst_name:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name} calls itself {dst.hostname!r}; libvirt refuses a destination whose hostname is "
            "localhost (\"migration requires an FQDN\").",
            f"On {dst.name}: hostnamectl set-hostname <its real name>, and make that name resolve to "
            f"{_address(dst)} in /etc/hosts.",
        ))
    elif src_name and src_name == dst_name:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{src.name} and {dst.name} both call themselves {dst.hostname!r}. This is what cloned hosts look "
            "like; the source would resolve the destination's name to itself.",
            f"On {dst.name}: hostnamectl set-hostname <a unique name>, then update /etc/hosts on both hosts.",
        ))
    return _verdict("host-identity", findings, "The hosts have distinct UUIDs and hostnames.")


def _bad_addresses(addresses: Sequence[str]) -> list[str]:
    bad = []
    for text in addresses:
        try:
            if ipaddress.ip_address(text.split("%")[0]).is_loopback:
                bad.append(text)
        except ValueError:
            bad.append(text)
    return bad


def _resolution(by: HostSide, of: HostSide, addresses: Sequence[str] | None) -> _Finding:
    hosts_line = f"{_address(of)} {of.hostname}"
    if addresses is None:  # the probe itself failed: say so, do not guess
        return _Finding(
            VerdictStatus.WARN,
            f"Could not verify how {by.name} resolves {of.hostname!r}.",
            f"On {by.name}: getent ahosts {of.hostname}",
        )
    if not addresses:
        return _Finding(
            VerdictStatus.FAIL,
            f"{by.name} cannot resolve {of.hostname!r}; libvirt connects by hostname, so the migration would fail.",
            f"On {by.name}: add the line \"{hosts_line}\" to /etc/hosts (or fix DNS).",
        )
    loopback = _bad_addresses(addresses)
    if loopback:
        return _Finding(
            VerdictStatus.FAIL,
            f"{by.name} resolves {of.hostname!r} to {', '.join(loopback)}, which is not {of.name}'s network "
            "address (often the 127.0.1.1 line Debian and Ubuntu add).",
            f"On {by.name}: remove {of.hostname} from the loopback line of /etc/hosts and add \"{hosts_line}\".",
        )
    return _Finding(VerdictStatus.PASS, "")


def check_name_resolution(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Each host resolves the other's hostname to a real address; the migration address is reachable."""
    src, dst = pair.source, pair.destination
    findings = [
        _resolution(src, dst, pair.source_resolves_destination),
        _resolution(dst, src, pair.destination_resolves_source),
    ]
    if pair.migration_address_reachable is False:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{src.name} cannot reach {dst.name}'s migration address.",
            f"Check routing and the firewall between {src.name} and {dst.name} "
            f"(from {src.name}: ping {dst.hostname}; virsh -c qemu+ssh://{dst.hostname}/system uri).",
        ))
    elif pair.migration_address_reachable is None:
        findings.append(_Finding(
            VerdictStatus.WARN,
            f"Could not verify that {src.name} reaches {dst.name}'s migration address.",
            f"From {src.name}: ping {dst.hostname}.",
        ))
    return _verdict("name-resolution", findings, "Each host resolves the other and the migration address answers.")


def check_domain_conflict(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """No domain with the same name or UUID on the destination."""
    dst = pair.destination
    findings = []
    if pair.destination_has_domain_name:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name} already has a guest named {guest.name!r} (perhaps left by an earlier migration).",
            f"On {dst.name}: check it is not in use (virsh dominfo {guest.name}); if it is a stale copy, "
            f"virsh undefine {guest.name} (keep its disks).",
        ))
    if pair.destination_has_domain_uuid:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name} already has a guest with UUID {guest.uuid}; libvirt refuses two domains with one UUID.",
            f"On {dst.name}: virsh list --all --uuid | grep {guest.uuid}, and undefine that stale copy "
            "after checking it is not running.",
        ))
    return _verdict("domain-conflict", findings, f"{dst.name} has no guest with this name or UUID.")


def _arch(name: str) -> str:
    return _ARCH_ALIASES.get(name, name)


def check_cpu(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Guest CPU runs on the destination; arch, domain type and machine type are supported there."""
    dst = pair.destination
    findings: list[_Finding] = []
    compare = (pair.cpu_compare or "unknown").strip()
    if compare == "incompatible":
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name}'s CPU lacks features the guest's CPU model uses; libvirt would refuse the migration.",
            "Give the guest a CPU model both hosts support (virsh domcapabilities on both, pick a common "
            "named model, or host-model), or choose a destination with the same CPU generation.",
        ))
    elif compare.startswith("error"):
        message = compare.partition(":")[2].strip() or "no message"
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"libvirt could not compare the guest's CPU with {dst.name}'s: \"{message}\".",
            "Fix the cause in that message (on the destination: virsh hypervisor-cpu-compare with the "
            "guest's <cpu> element), then run the preflight again.",
        ))
    elif compare == "unknown":
        findings.append(_Finding(
            VerdictStatus.WARN,
            f"Could not compare the guest's CPU with {dst.name}'s.",
            "Run the preflight again once both hosts answer.",
        ))
    elif compare not in ("identical", "superset"):
        findings.append(_Finding(
            VerdictStatus.WARN, f"Unexpected CPU comparison result {compare!r}.", "Run the preflight again."
        ))
    if guest.cpu_mode == "host-passthrough" and compare != "identical":
        findings.append(_Finding(
            VerdictStatus.WARN,
            "The guest uses host-passthrough: it sees the source's exact CPU and libvirt does not check the "
            "destination, so it can crash after migrating unless both hosts have identical CPUs and microcode.",
            "Prefer host-model or a named CPU model for guests that migrate between different hosts.",
        ))
    guest_arch, host_arch = _arch(guest.arch), _arch(dst.arch)
    if guest.domain_type == "kvm" and host_arch not in KVM_HOST_ARCHES.get(guest_arch, frozenset({guest_arch})):
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"A {guest.arch} KVM guest cannot run on {dst.name}, which is {dst.arch}.",
            f"Choose a {guest.arch} destination.",
        ))
    if guest.domain_type not in dst.domain_types:
        fix = (
            f"On {dst.name}: enable virtualisation in the firmware and load the kvm module "
            "(ls -l /dev/kvm must exist), then restart libvirtd."
            if guest.domain_type == "kvm"
            else f"Install the QEMU emulator for {guest.arch} on {dst.name}."
        )
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name} does not offer domain type {guest.domain_type!r} "
            f"(it offers: {', '.join(sorted(dst.domain_types)) or 'nothing'}).",
            fix,
        ))
    if not dst.machine_types:
        findings.append(_Finding(
            VerdictStatus.WARN, f"{dst.name}'s machine types are unknown.", "Refresh the host in the inventory."
        ))
    elif guest.machine not in dst.machine_types:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name}'s QEMU does not provide machine type {guest.machine!r}; a live guest keeps its exact "
            "machine type, so it cannot start there.",
            f"Upgrade QEMU on {dst.name} to at least the source's version ({_version(pair.source.hypervisor_version)}).",
        ))
    return _verdict("cpu", findings, "The guest's CPU, architecture and machine type are supported on the destination.")


def check_hypervisor(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Same hypervisor; version skew warns, an older destination warns louder."""
    src, dst = pair.source, pair.destination
    findings: list[_Finding] = []
    if src.hypervisor.strip().lower() != dst.hypervisor.strip().lower():
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{src.name} runs {src.hypervisor} but {dst.name} runs {dst.hypervisor}; guests only migrate "
            "between hosts with the same hypervisor.",
            "Choose a destination running the same hypervisor.",
        ))
    else:
        s, d = tuple(src.hypervisor_version), tuple(dst.hypervisor_version)
        if d < s:
            findings.append(_Finding(
                VerdictStatus.WARN,
                f"OLDER DESTINATION: {dst.name} runs {dst.hypervisor} {_version(d)}, older than {src.name}'s "
                f"{_version(s)}. QEMU only promises migration to the same or a newer version; the older one may "
                "reject the guest's machine type or device state, and the guest stays on the source.",
                f"Upgrade {dst.hypervisor} on {dst.name} first, or choose a destination at {_version(s)} or newer.",
            ))
        elif d[:2] != s[:2]:
            findings.append(_Finding(
                VerdictStatus.WARN,
                f"{dst.name} runs {dst.hypervisor} {_version(d)}, newer than {src.name}'s {_version(s)}. "
                "That direction works, but migrating the guest back later will not be supported.",
                f"Upgrade {src.name} too when convenient.",
            ))
    if tuple(dst.libvirt_version) < tuple(src.libvirt_version):
        findings.append(_Finding(
            VerdictStatus.WARN,
            f"{dst.name} runs libvirt {_version(dst.libvirt_version)}, older than {src.name}'s "
            f"{_version(src.libvirt_version)}; options the source offers may be refused.",
            f"Upgrade libvirt on {dst.name}.",
        ))
    return _verdict("hypervisor", findings, f"Both hosts run {dst.hypervisor} at compatible versions.")


def repair_mode(readonly: bool) -> str:
    """The mode an image gets for QEMU's user: never world-readable, let alone 777."""
    return "0640" if readonly else "0660"


def _perm_fix(host: HostSide, disk: DiskFact) -> str:
    mode = repair_mode(disk.readonly)
    return (
        f"On {host.name}: chown qemu:qemu {disk.source} && chmod {mode} {disk.source} "
        "(libvirt-qemu:kvm on Debian/Ubuntu; never 777), make every parent directory searchable "
        "by that user, and on NFS with SELinux: setsebool -P virt_use_nfs 1."
    )


def disks_to_copy(guest: GuestSide) -> tuple[str, ...]:
    """Targets of the disks a copy-storage migration must copy: writable, local, not on shared storage."""
    return tuple(
        d.target
        for d in guest.disks
        if d.source and not d.network and not d.readonly and not d.shareable and d.same_file_on_destination is not True
    )


def check_storage(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Every disk is reachable on the destination, or will be copied there and fits."""
    dst = pair.destination
    findings: list[_Finding] = []
    copy_targets = set(disks_to_copy(guest)) if options.copy_storage and options.live else set()
    for disk in guest.disks:
        if not disk.source:  # empty CD-ROM drive: nothing to find
            continue
        if disk.network:  # rbd/iscsi/nbd: both hosts reach the same volume
            continue
        if disk.target in copy_targets:
            if disk.same_file_on_destination is None:
                findings.append(_Finding(
                    VerdictStatus.WARN,
                    f"Could not verify whether {disk.target} ({disk.source}) is on shared storage; if it is, "
                    "copying it onto itself would corrupt it.",
                    f"Check by hand that {disk.source} on {dst.name} is not the same file as on "
                    f"{pair.source.name} before copying.",
                ))
            continue
        what = f"{disk.target} ({disk.source})"
        if disk.same_file_on_destination is False:
            if disk.readonly or disk.shareable:
                kind = "read-only" if disk.readonly else "shareable"
                findings.append(_Finding(
                    VerdictStatus.FAIL,
                    f"The {kind} disk {what} is not on {dst.name}; libvirt never copies {kind} disks.",
                    f"Put the same file at {disk.source} on {dst.name} (or on shared storage), or detach it first.",
                ))
            elif not options.live:
                findings.append(_Finding(
                    VerdictStatus.FAIL,
                    f"Disk {what} is not on shared storage and an offline migration cannot copy disks.",
                    "Put the disk on storage both hosts mount at the same path, or migrate live with copy-storage.",
                ))
            else:
                findings.append(_Finding(
                    VerdictStatus.FAIL,
                    f"Disk {what} is not on shared storage: {dst.name} does not see the same file.",
                    "Choose copy-storage, or move the disk to storage both hosts mount at the same path.",
                ))
            continue
        if disk.same_file_on_destination is None:
            findings.append(_Finding(
                VerdictStatus.WARN,
                f"Could not verify that {dst.name} sees the same file for {what}.",
                f"Check by hand that {disk.source} on {dst.name} is the shared file.",
            ))
        if disk.destination_can_open is False:
            detail = f" (found {disk.perm_detail})" if disk.perm_detail else ""
            findings.append(_Finding(
                VerdictStatus.FAIL,
                f"QEMU on {dst.name} cannot open {what}{detail}.",
                _perm_fix(dst, disk) + " Or let the portal do it: Repair permissions.",
                repair=(disk.source, repair_mode(disk.readonly)) if disk.source.startswith("/") else None,
            ))
        elif disk.destination_can_open is None:
            findings.append(_Finding(
                VerdictStatus.WARN,
                f"Could not verify that QEMU on {dst.name} can open {what}.",
                f"On {dst.name}: ls -lZ {disk.source}",
            ))
    if copy_targets:
        if options.tunnelled and any(
            d.same_file_on_destination is True and not d.readonly and not d.shareable and not d.network
            for d in guest.disks
        ):
            # Tunnelled mode cannot take migrate_disks, so libvirt would copy the shared disks too.
            findings.append(_Finding(
                VerdictStatus.FAIL,
                "Some disks are on shared storage and others are not; tunnelled migration cannot limit the copy "
                "to the local ones, so the shared ones would be copied onto themselves.",
                "Turn tunnelled off (open the migration ports instead), or move all disks to one kind of storage.",
            ))
        pools = pair.destination_pool_targets
        for disk in guest.disks:
            if disk.target not in copy_targets or not disk.source.startswith("/"):
                continue
            directory = posixpath.dirname(disk.source.rstrip("/")) or "/"
            if pools is None:
                findings.append(_Finding(
                    VerdictStatus.WARN,
                    f"Could not list {dst.name}'s storage pools; the copy of {disk.target} needs one at {directory}.",
                    f"On {dst.name}: virsh pool-list --all --details",
                ))
            elif directory not in pools:
                findings.append(_Finding(
                    VerdictStatus.FAIL,
                    f"{dst.name} has no active storage pool at {directory}, where the copy of {disk.target} "
                    "would be created (libvirt: \"Storage pool not found: no storage pool with matching target path\").",
                    f"On {dst.name}: virsh pool-define-as {_pool_name(directory)} dir --target {shlex.quote(directory)} && "
                    f"virsh pool-start {_pool_name(directory)} && virsh pool-autostart {_pool_name(directory)}",
                ))
        sizes = [d.size_kib for d in guest.disks if d.target in copy_targets]
        if any(size is None for size in sizes) or pair.destination_pool_room_kib is None:
            findings.append(_Finding(
                VerdictStatus.WARN,
                f"Could not verify that {dst.name} has room for the copied disks.",
                f"On {dst.name}: df -h at the disks' directory; compare with qemu-img info on the source.",
            ))
        else:
            need = sum(sizes)
            if need > pair.destination_pool_room_kib:
                findings.append(_Finding(
                    VerdictStatus.FAIL,
                    f"The copied disks need {_kib(need)} but {dst.name} has {_kib(pair.destination_pool_room_kib)} free there.",
                    f"Free {_kib(need - pair.destination_pool_room_kib)} on {dst.name}, or choose another destination.",
                ))
    ok = (
        f"All disks are reachable on {dst.name}"
        + (f"; {', '.join(sorted(copy_targets))} will be copied and fit." if copy_targets else ".")
    )
    return _verdict("storage", findings, ok)


def _pool_name(directory: str) -> str:
    """A pool name an admin can paste: the directory's last parts, safe characters only."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.strip("/")).strip("-.") or "root"
    return name[-40:].lstrip("-.") or "pool"


def check_capacity(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """Destination memory (guest + headroom) and CPUs, and not in maintenance."""
    dst = pair.destination
    findings: list[_Finding] = []
    if dst.in_maintenance:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"{dst.name} is in maintenance.",
            f"Take {dst.name} out of maintenance in the inventory, or choose another destination.",
        ))
    need_kib = int(guest.memory_kib * (1 + MEMORY_HEADROOM))
    if dst.memory_free_kib < need_kib:
        # An offline guest does not start on arrival, so memory is only needed later.
        status = VerdictStatus.FAIL if options.live else VerdictStatus.WARN
        findings.append(_Finding(
            status,
            f"{dst.name} has {_kib(dst.memory_free_kib)} free; the guest needs {_kib(guest.memory_kib)} plus "
            f"{int(MEMORY_HEADROOM * 100)}% headroom ({_kib(need_kib)})"
            + ("." if options.live else ", so it could not be started there now."),
            f"Free memory on {dst.name} (migrate or stop other guests there), or choose another destination.",
        ))
    if guest.vcpus > dst.cpus:
        findings.append(_Finding(
            VerdictStatus.WARN,
            f"The guest has {guest.vcpus} vCPUs but {dst.name} has only {dst.cpus} CPUs; it will run slowly.",
            "Choose a larger destination or reduce the guest's vCPUs.",
        ))
    elif dst.cpus and (dst.running_vcpus + guest.vcpus) / dst.cpus > VCPU_OVERCOMMIT_WARN:
        findings.append(_Finding(
            VerdictStatus.WARN,
            f"{dst.name} would run {dst.running_vcpus + guest.vcpus} vCPUs on {dst.cpus} CPUs "
            f"(more than {VCPU_OVERCOMMIT_WARN:g} per CPU).",
            "Choose a less loaded destination if the guest is CPU-bound.",
        ))
    return _verdict("capacity", findings, f"{dst.name} has room for the guest.")


def check_ports(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """The migration ports are open, unless tunnelled (then the data rides libvirtd's connection)."""
    dst = pair.destination
    if not options.live:
        return Verdict("ports", VerdictStatus.PASS, "Offline migration sends only the definition, over libvirtd's connection.", "")
    if options.tunnelled:
        return Verdict(
            "ports",
            VerdictStatus.PASS,
            f"Tunnelled: the data goes through the libvirtd connection, so ports {MIGRATION_PORTS} are not needed.",
            "",
        )
    firewall = (
        f"On {dst.name}: firewall-cmd --permanent --add-port={MIGRATION_PORTS}/tcp && firewall-cmd --reload "
        f"(or ufw allow {MIGRATION_PORTS.replace('-', ':')}/tcp), or choose tunnelled."
    )
    if pair.ports_reachable is False:
        finding = _Finding(
            VerdictStatus.FAIL,
            f"{pair.source.name} cannot connect to ports {MIGRATION_PORTS} on {dst.name}; QEMU sends the guest's "
            "memory (and copied disks) there.",
            firewall,
        )
    elif pair.ports_reachable is None:
        finding = _Finding(VerdictStatus.WARN, f"Could not verify that ports {MIGRATION_PORTS} on {dst.name} are open.", firewall)
    else:
        finding = _Finding(VerdictStatus.PASS, "")
    return _verdict("ports", [finding], f"Ports {MIGRATION_PORTS} on {dst.name} are reachable from {pair.source.name}.")


def check_guest_state(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> Verdict:
    """The guest's state fits the mode, and nothing else is operating on it."""
    findings: list[_Finding] = []
    state = guest.state
    if options.live:
        if state == "shutoff":
            findings.append(_Finding(
                VerdictStatus.FAIL,
                f"{guest.name} is shut off; a live migration needs a running guest.",
                "Choose offline migration (it moves the definition), or start the guest first.",
            ))
        elif state not in ("running", "paused", "blocked"):
            findings.append(_Finding(
                VerdictStatus.FAIL,
                f"{guest.name} is {state}; only a running or paused guest can be migrated live.",
                "Bring it to running (or shut it off and migrate offline).",
            ))
    else:
        if state != "shutoff":
            findings.append(_Finding(
                VerdictStatus.FAIL,
                f"{guest.name} is {state}; offline migration only moves the definition of a shut-off guest.",
                "Shut the guest down first, or choose live migration.",
            ))
        if not guest.persistent:
            findings.append(_Finding(
                VerdictStatus.FAIL,
                f"{guest.name} is transient (has no persistent definition), so there is nothing to move offline.",
                "Define it persistently (virsh dumpxml > file; virsh define file) or migrate it live.",
            ))
    if guest.active_operation:
        findings.append(_Finding(
            VerdictStatus.FAIL,
            f"Another operation is in progress on {guest.name}: {guest.active_operation}.",
            "Wait for it to finish (or abort it), then run the preflight again.",
        ))
    ok = f"{guest.name} is {state}, which fits a{' live' if options.live else 'n offline'} migration."
    if options.live and state == "paused":
        ok += " It will arrive paused."
    return _verdict("guest-state", findings, ok)


CHECKS: tuple[Callable[[PairFacts, GuestSide, MigrationOptions], Verdict], ...] = (
    check_host_identity,
    check_name_resolution,
    check_domain_conflict,
    check_cpu,
    check_hypervisor,
    check_storage,
    check_capacity,
    check_ports,
    check_guest_state,
)

# Checks that only need the VMPortal-side facts of the guest: still meaningful when a host is down.
_OFFLINE_SAFE = {check_guest_state}


def run_preflight(pair: PairFacts, guest: GuestSide, options: MigrationOptions) -> list[Verdict]:
    """Every check, in grid order; reachability first. Unreachable hosts leave the rest unverified."""
    reachability = check_reachability(pair, guest, options)
    verdicts = [reachability]
    down = next((h for h in (pair.source, pair.destination) if not h.reachable), None)
    for check in CHECKS:
        if down is not None and check not in _OFFLINE_SAFE:
            verdicts.append(_unverified(check.__name__.removeprefix("check_").replace("_", "-"), down))
        else:
            verdicts.append(check(pair, guest, options))
    return verdicts


def overall(verdicts: Iterable[Verdict]) -> str:
    """The worst status. No verdicts means nothing was checked, which is not a pass."""
    return worst(v.status for v in verdicts).value


@dataclass(frozen=True)
class Candidate:
    """A possible destination with its preflight verdicts, for placement."""

    destination: HostSide
    verdicts: tuple[Verdict, ...]

    # What rank_destinations reads of a candidate (a stored PreflightRun has the same names).
    is_pending = False

    @property
    def overall(self) -> str:
        return overall(self.verdicts)

    @property
    def memory_free_kib(self) -> int | None:
        return self.destination.memory_free_kib


class Rankable(Protocol):
    """A destination with its verdict: a Candidate, or a stored PreflightRun."""

    is_pending: bool
    overall: str
    memory_free_kib: int | None
    destination: Any  # with a .name


def rank_destinations(candidates: Iterable[Rankable]) -> list:
    """Best destination first: checked before pending; passes, then warnings, then failures;
    within each, most free memory; then name (case-insensitive)."""
    return sorted(
        candidates,
        key=lambda c: (
            c.is_pending, severity(c.overall), -(c.memory_free_kib or 0), c.destination.name.lower()
        ),
    )
