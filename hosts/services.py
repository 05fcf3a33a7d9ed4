"""Inventory writes. Each service runs in one transaction and writes its audit event there;
a refused request is audited in a transaction of its own, so the refusal is kept.

Views, management commands, jobs and the watcher all change hosts and guests through these.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import NoReturn

from django.db import transaction
from django.utils import timezone

from core import broadcast
from core.actors import Actor
from core.audit import audit_record, audit_record_now
from core.choices import AuditResultChoices, JobStatusChoices
from core.encryption import SecretUnreadable, decrypt_secret, encrypt_secret
from core.errors import ServiceRefused
from core.jobs import job_enqueue
from core.models import Job
from hosts.adapters.facts import OsRelease, StorageLocation
from hosts.adapters.libvirt import DomainInfo, HostFacts as AdapterHostFacts
from hosts.adapters.ssh import HostKeyInfo, generate_keypair
from hosts.adapters.stats import HostStats

from . import disk_sizes, leases, live_state, load, load_store
from .choices import (
    DiskStorageChoices,
    GuestLeaseKindChoices,
    HostAuthMethodChoices,
    HostJobKindChoices,
    HostStatusChoices,
    VMActionChoices,
    VMStateChoices,
)
from .models import (
    GuestLoad,
    Host,
    HostFacts,
    HostLoad,
    LoadCounters,
    PortalKey,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
)
from .vm_actions import vm_action_allowed

logger = logging.getLogger(__name__)

# Explicit job timeouts, each longer than the work it bounds.
FETCH_HOST_KEY_TIMEOUT_S = 60
REFRESH_TIMEOUT_S = 300
VM_ACTION_TIMEOUT_S = 240


@dataclass(frozen=True)
class HostConnection:
    """How the portal reaches a host, as an admin entered it."""

    address: str
    ssh_port: int
    ssh_user: str
    auth_method: HostAuthMethodChoices
    private_key_pem: str | None = None
    password: str | None = None
    libvirt_uri: str = ""

    def audit_parameters(self) -> dict:
        return {
            "address": self.address,
            "ssh_port": self.ssh_port,
            "ssh_user": self.ssh_user,
            "auth_method": str(self.auth_method),
            "private_key": self.private_key_pem,
            "password": self.password,
            "libvirt_uri": self.libvirt_uri,
        }


def _apply_connection(host: Host, connection: HostConnection) -> None:
    host.address = connection.address
    host.ssh_port = connection.ssh_port
    host.ssh_user = connection.ssh_user
    host.auth_method = connection.auth_method
    host.libvirt_uri = connection.libvirt_uri
    if connection.auth_method == HostAuthMethodChoices.PRIVATE_KEY:
        host.secret_encrypted = encrypt_secret(connection.private_key_pem or "")
    elif connection.auth_method == HostAuthMethodChoices.PASSWORD:
        host.secret_encrypted = encrypt_secret(connection.password or "")
    else:
        host.secret_encrypted = ""


def _pin(host: Host, key: HostKeyInfo) -> None:
    host.host_key = key.openssh
    host.host_key_fingerprint = key.fingerprint
    host.host_key_trusted_at = timezone.now()
    host.presented_host_key = ""
    host.presented_host_key_fingerprint = ""
    host.presented_host_key_at = None
    host.status = HostStatusChoices.UNKNOWN
    host.last_error = ""
    host.last_error_hint = ""


@transaction.atomic
def portal_key_get_or_create(*, actor: Actor) -> PortalKey:
    """The portal's SSH key pair, generated (and audited) the first time it is needed."""
    key = PortalKey.objects.select_for_update().order_by("pk").first()
    if key is not None:
        return key
    private_pem, public = generate_keypair()
    key = PortalKey.objects.create(private_key_encrypted=encrypt_secret(private_pem), public_key=public)
    audit_record(
        actor=actor,
        action="portal_key.generate",
        result=AuditResultChoices.OK,
        target=key,
        parameters={"public_key": public},
        message="Generated the portal's SSH key pair.",
    )
    return key


