"""Talking to hosts for the inventory: the work the jobs run.

Each function opens a session to the host (``hosts.access``: stored credentials, pinned
key), gathers or acts through the adapters, and stores the result through services. Adapter errors carry a
message and a hint; they are recorded on the host and re-raised so the job fails with them.
"""

from __future__ import annotations

import logging
import time

from core.actors import Actor
from core.choices import JobLogLevelChoices
from core.jobs import JobContext
from hosts.adapters import facts as facts_adapter
from hosts.adapters import libvirt as libvirt_adapter
from hosts.adapters import stats as stats_adapter
from hosts.adapters.errors import AdapterError, CommandFailed, CommandTimeout, HostKeyMismatch

from . import access, lifecycle_services, services
from .access import require_trusted
from .choices import VMActionChoices, VMStateChoices
from .models import Host, HostChange, VirtualMachine

logger = logging.getLogger(__name__)

# How long "shut down" waits for the guest OS to power off before reporting it did not.
SHUTDOWN_WAIT_S = 120.0
ACTION_POLL_INTERVAL_S = 1.0


def _record_failure(host: Host, exc: AdapterError, ctx: JobContext | None) -> None:
    services.host_contact_failed(
        host=host,
        error=exc.message,
        hint=exc.hint,
        key_mismatch=isinstance(exc, HostKeyMismatch),
        actor=Actor.system(),
        job=ctx.job if ctx else None,
    )


def fetch_host_key(*, host_id: int, ctx: JobContext) -> dict:
    """Read the SSH host key the host presents (no login) and keep it for an admin to confirm."""
    host = Host.all_objects.get(pk=host_id)
    ctx.log(f"Connecting to {host.address}:{host.ssh_port} to read its SSH host key")
    key = access.presented_host_key(host.address, host.ssh_port)
    services.host_key_presented(host=host, key=key)
    ctx.log(f"The host presented {key.key_type} key {key.fingerprint}")
    if host.host_key and host.host_key != key.openssh:
        ctx.log(
            f"This differs from the pinned key {host.host_key_fingerprint}", level=JobLogLevelChoices.WARNING
        )
    return {"fingerprint": key.fingerprint, "key_type": key.key_type}


def _disk_paths(domains: list[libvirt_adapter.DomainInfo]) -> list[str]:
    paths = {
        disk.source
        for dom in domains
        for disk in dom.disks
        if disk.source and disk.source_type in ("file", "block") and not disk.protocol
    }
    return sorted(paths)


def refresh_host(*, host_id: int, ctx: JobContext) -> dict:
    """Gather facts and guests of one host and store them; mark it unreachable on failure."""
    host = Host.all_objects.get(pk=host_id)
    require_trusted(host)
    uri = host.effective_libvirt_uri
    try:
        with access.open_session(host) as session:
            ctx.log(f"Connecting to {host.ssh_user}@{host.address}:{host.ssh_port} over SSH")
            os_release = _read_os_release(session.ssh, ctx)
            ctx.progress(20)
            ctx.log(f"Connecting to libvirt at {uri}")
            facts = libvirt_adapter.get_host_facts(session.libvirt)
            ctx.progress(50)
            domains = libvirt_adapter.list_domains(session.libvirt, definitions=True)
            stats = _read_load(session.libvirt, ctx)
            ctx.log(f"{facts.hostname}: {facts.hypervisor} {facts.hypervisor_version}, {len(domains)} guest(s)")
            ctx.progress(70)
            storage = _storage_of_paths(session.ssh, _disk_paths(domains), ctx)
    except AdapterError as exc:
        _record_failure(host, exc, ctx)
        raise
    summary = services.host_inventory_save(
        host=host, facts=facts, os_release=os_release, domains=domains, storage=storage, stats=stats,
        actor=Actor.system(),
    )
    ctx.log(f"Saved {summary['vms']} guest(s): {summary['added']} new, {summary['removed']} gone")
    if stats is not None:
        services.host_load_record(host=host, stats=stats)
    return {"host": host.name, **summary}


def _read_load(conn, ctx: JobContext):
    # Load figures are history, not inventory: a host that cannot give them still refreshes.
    try:
        return stats_adapter.host_stats(conn)
    except AdapterError as exc:
        ctx.log(f"Could not read load statistics: {exc.message}", level=JobLogLevelChoices.WARNING)
        return None


def _read_os_release(session, ctx: JobContext):
    # A host without os-release is odd but not broken: keep going without the OS name.
    try:
        return facts_adapter.read_os_release(session)
    except (CommandFailed, CommandTimeout) as exc:
        ctx.log(f"Could not read os-release: {exc.message}", level=JobLogLevelChoices.WARNING)
        return None


def _storage_of_paths(session, paths: list[str], ctx: JobContext) -> dict:
    if not paths:
        return {}
    try:
        return facts_adapter.storage_kind(session, paths)
    except (CommandFailed, CommandTimeout) as exc:
        ctx.log(f"Could not tell shared from local storage: {exc.message}", level=JobLogLevelChoices.WARNING)
        return {}


