"""A fake libvirt connection over one fleet host, at the level of libvirt-python.

``FakeConnect`` / ``FakeDomain`` answer the ``virConnect`` / ``virDomain`` calls the
adapters make (capabilities, domain XML, state, actions, job statistics, migration), so
the real adapter code (``hosts.adapters.libvirt``, ``migration``, ``storage.libvirt_pool``)
runs in unit tests. Failures are real ``libvirt.libvirtError``s with libvirt's error codes,
which the adapters translate into our errors as they would on a host.

Guests live in ``FleetHost.domains`` as ``DomainInfo``; their XML is written from it.
Storage pools are a real ``test://`` driver of the host (``FleetHost.pools``).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import libvirt

from hosts.adapters import libvirt as lv

if TYPE_CHECKING:
    from .fleet import FleetHost

_STATE_NUMBERS = {name: number for number, (name, _reasons) in lv._STATES.items()}


def error(message: str, code: int = libvirt.VIR_ERR_INTERNAL_ERROR) -> libvirt.libvirtError:
    """A libvirtError carrying ``code`` the way the binding fills it from virGetLastError."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


def no_domain(uuid: str) -> libvirt.libvirtError:
    return error(f"Domain not found: no domain with matching uuid '{uuid}'", libvirt.VIR_ERR_NO_DOMAIN)


def connection_lost(name: str) -> libvirt.libvirtError:
    return error(f"Cannot recv data: Connection reset by peer ({name})", libvirt.VIR_ERR_SYSTEM_ERROR)


def _version_number(text: str) -> int:
    major, minor, micro = ([int(p) for p in text.split(".")] + [0, 0, 0])[:3]
    return major * 1_000_000 + minor * 1_000 + micro


def capabilities_xml(facts: lv.HostFacts) -> str:
    root = ET.Element("capabilities")
    host = ET.SubElement(root, "host")
    ET.SubElement(host, "uuid").text = facts.host_uuid
    cpu = ET.SubElement(host, "cpu")
    ET.SubElement(cpu, "arch").text = facts.arch
    ET.SubElement(cpu, "model").text = facts.cpu_model
    ET.SubElement(cpu, "vendor").text = facts.cpu_vendor
    for feature in facts.cpu_features:
        ET.SubElement(cpu, "feature", name=feature)
    guest = ET.SubElement(root, "guest")
    ET.SubElement(guest, "os_type").text = "hvm"
    arch = ET.SubElement(guest, "arch", name=facts.arch)
    for machine in facts.machine_types:
        ET.SubElement(arch, "machine").text = machine
    for domain_type in facts.domain_types:
        ET.SubElement(arch, "domain", type=domain_type)
    return ET.tostring(root, encoding="unicode")


def domain_xml(info: lv.DomainInfo) -> str:
    """The XML libvirt would show for ``info`` (parse_domain_xml reads it back)."""
    root = ET.Element("domain", type=info.domain_type)
    if info.id is not None and info.state not in ("shutoff", "nostate"):
        root.set("id", str(info.id))
    ET.SubElement(root, "name").text = info.name
    ET.SubElement(root, "uuid").text = info.uuid
    ET.SubElement(root, "memory", unit="KiB").text = str(info.max_memory_kib or info.memory_kib)
    ET.SubElement(root, "currentMemory", unit="KiB").text = str(info.memory_kib)
    ET.SubElement(root, "vcpu").text = str(info.vcpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch=info.arch, machine=info.machine).text = "hvm"
    if info.cpu_mode or info.cpu_model:
        cpu = ET.SubElement(root, "cpu", mode=info.cpu_mode or "custom")
        if info.cpu_model:
            ET.SubElement(cpu, "model").text = info.cpu_model
    devices = ET.SubElement(root, "devices")
    for disk in info.disks:
        el = ET.SubElement(devices, "disk", type=disk.source_type, device=disk.device)
        ET.SubElement(el, "driver", name="qemu", type=disk.format)
        if disk.source_type == "network":
            ET.SubElement(el, "source", protocol=disk.protocol, name=disk.source)
        elif disk.source_type == "volume":
            pool, _, volume = disk.source.partition("/")
            ET.SubElement(el, "source", pool=pool, volume=volume)
        elif disk.source:
            ET.SubElement(el, "source", {"dev" if disk.source_type == "block" else "file": disk.source})
        ET.SubElement(el, "target", dev=disk.target)
        if disk.readonly:
            ET.SubElement(el, "readonly")
        if disk.shareable:
            ET.SubElement(el, "shareable")
    for nic in info.nics:
        el = ET.SubElement(devices, "interface", type=nic.type)
        ET.SubElement(el, "mac", address=nic.mac)
        ET.SubElement(el, "source", {"bridge" if nic.type == "bridge" else "network": nic.source})
        ET.SubElement(el, "model", type=nic.model)
    return ET.tostring(root, encoding="unicode")