@transaction.atomic
def host_create(
    *, name: str, connection: HostConnection, actor: Actor, trusted_host_key: HostKeyInfo | None = None
) -> tuple[Host, Job]:
    """Add a host and start on its SSH host key.

    Without trusted_host_key the host waits for an admin to confirm the key a background job
    fetches (returned job). With it (the caller has verified the fingerprint, e.g. on the
    command line) the key is pinned at once and the returned job is the first refresh.
    """
    if Host.all_objects.not_removed().filter(name__iexact=name).exists():
        raise ServiceRefused(f"A host named {name!r} already exists.", hint="Choose another name.")
    if connection.auth_method == HostAuthMethodChoices.PORTAL_KEY:
        portal_key_get_or_create(actor=actor)
    host = Host(name=name)
    _apply_connection(host, connection)
    if trusted_host_key is not None:
        _pin(host, trusted_host_key)
    host.full_clean()
    host.save()
    parameters = {"name": name, **connection.audit_parameters()}
    if trusted_host_key is not None:
        parameters["host_key_fingerprint"] = trusted_host_key.fingerprint
    audit_record(
        actor=actor,
        action="host.add",
        result=AuditResultChoices.OK,
        target=host,
        parameters=parameters,
        message=(
            f"Added host {name}; host key {trusted_host_key.fingerprint} trusted."
            if trusted_host_key
            else f"Added host {name}; waiting for its host key to be confirmed."
        ),
    )
    broadcast.inventory_changed(host_id=host.pk, hosts_changed=True)
    if trusted_host_key is not None:
        return host, _enqueue_refresh(host, actor=actor)
    return host, _enqueue_fetch_host_key(host, actor=actor)


@transaction.atomic
def host_connection_update(
    *, host: Host, connection: HostConnection, actor: Actor, trusted_host_key: HostKeyInfo | None = None
) -> Host:
    """Change how the portal reaches a host (and, when given, re-pin its verified host key)."""
    host = Host.all_objects.select_for_update().get(pk=host.pk)
    _apply_connection(host, connection)
    parameters = connection.audit_parameters()
    if trusted_host_key is not None and trusted_host_key.openssh != host.host_key:
        parameters["host_key_fingerprint"] = trusted_host_key.fingerprint
        parameters["previous_host_key_fingerprint"] = host.host_key_fingerprint
        _pin(host, trusted_host_key)
    host.full_clean()
    host.save()
    audit_record(
        actor=actor,
        action="host.update",
        result=AuditResultChoices.OK,
        target=host,
        parameters=parameters,
        message=f"Updated the connection settings of {host.name}.",
    )
    broadcast.inventory_changed(host_id=host.pk)
    return host


def _enqueue_fetch_host_key(host: Host, *, actor: Actor) -> Job:
    return job_enqueue(
        kind=HostJobKindChoices.FETCH_HOST_KEY,
        func="hosts.jobs.fetch_host_key_job",
        args=(host.pk,),
        target=host,
        timeout_s=FETCH_HOST_KEY_TIMEOUT_S,
        actor=actor,
    )


# A refresh that keeps the os-release and disk placement read recently (hosts.probe_rules).
ROUTINE_REFRESH = "routine"


def _enqueue_refresh(host: Host, *, actor: Actor, enqueue: bool = True, full: bool = True) -> Job:
    return job_enqueue(
        kind=HostJobKindChoices.REFRESH,
        func="hosts.jobs.refresh_host_job",
        args=(host.pk, full),
        target=host,
        timeout_s=REFRESH_TIMEOUT_S,
        actor=actor,
        enqueue=enqueue,
        variant="" if full else ROUTINE_REFRESH,
    )


@transaction.atomic
def host_key_fetch_request(*, host: Host, actor: Actor) -> Job:
    """Fetch the host's SSH key again, for an admin to confirm (e.g. after a mismatch)."""
    audit_record(
        actor=actor,
        action="host.fetch_key",
        result=AuditResultChoices.OK,
        target=host,
        message=f"Asked {host.name} for its SSH host key.",
    )
    return _enqueue_fetch_host_key(host, actor=actor)


@transaction.atomic
def host_key_presented(*, host: Host, key: HostKeyInfo) -> Host:
    """Remember the key the host presented, for an admin to confirm on the trust page."""
    host = Host.all_objects.select_for_update().get(pk=host.pk)
    host.presented_host_key = key.openssh
    host.presented_host_key_fingerprint = key.fingerprint
    host.presented_host_key_at = timezone.now()
    host.save(update_fields=["presented_host_key", "presented_host_key_fingerprint", "presented_host_key_at"])
    broadcast.inventory_changed(host_id=host.pk)
    return host