_ADAPTER_CALLS = {
    VMActionChoices.START: "start_domain",
    VMActionChoices.SHUTDOWN: "shutdown_domain",
    VMActionChoices.DESTROY: "destroy_domain",
}


def run_vm_action(*, vm_id: int, action: str, ctx: JobContext) -> dict:
    """Start, shut down or force off a guest; wait for shut down to power it off."""
    action = VMActionChoices(action)
    vm = VirtualMachine.objects.select_related("host").get(pk=vm_id)
    host = vm.host
    require_trusted(host)
    uuid = str(vm.uuid)
    try:
        ctx.log(f"{action.label}: {vm.name} ({uuid}) on {host.name}")
        with access.open_session(host) as session:
            conn = session.libvirt
            getattr(libvirt_adapter, _ADAPTER_CALLS[action])(conn, uuid)
            ctx.progress(30)
            info = libvirt_adapter.get_domain(conn, uuid)
            if action == VMActionChoices.SHUTDOWN:
                info = _wait_for_shutoff(conn, uuid, info, ctx)
    except HostKeyMismatch as exc:
        _record_failure(host, exc, ctx)
        services.vm_action_outcome(vm=vm, action=action, ok=False, message=exc.message, actor=Actor.system(), job=ctx.job)
        raise
    except AdapterError as exc:
        services.vm_action_outcome(vm=vm, action=action, ok=False, message=exc.message, actor=Actor.system(), job=ctx.job)
        raise
    services.vm_state_save(vm=vm, info=info)
    ctx.log(f"{vm.name} is now {info.state} ({info.reason})")
    if action == VMActionChoices.SHUTDOWN and info.state != VMStateChoices.SHUTOFF:
        message = f"{vm.name} was asked to shut down but is still {info.state} after {SHUTDOWN_WAIT_S:g} s."
        services.vm_action_outcome(vm=vm, action=action, ok=False, message=message, actor=Actor.system(), job=ctx.job)
        raise AdapterError(
            message,
            hint="The guest OS may ignore ACPI shutdown requests. Use Force off if losing unsaved data is acceptable.",
        )
    services.vm_action_outcome(
        vm=vm, action=action, ok=True, message=f"{vm.name} is {info.state}.", actor=Actor.system(), job=ctx.job
    )
    return {"vm": vm.name, "state": info.state, "reason": info.reason}


def _wait_for_shutoff(conn, uuid: str, info, ctx: JobContext):
    deadline = time.monotonic() + SHUTDOWN_WAIT_S
    ctx.log("Waiting for the guest OS to power off")
    while info.state != VMStateChoices.SHUTOFF and time.monotonic() < deadline:
        time.sleep(ACTION_POLL_INTERVAL_S)
        info = libvirt_adapter.get_domain(conn, uuid)
    return info


def change_read_key(*, change_id: int, ctx: JobContext) -> dict:
    """A connection change, step 1: the SSH host key at the (new) address, for an admin to confirm."""
    change = HostChange.objects.select_related("host").get(pk=change_id)
    address, port = change.proposed["address"], change.proposed["ssh_port"]
    ctx.log(f"Connecting to {address}:{port} to read its SSH host key")
    try:
        key = access.presented_host_key(address, port)
    except AdapterError as exc:
        lifecycle_services.host_change_failed(change=change, error=exc.message, hint=exc.hint,
                                              actor=Actor.system(), job=ctx.job)
        raise
    lifecycle_services.host_change_key_read(change=change, key=key)
    ctx.log(f"{address}:{port} presented {key.key_type} key {key.fingerprint}")
    return {"fingerprint": key.fingerprint, "same_as_pinned": key.openssh == change.host.host_key}


def change_check(*, change_id: int, ctx: JobContext) -> dict:
    """A connection change, step 2: log in over SSH and libvirt with the new settings and the
    confirmed key; save them only if both work. On failure the host keeps its settings."""
    change = HostChange.objects.select_related("host").get(pk=change_id)
    candidate = lifecycle_services.change_candidate(change)
    try:
        with access.open_session(candidate) as session:
            ctx.log(f"Logging in to {candidate.ssh_user}@{candidate.address}:{candidate.ssh_port} over SSH")
            _read_os_release(session.ssh, ctx)  # the login is the check; a missing os-release is not
            ctx.log(f"Connecting to libvirt at {candidate.effective_libvirt_uri}")
            facts = libvirt_adapter.get_host_facts(session.libvirt)
    except AdapterError as exc:
        lifecycle_services.host_change_failed(change=change, error=exc.message, hint=exc.hint,
                                              actor=Actor.system(), job=ctx.job)
        raise
    ctx.log(f"Reached {facts.hostname} ({facts.hypervisor} {facts.hypervisor_version}); saving the new settings")
    actor = Actor(user=change.requested_by, name=change.requested_by_label)
    lifecycle_services.host_change_apply(change=change, actor=actor, job=ctx.job)
    return {"host": change.host.name, "hostname": facts.hostname}