class FakeDomain:
    """One guest of a fleet host, as a ``virDomain``."""

    def __init__(self, host: FleetHost, uuid: str):
        self.host = host
        self.uuid = uuid

    # -- reads
    @property
    def info(self) -> lv.DomainInfo:
        self.host.check_libvirt()
        try:
            return self.host.domains[self.uuid]
        except KeyError:
            raise no_domain(self.uuid) from None

    def UUIDString(self) -> str:  # noqa: N802 - libvirt's names
        return self.uuid

    def name(self) -> str:
        return self.info.name

    def state(self, flags: int = 0) -> list[int]:
        info = self.info
        number = _STATE_NUMBERS.get(info.state, 0)
        reasons = lv._STATES[number][1]
        return [number, reasons.index(info.reason) if info.reason in reasons else 0]

    def isActive(self) -> int:  # noqa: N802
        return int(self.info.state not in ("shutoff", "nostate"))

    def isPersistent(self) -> int:  # noqa: N802
        return int(self.info.persistent)

    def autostart(self) -> int:
        return int(self.info.autostart)

    def ID(self) -> int:  # noqa: N802
        return self.info.id if self.isActive() and self.info.id is not None else -1

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return domain_xml(self.info)

    def hasManagedSaveImage(self, flags: int = 0) -> int:  # noqa: N802
        self.info  # noqa: B018 - raises for a vanished guest
        return int(self.uuid in self.host.managed_save)

    def snapshotNum(self, flags: int = 0) -> int:  # noqa: N802
        self.info  # noqa: B018
        return len(self.host.snapshots.get(self.uuid, {}))

    # -- snapshots: host.snapshots[uuid][name] = FakeSnapshot, like libvirt's metadata
    def snapshotCreateXML(self, xml: str, flags: int = 0) -> FakeSnapshot:  # noqa: N802
        info = self.info
        self._act("snapshot-create")
        root = ET.fromstring(xml)
        name = root.findtext("name") or str(len(self.host.snapshots.get(self.uuid, {})) + 1)
        mine = self.host.snapshots.setdefault(self.uuid, {})
        if name in mine:
            raise error(f"operation failed: domain snapshot {name} already exists", libvirt.VIR_ERR_OPERATION_FAILED)
        memory = root.find("memory").get("snapshot", "no") if root.find("memory") is not None else "no"
        if memory != "no" and not self.isActive():
            raise error("Requested operation is not valid: domain is not running", libvirt.VIR_ERR_OPERATION_INVALID)
        asked = {d.get("name"): d.get("snapshot", "internal") for d in root.findall("disks/disk")}
        for disk in info.disks:
            if asked.get(disk.target, "internal") == "internal" and disk.format != "qcow2":
                raise error(f"unsupported configuration: internal snapshot for disk {disk.target} unsupported "
                            f"for storage type {disk.format}", libvirt.VIR_ERR_CONFIG_UNSUPPORTED)
        for other in mine.values():
            other.current = False
        self.host.snapshot_clock += 1
        snap = FakeSnapshot(self, name=name, description=root.findtext("description") or "",
                            state=info.state, memory=memory, disks=asked, info=info,
                            created=self.host.snapshot_clock)
        mine[name] = snap
        return snap

    def listAllSnapshots(self, flags: int = 0) -> list[FakeSnapshot]:  # noqa: N802
        self.info  # noqa: B018
        return list(self.host.snapshots.get(self.uuid, {}).values())

    def snapshotLookupByName(self, name: str, flags: int = 0) -> FakeSnapshot:  # noqa: N802
        self.info  # noqa: B018
        snap = self.host.snapshots.get(self.uuid, {}).get(name)
        if snap is None:
            raise error(f"Domain snapshot not found: no domain snapshot with matching name '{name}'",
                        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT)
        return snap

    def revertToSnapshot(self, snap: FakeSnapshot, flags: int = 0) -> int:  # noqa: N802
        self.info  # noqa: B018
        self._act("snapshot-revert")
        self.host.reverted.append((self.uuid, snap.name))
        if snap.memory != "no":
            self._set(snap.state, "from snapshot", id=self.info.id or self.host.next_domain_id())
        else:
            self._set("shutoff", "from snapshot", id=None)
        for other in self.host.snapshots.get(self.uuid, {}).values():
            other.current = other is snap
        return 0

    def blockInfo(self, target: str, flags: int = 0) -> list[int]:  # noqa: N802
        self.info  # noqa: B018
        size = self.host.block_sizes.get((self.uuid, target))
        if size is None:
            raise error(f"invalid argument: invalid path {target} not assigned to domain", libvirt.VIR_ERR_INVALID_ARG)
        return list(size)

    # -- actions
    def _set(self, state: str, reason: str, **changes) -> None:
        self.host.domains[self.uuid] = dataclasses.replace(self.info, state=state, reason=reason, **changes)

    def _act(self, verb: str) -> None:
        self.host.calls.append((verb, self.uuid))
        failure = self.host.libvirt_failures.get(verb)
        if failure is not None:
            raise failure

    def create(self) -> int:
        info = self.info
        self._act("start")
        if self.isActive():
            raise error("Requested operation is not valid: domain is already running", libvirt.VIR_ERR_OPERATION_INVALID)
        self._set("running", "booted", id=self.host.next_domain_id())
        return 0

    def shutdown(self) -> int:
        self._require_active()
        self._act("shutdown")
        if not self.host.shutdown_ignored:
            self._stop("shutdown")
        return 0

    def destroy(self) -> int:
        self._require_active()
        self._act("destroy")
        self._stop("destroyed")
        return 0

    def suspend(self) -> int:
        self._require_active()
        self._act("suspend")
        self._set("paused", "user")
        return 0

    def resume(self) -> int:
        self._act("resume")
        self._set("running", "unpaused")
        return 0

    def saveFlags(self, path: str, dxml, flags: int = 0) -> int:  # noqa: N802
        self._require_active()
        self._act("save")
        self.host.state_files[path] = (self.info, flags)
        self._stop("saved")
        return 0

    def managedSave(self, flags: int = 0) -> int:  # noqa: N802
        self._require_active()
        self._act("managed-save")
        self.host.managed_save.add(self.uuid)
        self._set("shutoff", "saved", id=None)
        return 0

    def managedSaveRemove(self, flags: int = 0) -> int:  # noqa: N802
        self._act("managed-save-remove")
        self.host.managed_save.discard(self.uuid)
        return 0

    def undefineFlags(self, flags: int = 0) -> int:  # noqa: N802
        info = self.info
        self._act("undefine")
        if self.isActive():
            self.host.domains[self.uuid] = dataclasses.replace(info, persistent=False)
        else:
            del self.host.domains[self.uuid]
        return 0

    def _require_active(self) -> None:
        if not self.isActive():
            raise error("Requested operation is not valid: domain is not running", libvirt.VIR_ERR_OPERATION_INVALID)

    def _stop(self, reason: str) -> None:
        if self.info.persistent:
            self._set("shutoff", reason, id=None)
        else:
            del self.host.domains[self.uuid]  # a transient guest is gone once it stops

    # -- jobs and migration (the fleet's MigrationJobs plays them)
    def jobStats(self, flags: int = 0) -> dict:  # noqa: N802
        self.info  # noqa: B018
        jobs = self.host.fleet.jobs
        if flags & libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED:
            return dict(self.host.completed.get(self.uuid, {"type": libvirt.VIR_DOMAIN_JOB_NONE}))
        if self.uuid in self.host.job_active:
            raise error("Operation not supported: migration in progress", libvirt.VIR_ERR_OPERATION_UNSUPPORTED)
        running = jobs.stats(self.host, self.uuid)
        if running.get("type") != libvirt.VIR_DOMAIN_JOB_NONE:
            return running
        return dict(self.host.domain_jobs.get(self.uuid, running))

    def blockJobInfo(self, target: str, flags: int = 0) -> dict:  # noqa: N802
        self.info  # noqa: B018
        return dict(self.host.block_jobs.get((self.uuid, target), {}))

    def abortJob(self) -> int:  # noqa: N802
        self.host.fleet.jobs.abort(self.host, self.uuid)
        return 0

    def migrateToURI3(self, dconnuri: str, params: dict, flags: int) -> int:  # noqa: N802
        self.host.fleet.jobs.migrate(self.host, self.uuid, dest_uri=dconnuri, params=params, flags=flags, dest_conn=None)
        return 0

    def migrate3(self, dconn: FakeConnect, params: dict, flags: int) -> FakeDomain:
        uri = f"qemu+tcp://{dconn.host.name}/system"
        self.host.fleet.jobs.migrate(self.host, self.uuid, dest_uri=uri, params=params, flags=flags, dest_conn=dconn)
        return FakeDomain(dconn.host, self.uuid)

    def migrateSetMaxDowntime(self, ms: int, flags: int = 0) -> int:  # noqa: N802
        self.host.fleet.jobs.calls.append(("set_max_downtime", ms))
        return 0

    def migrateSetMaxSpeed(self, mibps: int, flags: int = 0) -> int:  # noqa: N802
        self.host.fleet.jobs.calls.append(("set_max_speed", mibps))
        return 0

    def migrateStartPostCopy(self, flags: int = 0) -> int:  # noqa: N802
        self.host.fleet.jobs.start_postcopy(self.host, self.uuid)
        return 0