def host_key_trust(*, host: Host, fingerprint: str, actor: Actor) -> Job:
    """Pin the presented host key whose fingerprint the admin confirmed, then refresh the host.

    The confirmed fingerprint must be the one on record: a key that changed between showing
    and confirming is refused (and audited).
    """
    with transaction.atomic():
        host = Host.all_objects.select_for_update().get(pk=host.pk)
        presented = host.presented_host_key_fingerprint
        if host.presented_host_key and fingerprint == presented:
            previous = host.host_key_fingerprint
            _pin(host, HostKeyInfo.from_openssh(host.presented_host_key))
            host.save()
            audit_record(
                actor=actor,
                action="host.trust_key",
                result=AuditResultChoices.OK,
                target=host,
                parameters={"fingerprint": fingerprint, "previous_fingerprint": previous},
                message=f"Trusted SSH host key {fingerprint} for {host.name}.",
            )
            broadcast.inventory_changed(host_id=host.pk)
            return _enqueue_refresh(host, actor=actor)
    _refuse(
        actor=actor,
        action="host.trust_key",
        target=host,
        parameters={"confirmed_fingerprint": fingerprint, "presented_fingerprint": presented},
        message="The fingerprint you confirmed is not the one the host presented last.",
        hint="Read the host key again and compare the new fingerprint with the host's console.",
    )


def _refuse(*, actor: Actor, action: str, target, parameters: dict, message: str, hint: str) -> NoReturn:
    """Audit a refused request in its own transaction (it must outlive the refusal), then raise."""
    audit_record_now(
        actor=actor, action=action, result=AuditResultChoices.REFUSED, target=target,
        parameters=parameters, message=message,
    )
    raise ServiceRefused(message, hint=hint)


@transaction.atomic
def host_refresh_request(*, host: Host, actor: Actor, enqueue: bool = True, full: bool = True) -> Job | None:
    """Queue a refresh of the host's facts and guests; reuse one already waiting in the queue.

    enqueue=False creates the job for the caller to run at once (hosts.jobs.refresh_host_job).
    full=False (the periodic refresh, the watcher's after events: a "routine" job) keeps the
    recorded os-release and disk placement while they are recent (``hosts.probe_rules``); a full
    request reuses only a waiting full job, a routine one reuses either.
    Returns None for a host the portal may not connect to (host key not trusted or mismatched).
    """
    if not host.is_connectable:
        return None
    if enqueue:
        waiting = Job.objects.filter(
            kind=HostJobKindChoices.REFRESH,
            target_type="host",
            target_id=str(host.pk),
            status=JobStatusChoices.QUEUED,
        )
        waiting = (waiting if not full else waiting.filter(variant="")).first()
        if waiting is not None:
            return waiting
    return _enqueue_refresh(host, actor=actor, enqueue=enqueue, full=full)


def _storage_of(disk, storage: dict[str, StorageLocation]) -> tuple[str, str, str]:
    if disk.source_type == "network" or disk.protocol:
        return DiskStorageChoices.NETWORK, "", ""
    location = storage.get(disk.source)
    if location is None:
        return DiskStorageChoices.UNKNOWN, "", ""
    kind = DiskStorageChoices.SHARED if location.shared else DiskStorageChoices.LOCAL
    return kind, location.fstype, location.mountpoint


def _definition_fields(info: DomainInfo) -> dict:
    if not info.definition_xml:
        return {}  # not read (a transient guest, or a partial read): keep the last one known
    if len(info.definition_xml) > VirtualMachine.MAX_DEFINITION_CHARS:
        logger.warning("definition of %s is %d characters, over the %d kept; not stored",
                       info.name, len(info.definition_xml), VirtualMachine.MAX_DEFINITION_CHARS)
        return {"definition_encrypted": "", "definition_at": None}
    return {"definition_encrypted": encrypt_secret(info.definition_xml), "definition_at": timezone.now()}


def _vm_fields(info: DomainInfo, *, definition: bool = True) -> dict:
    return {
        **(_definition_fields(info) if definition else {}),
        "name": info.name,
        "state": info.state if info.state in VMStateChoices.values else VMStateChoices.NOSTATE,
        "state_reason": info.reason,
        "libvirt_id": info.id,
        "vcpus": info.vcpus,
        "memory_kib": info.memory_kib,
        "max_memory_kib": info.max_memory_kib,
        "arch": info.arch,
        "domain_type": info.domain_type,
        "machine": info.machine,
        "persistent": info.persistent,
        "autostart": info.autostart,
        "cpu_mode": info.cpu_mode or "",
        "cpu_model": info.cpu_model or "",
        "pinned": info.placement.pinned,
        "pin_to": info.placement.pin_to,
        "anti_affinity": list(info.placement.anti_affinity),
        "host_devices": min(info.host_devices, 32767),
        "managed_save": info.managed_save,
        "updated": timezone.now(),
    }


def _vm_changes(vm: VirtualMachine, info: DomainInfo) -> dict:
    """The fields of a recorded guest that differ from what the host said (the definition compared
    in clear: each encryption of the same text differs)."""
    wanted = _vm_fields(info, definition=False)
    wanted.pop("updated")
    changes = {key: value for key, value in wanted.items() if getattr(vm, key) != value}
    if info.definition_xml:  # read this time: encrypted and stored again only if it differs (or is too large)
        kept = info.definition_xml if len(info.definition_xml) <= VirtualMachine.MAX_DEFINITION_CHARS else ""
        if _stored_definition(vm) != kept:
            changes.update(_definition_fields(info))
    return changes


def _stored_definition(vm: VirtualMachine) -> str | None:
    if not vm.definition_encrypted:
        return ""
    try:
        return decrypt_secret(vm.definition_encrypted)
    except SecretUnreadable:
        return None  # stored with a key no longer configured: store it again with the current one


def _nic_rows(info: DomainInfo) -> list[tuple[str, str, str, str]]:
    return sorted((nic.mac, nic.type, nic.source, nic.model) for nic in info.nics)


def _save_vms(host: Host, domains: list[DomainInfo], *, read_at) -> tuple[dict[str, VirtualMachine], dict]:
    """The host's guests in a few statements: one read of their rows and one of their NICs, then
    only the rows that changed (bulk create, bulk update; a guest's NICs replaced only when they
    differ), and one statement that stamps every guest seen (``updated``: when a refresh or an
    event last saw it; the recovery sweep reads it). Returns the guests by UUID and counts.

    A guest's state is written only when the host was read (``read_at``) after the recorded
    state was true (``live_state.read_is_newer``): the rows are read locked, so an event
    either wrote before this read or waits for this transaction and writes after it.
    """
    wanted = {str(info.uuid) for info in domains}
    recorded = {str(vm.uuid): vm for vm in VirtualMachine.objects.select_for_update().filter(host=host)}
    nics: dict[int, list] = {}
    for vm_id, *nic in (VirtualNic.objects.filter(vm__host=host)
                        .values_list("vm_id", "mac", "type", "source", "model")):
        nics.setdefault(vm_id, []).append(tuple(nic))
    now = timezone.now()
    create: list[VirtualMachine] = []
    update: list[VirtualMachine] = []
    fields: set[str] = set()
    for info in domains:
        vm = recorded.get(str(info.uuid))
        if vm is None:
            create.append(VirtualMachine(host=host, uuid=info.uuid,
                                         **{**_vm_fields(info), "updated": now, "state_at": read_at}))
            continue
        changes = _vm_changes(vm, info)
        if "state" in changes or "state_reason" in changes:
            if live_state.read_is_newer(read_at=read_at, state_at=vm.state_at):
                changes["state_at"] = read_at
            else:
                changes.pop("state", None)
                changes.pop("state_reason", None)
        vm.updated = now
        if changes:
            for key, value in changes.items():
                setattr(vm, key, value)
            fields.update(changes)
            update.append(vm)
    created = VirtualMachine.objects.bulk_create(create, batch_size=500)
    if update:
        VirtualMachine.objects.bulk_update(update, sorted(fields), batch_size=500)
    seen = [vm.pk for uuid, vm in recorded.items() if uuid in wanted]
    if seen:
        VirtualMachine.objects.filter(pk__in=seen).update(updated=now)
    saved = {**recorded, **{str(vm.uuid): vm for vm in created}}
    renic = [(saved[str(info.uuid)], info) for info in domains
             if sorted(nics.get(saved[str(info.uuid)].pk, [])) != _nic_rows(info)]
    if renic:
        VirtualNic.objects.filter(vm__in=[vm.pk for vm, _ in renic]).delete()
        VirtualNic.objects.bulk_create(
            [VirtualNic(vm=vm, mac=nic.mac, type=nic.type, source=nic.source, model=nic.model)
             for vm, info in renic for nic in info.nics], batch_size=500)
    return ({uuid: vm for uuid, vm in saved.items() if uuid in wanted},
            {"created": len(created), "updated": len(update), "nics_replaced": len(renic)})


_DISK_FIELDS = ("device", "source_type", "source", "protocol", "format", "readonly", "shareable", "storage",
                "storage_fstype", "storage_mountpoint")


def _disk_fields(disk, storage: dict[str, StorageLocation]) -> dict:
    kind, fstype, mountpoint = _storage_of(disk, storage)
    return {"device": disk.device, "source_type": disk.source_type, "source": disk.source, "protocol": disk.protocol,
            "format": disk.format, "readonly": disk.readonly, "shareable": disk.shareable, "storage": kind,
            "storage_fstype": fstype, "storage_mountpoint": mountpoint}