class FakeSnapshot:
    """One snapshot of a fake guest (a ``virDomainSnapshot``)."""

    def __init__(self, dom: FakeDomain, *, name: str, description: str, state: str, memory: str, disks: dict,
                 info: lv.DomainInfo, created: int):
        self.dom, self.name, self.description, self.state = dom, name, description, state
        self.memory, self.disks, self.info, self.created = memory, disks, info, created
        self.current = True

    def getName(self) -> str:  # noqa: N802
        return self.name

    def isCurrent(self, flags: int = 0) -> int:  # noqa: N802
        return int(self.current)

    def getXMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = self.name
        if self.description:
            ET.SubElement(root, "description").text = self.description
        ET.SubElement(root, "state").text = self.state if self.memory != "no" else "shutoff"
        ET.SubElement(root, "creationTime").text = str(1_700_000_000 + self.created)
        ET.SubElement(root, "memory", snapshot=self.memory)
        disks = ET.SubElement(root, "disks")
        for disk in self.info.disks:
            ET.SubElement(disks, "disk", name=disk.target, snapshot=self.disks.get(disk.target, "internal"))
        return ET.tostring(root, encoding="unicode")

    def delete(self, flags: int = 0) -> int:
        self.dom._act("snapshot-delete")
        mine = self.dom.host.snapshots.get(self.dom.uuid, {})
        if mine.get(self.name) is not self:
            raise error(f"Domain snapshot not found: no domain snapshot with matching name '{self.name}'",
                        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT)
        del mine[self.name]
        return 0