def _measured_sizes(stats: HostStats | None) -> dict[tuple[str, str], tuple[str, disk_sizes.Sizes]]:
    """(guest uuid, target) → (the path libvirt sized, its sizes), from one refresh's bulk stats."""
    if stats is None:
        return {}
    return {
        (d.uuid, disk.name): (disk.path, disk_sizes.Sizes(disk.capacity_bytes, disk.allocation_bytes,
                                                          disk.physical_bytes))
        for d in stats.domains for disk in d.disks
    }


def _save_disks(host: Host, vms: dict[str, VirtualMachine], domains: list[DomainInfo],
                storage: dict[str, StorageLocation], stats: HostStats | None) -> dict:
    """Every disk of the host's guests in a few statements: one read, then only the rows that changed.

    Sizes come from the refresh's bulk stats (``stats``); a disk they do not size keeps what was
    recorded while its source is the same (``disk_sizes.sizes_to_keep``). Returns counts.
    """
    measured = _measured_sizes(stats)
    existing = list(VirtualDisk.objects.filter(vm__host=host).order_by("pk")
                    .values("pk", "vm_id", "target", *_DISK_FIELDS, *disk_sizes.SIZE_FIELDS))
    recorded = {(row["vm_id"], row["target"]): row for row in reversed(existing)}  # the first row of a key wins
    wanted: dict[tuple[int, str], dict] = {}
    for info in domains:
        vm = vms[str(info.uuid)]
        for disk in info.disks:
            key = (vm.pk, disk.target)
            fields = _disk_fields(disk, storage)
            before = recorded.get(key)
            found = measured.get((str(info.uuid), disk.target))
            # Sizes of another file than the one now defined (changed between the two reads) are not its sizes.
            other_file = (found is not None and found[0] and disk.source_type in ("file", "block")
                          and found[0] != disk.source)
            sizes = found[1] if found is not None and not other_file else None
            kept = disk_sizes.sizes_to_keep(
                measured=sizes,
                recorded=disk_sizes.Sizes(*(before[f] for f in disk_sizes.SIZE_FIELDS)) if before else None,
                same_source=before is not None and before["source"] == disk.source,
            )
            fields.update({f: getattr(kept, f) for f in disk_sizes.SIZE_FIELDS})
            wanted[key] = fields
    create, update, delete = disk_sizes.disk_changes(
        ((row["pk"], (row["vm_id"], row["target"]), row) for row in existing), wanted)
    if delete:
        VirtualDisk.objects.filter(pk__in=delete).delete()
    if create:
        VirtualDisk.objects.bulk_create([VirtualDisk(vm_id=key[0], target=key[1], **wanted[key]) for key in create],
                                        batch_size=500)
    if update:
        VirtualDisk.objects.bulk_update([VirtualDisk(pk=row_id, **fields) for row_id, fields in update],
                                        [*_DISK_FIELDS, *disk_sizes.SIZE_FIELDS], batch_size=500)
    return {"created": len(create), "updated": len(update), "deleted": len(delete)}


@transaction.atomic
def host_inventory_save(
    *,
    host: Host,
    facts: AdapterHostFacts,
    os_release: OsRelease | None,
    domains: list[DomainInfo],
    storage: dict[str, StorageLocation],
    stats: HostStats | None = None,
    probed_at=None,
    read_at=None,
    actor: Actor,
) -> dict:
    """Store what a refresh read: facts, guests (added, changed, gone), their disks with the sizes
    the refresh's bulk stats gave (``stats``; None: sizes kept as recorded), host reachable.
    ``probed_at``: when os-release and ``storage`` were read on the host (None: not this time,
    ``storage`` then holds the placements recorded before). ``read_at``: when the guests were
    read (None: now); a guest's state recorded as of later (a lifecycle event's) is kept.

    Returns counts {"vms": n, "added": a, "removed": r}.
    """
    host = Host.all_objects.select_for_update().get(pk=host.pk)
    now = timezone.now()
    os_fields = (
        {"os_pretty_name": os_release.pretty_name, "os_id": os_release.id, "os_version_id": os_release.version_id}
        if os_release is not None
        else {}
    )
    HostFacts.objects.update_or_create(
        host=host,
        defaults={
            "hostname": facts.hostname,
            "host_uuid": facts.host_uuid,
            "arch": facts.arch,
            "cpu_vendor": facts.cpu_vendor,
            "cpu_model": facts.cpu_model,
            "cpu_features": list(facts.cpu_features),
            "hypervisor": facts.hypervisor,
            "hypervisor_version": facts.hypervisor_version,
            "libvirt_version": facts.libvirt_version,
            "domain_types": list(facts.domain_types),
            "machine_types": list(facts.machine_types),
            "memory_total_kib": facts.memory_total_kib,
            "memory_free_kib": facts.memory_free_kib,
            "cpus": facts.cpus,
            "gathered_at": now,
            **({"probed_at": probed_at} if probed_at is not None else {}),
            **os_fields,
        },
    )
    states_before = {str(uuid): state for uuid, state in host.vms.values_list("uuid", "state")}
    known = set(states_before)
    saved, vms = _save_vms(host, domains, read_at=read_at or now)
    seen = set(saved)
    changed_states = {vm.pk: (vm.state, vm.get_state_display()) for uuid, vm in saved.items()
                      if states_before.get(uuid) != vm.state}
    gone = known - seen
    if gone:
        host.vms.filter(uuid__in=gone).delete()
    disks = _save_disks(host, saved, domains, storage, stats)
    _mark_reachable(host, now=now, actor=actor)
    # vm.state for the guests whose state the refresh found changed, host.status for the host.
    broadcast.inventory_changed(host_id=host.pk, host_status=(host.status, host.get_status_display()),
                                guests=changed_states)
    logger.debug("%s: guest rows created %d, updated %d, NICs replaced for %d; disk rows created %d, updated %d, "
                 "deleted %d", host.name, vms["created"], vms["updated"], vms["nics_replaced"], disks["created"],
                 disks["updated"], disks["deleted"])
    return {"vms": len(seen), "added": len(seen - known), "removed": len(gone)}


def _mark_reachable(host: Host, *, now, actor: Actor) -> None:
    was = host.status
    host.status = HostStatusChoices.REACHABLE
    host.last_error = ""
    host.last_error_hint = ""
    host.last_checked = now
    host.last_seen = now
    host.save(update_fields=["status", "last_error", "last_error_hint", "last_checked", "last_seen"])
    if was == HostStatusChoices.UNREACHABLE:
        audit_record(
            actor=actor,
            action="host.reachable",
            result=AuditResultChoices.OK,
            target=host,
            message=f"{host.name} is reachable again.",
        )


@transaction.atomic
def host_contact_failed(
    *, host: Host, error: str, hint: str, key_mismatch: bool = False, actor: Actor, job: Job | None = None
) -> Host:
    """Record that the portal could not reach (or refused to trust) the host.

    Audited when the host's status changes, so a host that stays down does not flood the trail.
    """
    host = Host.all_objects.select_for_update().get(pk=host.pk)
    was = host.status
    host.status = HostStatusChoices.KEY_MISMATCH if key_mismatch else HostStatusChoices.UNREACHABLE
    host.last_error = error
    host.last_error_hint = hint
    host.last_checked = timezone.now()
    host.save(update_fields=["status", "last_error", "last_error_hint", "last_checked"])
    if was != host.status:
        audit_record(
            actor=actor,
            action="host.key_mismatch" if key_mismatch else "host.unreachable",
            result=AuditResultChoices.REFUSED if key_mismatch else AuditResultChoices.FAILED,
            target=host,
            message=error,
            job=job,
        )
    broadcast.host_status(host)
    return host


def vm_action_request(*, vm: VirtualMachine, action: VMActionChoices, actor: Actor) -> Job:
    """Queue start / shut down / force off of a guest, audited as requested (or refused).

    The job claims the guest's lease: refused (GuestBusy, naming the holder) while a migration
    or another action holds it.
    """
    action = VMActionChoices(action)
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    parameters = {"action": str(action), "vm_uuid": str(vm.uuid), "host": vm.host.name, "state": vm.state}
    if not vm.host.is_connectable:
        _refuse(
            actor=actor, action=f"vm.{action}", target=vm, parameters=parameters,
            message=f"The host {vm.host.name} cannot be contacted: {vm.host.get_status_display()}.",
            hint="Fix the host's connection first (see its page).",
        )
    if not vm_action_allowed(action, vm.state, persistent=vm.persistent):
        _refuse(
            actor=actor, action=f"vm.{action}", target=vm, parameters=parameters,
            message=f"{action.label} is not possible while {vm.name} is {vm.get_state_display().lower()}.",
            hint="Refresh the host if the state shown is out of date.",
        )
    try:
        with transaction.atomic():
            job = job_enqueue(
                kind=f"vm.{action}",
                func="hosts.jobs.vm_action_job",
                args=(vm.pk, str(action)),
                target=vm,
                timeout_s=VM_ACTION_TIMEOUT_S,
                actor=actor,
            )
            # The job holds the guest until it ends (hosts.jobs.vm_action_job releases it).
            leases.lease_claim(
                guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.POWER_ACTION, owner=job,
                actor=actor, label=f"{action.label.lower()} job #{job.pk}",
            )
            audit_record(
                actor=actor,
                action=f"vm.{action}",
                result=AuditResultChoices.OK,
                target=vm,
                parameters=parameters,
                message=f"{action.label} of {vm.name} on {vm.host.name} requested.",
                job=job,
            )
    except leases.GuestBusy as busy:
        leases.lease_refused(busy, actor=actor, action=f"vm.{action}", target=vm, parameters=parameters)
    return job