class FakeConnect:
    """A libvirt connection to one fleet host (a ``virConnect``)."""

    def __init__(self, host: FleetHost):
        self.host = host
        self.closed = False

    # -- host facts
    def getCapabilities(self) -> str:  # noqa: N802
        self.host.check_libvirt()
        return capabilities_xml(self.host.facts)

    def getHostname(self) -> str:  # noqa: N802
        self.host.check_libvirt()
        return self.host.facts.hostname

    def getInfo(self) -> list:  # noqa: N802
        facts = self.host.facts
        return [facts.arch, facts.memory_total_kib // 1024, facts.cpus, 2400, 1, 1, facts.cpus, 1]

    def getMemoryStats(self, cell: int, flags: int = 0) -> dict:  # noqa: N802
        return {"total": self.host.facts.memory_total_kib, "free": self.host.facts.memory_free_kib}

    def getCPUStats(self, cpu: int, flags: int = 0) -> dict:  # noqa: N802
        self.host.check_libvirt()
        return dict(self.host.cpu_times)

    def getFreeMemory(self) -> int:  # noqa: N802
        return self.host.facts.memory_free_kib * 1024

    def getType(self) -> str:  # noqa: N802
        return self.host.facts.hypervisor

    def getVersion(self) -> int:  # noqa: N802
        return _version_number(self.host.facts.hypervisor_version)

    def getLibVersion(self) -> int:  # noqa: N802
        return _version_number(self.host.facts.libvirt_version)

    def getURI(self) -> str:  # noqa: N802
        return f"qemu+tcp://{self.host.name}/system"

    # -- guests
    def listAllDomains(self, flags: int = 0) -> list[FakeDomain]:  # noqa: N802
        """Every guest, or with libvirt's filter flags only those that match each group asked."""
        self.host.check_libvirt()
        found = [FakeDomain(self.host, uuid) for uuid in list(self.host.domains)]
        groups = [  # (flag, flag of its opposite, the test), as virConnectListAllDomainsFlags pairs them
            (1, 2, lambda d: bool(d.isActive())),
            (4, 8, lambda d: bool(d.isPersistent())),
            (256, 512, lambda d: d.uuid in self.host.managed_save),
            (1024, 2048, lambda d: bool(d.autostart())),
        ]
        known = sum(flag | opposite for flag, opposite, _ in groups)
        if flags & ~known:
            raise NotImplementedError(f"the fake does not filter guests by flags {flags & ~known:#x}")
        for flag, opposite, test in groups:
            if flags & flag and not flags & opposite:
                found = [d for d in found if test(d)]
            elif flags & opposite and not flags & flag:
                found = [d for d in found if not test(d)]
        return found

    def getAllDomainStats(self, stats: int = 0, flags: int = 0) -> list[tuple[FakeDomain, dict]]:  # noqa: N802
        """The state, vCPU, balloon and block groups of every guest (the groups the adapters ask for)."""
        self.host.check_libvirt()
        found = []
        for dom in self.listAllDomains():
            info = dom.info
            values = {"state.state": dom.state()[0], "state.reason": dom.state()[1]}
            if flags & libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING and values["state.state"] != 1:
                continue
            if dom.isActive():
                values["vcpu.current"] = values["vcpu.maximum"] = info.vcpus
                values["vcpu.0.time"] = self.host.vcpu_times.get(dom.UUIDString(), 0)
                if dom.UUIDString() in self.host.vcpu_delays:
                    values["vcpu.0.delay"] = self.host.vcpu_delays[dom.UUIDString()]
                values["balloon.current"] = values["balloon.maximum"] = info.memory_kib
            values["block.count"] = len(info.disks)
            for i, disk in enumerate(info.disks):
                values[f"block.{i}.name"] = disk.target
                if disk.source:
                    values[f"block.{i}.path"] = disk.source
                # As libvirt: a disk it cannot size (here: none scripted) has no size fields at all.
                size = self.host.block_sizes.get((dom.UUIDString(), disk.target))
                if size is not None:
                    cap, alloc, phys = size
                    values.update({f"block.{i}.capacity": cap, f"block.{i}.allocation": alloc,
                                   f"block.{i}.physical": phys})
            found.append((dom, values))
        return found

    def lookupByUUIDString(self, uuid: str) -> FakeDomain:  # noqa: N802
        self.host.check_libvirt()
        if uuid not in self.host.domains:
            raise no_domain(uuid)
        return FakeDomain(self.host, uuid)

    def defineXML(self, xml: str) -> FakeDomain:  # noqa: N802
        self.host.check_libvirt()
        info = lv.parse_domain_xml(xml, state=5, persistent=True)
        old = self.host.domains.get(info.uuid)
        if old is not None:
            info = dataclasses.replace(info, state=old.state, reason=old.reason, id=old.id, autostart=old.autostart)
        self.host.domains[info.uuid] = info
        self.host.calls.append(("define", info.uuid))
        return FakeDomain(self.host, info.uuid)

    def restoreFlags(self, path: str, dxml, flags: int = 0) -> int:  # noqa: N802
        self.host.check_libvirt()
        self.host.calls.append(("restore", path))
        if path not in self.host.state_files:
            raise error(f"operation failed: failed to open {path}", libvirt.VIR_ERR_OPERATION_FAILED)
        info, _flags = self.host.state_files[path]
        state = "paused" if flags & libvirt.VIR_DOMAIN_SAVE_PAUSED else "running"
        self.host.domains[info.uuid] = dataclasses.replace(info, state=state, reason="restored",
                                                           id=self.host.next_domain_id())
        return 0

    def saveImageGetXMLDesc(self, path: str, flags: int = 0) -> str:  # noqa: N802
        self.host.check_libvirt()
        if path not in self.host.state_files:
            raise error(f"operation failed: failed to open {path}", libvirt.VIR_ERR_OPERATION_FAILED)
        return domain_xml(self.host.state_files[path][0])

    def listNetworks(self) -> list[str]:  # noqa: N802
        return sorted(self.host.networks)

    def listDefinedNetworks(self) -> list[str]:  # noqa: N802
        return []

    def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml_cpu, flags=0) -> int:  # noqa: N802
        self.host.check_libvirt()
        result = self.host.cpu_compare
        if isinstance(result, Exception):
            raise result
        return {
            "identical": libvirt.VIR_CPU_COMPARE_IDENTICAL,
            "superset": libvirt.VIR_CPU_COMPARE_SUPERSET,
            "incompatible": libvirt.VIR_CPU_COMPARE_INCOMPATIBLE,
        }[result]

    # -- storage pools: the host's own test:// driver
    def listAllStoragePools(self, flags: int = 0):  # noqa: N802
        self.host.check_libvirt()
        return self.host.pools.listAllStoragePools(flags)

    def storagePoolLookupByName(self, name: str):  # noqa: N802
        return self.host.pools.storagePoolLookupByName(name)

    def storagePoolDefineXML(self, xml: str, flags: int = 0):  # noqa: N802
        return self.host.pools.storagePoolDefineXML(xml, flags)

    # -- the connection itself
    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        return 0

    def registerCloseCallback(self, cb, opaque) -> int:  # noqa: N802
        return 0

    def unregisterCloseCallback(self) -> int:  # noqa: N802
        return 0

    def isAlive(self) -> int:  # noqa: N802
        return int(not self.closed and self.host.reachable)

    def close(self) -> int:
        self.closed = True
        return 0