@transaction.atomic
def vm_state_save(*, vm: VirtualMachine, info: DomainInfo) -> VirtualMachine:
    """Update one guest's state right after an action (the next refresh updates the rest)."""
    vm = VirtualMachine.objects.select_for_update().get(pk=vm.pk)
    fields = ["state", "state_reason", "libvirt_id", "updated"] + (["managed_save"] if info.definition_xml else [])
    for field_name in fields:
        setattr(vm, field_name, _vm_fields(info)[field_name])
    vm.state_at = vm.updated
    vm.save(update_fields=[*fields, "state_at"])
    broadcast.vm_state(vm)
    return vm


@transaction.atomic
def vm_state_observed(*, host: Host, domain_uuid: str, state: str, reason: str) -> VirtualMachine | None:
    """A lifecycle event from ``host`` said guest ``domain_uuid`` is now ``state``: show it at once.

    Only a guest the inventory already has on that host changes, and only its state (the
    debounced refresh that follows the event re-reads the rest). Returns the guest when its
    state changed, else None.
    """
    if state not in VMStateChoices.values:
        return None
    try:
        guest_uuid = uuid.UUID(str(domain_uuid))
    except ValueError:
        return None
    vm = VirtualMachine.objects.select_for_update().filter(host=host, uuid=guest_uuid).first()
    reason = str(reason)[: VirtualMachine._meta.get_field("state_reason").max_length]
    if vm is None or (vm.state, vm.state_reason) == (state, reason):
        return None
    vm.state, vm.state_reason, vm.updated = state, reason, timezone.now()
    vm.state_at = vm.updated
    vm.save(update_fields=["state", "state_reason", "updated", "state_at"])
    broadcast.vm_state(vm)
    return vm


@transaction.atomic
def vm_action_outcome(
    *, vm: VirtualMachine, action: VMActionChoices, ok: bool, message: str, actor: Actor, job: Job
) -> None:
    """Audit how a guest action ended."""
    audit_record(
        actor=actor,
        action=f"vm.{action}",
        result=AuditResultChoices.OK if ok else AuditResultChoices.FAILED,
        target=vm,
        parameters={"action": str(action), "vm_uuid": str(vm.uuid)},
        message=message,
        job=job,
    )


@transaction.atomic
def host_maintenance_set(*, host: Host, in_maintenance: bool, actor: Actor) -> Host:
    """Put a host into maintenance (no migrations into it) or take it out again."""
    host = Host.all_objects.select_for_update().get(pk=host.pk)
    if host.in_maintenance == in_maintenance:
        return host
    host.in_maintenance = in_maintenance
    host.maintenance_since = timezone.now() if in_maintenance else None
    host.save(update_fields=["in_maintenance", "maintenance_since"])
    audit_record(
        actor=actor,
        action="host.maintenance_on" if in_maintenance else "host.maintenance_off",
        result=AuditResultChoices.OK,
        target=host,
        parameters={"in_maintenance": in_maintenance},
        message=(
            f"{host.name} is in maintenance: no guest will be migrated to it."
            if in_maintenance
            else f"{host.name} is out of maintenance."
        ),
    )
    broadcast.inventory_changed(host_id=host.pk)
    return host


@transaction.atomic
def vm_relocate(*, vm_uuid, source: Host, destination: Host) -> VirtualMachine | None:
    """After a migration: the guest's inventory row follows it from source to destination.

    The row is moved (so what points at it keeps pointing at the guest) unless a refresh of
    the destination already created one; then that row stays and the source's goes. Returns
    the destination's row, or None when neither host had one.
    """
    moving = VirtualMachine.objects.select_for_update().filter(host=source, uuid=vm_uuid).first()
    arrived = VirtualMachine.objects.select_for_update().filter(host=destination, uuid=vm_uuid).first()
    if moving is None:
        return arrived
    if arrived is not None:
        moving.delete()
    else:
        moving.host = destination
        moving.updated = timezone.now()
        moving.save(update_fields=["host", "updated"])
        arrived = moving
    broadcast.inventory_changed(host_id=source.pk)
    broadcast.inventory_changed(host_id=destination.pk)
    return arrived


# --- Load history (measurements, not actions: no audit row) --------------------------------

_HOST_LOAD_FIELDS = ("memory_used_kib", "memory_free_kib", "cpu_pct")
_GUEST_LOAD_FIELDS = ("memory_kib", "vcpu_pct")


@transaction.atomic
def host_load_record(*, host: Host, stats: HostStats, now=None) -> load.Sample:
    """Keep what one refresh measured: the host's and its running guests' 5-minute points, and the counters.

    A bucket that has a point already keeps the average of both; CPU uses are deltas to the
    counters of the host's previous refresh. Four statements whatever the number of guests: the
    counters read (locked on PostgreSQL), one upsert of the host's point, one of its guests'
    points (``load_store.upsert_points``: the database merges a point into the one kept), one of
    the counters.
    """
    now = now or timezone.now()
    load_store.commit_lazily()
    kept = LoadCounters.objects.select_for_update().filter(host=host).first()
    before = load.Counters(kept.at, kept.cpu_busy_ns, kept.cpu_total_ns, kept.vcpu_ns) if kept else None
    if before and before.at >= now:
        before = None  # a clock step back: no delta rather than a wrong one
    measured = load.sample(stats, before, now=now)
    at = load.bucket_start(now, load.FINE_S)
    load_store.upsert_points(HostLoad, ("host_id", "step_s", "at"), _HOST_LOAD_FIELDS,
                             [(host.pk, load.FINE_S, at, 1, *_point_values(measured.host, _HOST_LOAD_FIELDS))])
    load_store.upsert_points(
        GuestLoad, ("host_id", "vm_uuid", "step_s", "at"), _GUEST_LOAD_FIELDS,
        [(host.pk, uuid, load.FINE_S, at, 1, *_point_values(values, _GUEST_LOAD_FIELDS))
         for uuid, values in measured.guests.items()],
    )
    c = measured.counters
    LoadCounters.objects.bulk_create(
        [LoadCounters(host=host, at=c.at, cpu_busy_ns=c.cpu_busy_ns, cpu_total_ns=c.cpu_total_ns,
                      vcpu_ns=dict(c.vcpu_ns), vcpu_delay_ns=dict(c.vcpu_delay_ns))],
        update_conflicts=True, unique_fields=["host"],
        update_fields=["at", "cpu_busy_ns", "cpu_total_ns", "vcpu_ns", "vcpu_delay_ns"],
    )
    return measured


def _point_values(values, fields) -> list:
    out = []
    for f in fields:
        value = values.get(f)
        out.append(round(value) if value is not None and f.endswith("_kib") else value)
    return out


# Hosts whose points one transaction of the sweep rolls: the write lock is held for a part of the
# sweep at a time (SQLite has one), so refreshes keep recording in between.
SWEEP_HOSTS_PER_TRANSACTION = 50


def load_retention_sweep(*, now=None) -> int:
    """Roll 5-minute points older than a week into hourly ones and drop hourly ones past 90 days.

    Periodic (hourly, ``apps.py``), never part of a refresh. Each transaction takes
    ``SWEEP_HOSTS_PER_TRANSACTION`` hosts' points through every step (``load_store.roll_up``: one
    aggregate query, batched upserts and one DELETE per table); a sweep stopped half-way leaves
    the other hosts for the next one. Returns how many rows were rolled up or deleted.
    """
    now = now or timezone.now()
    host_ids = list(Host.all_objects.order_by("pk").values_list("pk", flat=True))  # points go with their host
    done = 0
    for i in range(0, len(host_ids), SWEEP_HOSTS_PER_TRANSACTION):
        chunk = host_ids[i:i + SWEEP_HOSTS_PER_TRANSACTION]
        with transaction.atomic():
            for step in load.retention_steps(now):
                for model, series, fields in ((HostLoad, ("host_id",), _HOST_LOAD_FIELDS),
                                              (GuestLoad, ("host_id", "vm_uuid"), _GUEST_LOAD_FIELDS)):
                    done += load_store.roll_up(model, series, fields, step_s=step.step_s, before=step.roll_before,
                                               into_step_s=step.into_step_s, host_ids=chunk)
    return done


def vm_superseded_mark(*, host: Host, vm_uuid, note: str) -> int:
    """Mark ``host``'s copy of a guest as replaced by one elsewhere (kept until the host says it is gone).

    The caller audits the operation that replaced it; returns the rows marked.
    """
    return VirtualMachine.objects.filter(host=host, uuid=vm_uuid).update(
        superseded_at=timezone.now(), superseded_note=note[:255])
