"""Talking to hosts for the inventory: the work the jobs run.

Each function opens a session to the host (``hosts.access``: stored credentials, pinned
key), gathers or acts through the adapters, and stores the result through services. Adapter errors carry a
message and a hint; they are recorded on the host and re-raised so the job fails with them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.actors import Actor
from core.choices import JobLogLevelChoices
from core.jobs import JobContext
from hosts.adapters import facts as facts_adapter
from hosts.adapters import libvirt as libvirt_adapter
from hosts.adapters import stats as stats_adapter
from hosts.adapters.errors import AdapterError, CommandFailed, CommandTimeout, HostKeyMismatch

from . import access, lifecycle_services, probe_rules, services
from .access import require_trusted
from .choices import DiskStorageChoices, VMActionChoices, VMStateChoices
from .models import Host, HostChange, HostFacts, VirtualDisk, VirtualMachine

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


def refresh_host(*, host_id: int, ctx: JobContext, full: bool = True) -> dict:
    """Gather facts and guests of one host and store them; mark it unreachable on failure.

    The SSH login runs beside the libvirt reads (they need nothing of each other; the login also
    checks the host's pinned key, every time), then one SSH exec asks os-release and where every
    disk lives (``facts.probe_host``) — unless ``full`` is False and what is recorded is recent and
    places every disk (``probe_rules.probe_due``): the periodic refresh.
    """
    host = Host.all_objects.get(pk=host_id)
    require_trusted(host)
    uri = host.effective_libvirt_uri
    probed_at = HostFacts.objects.filter(host=host).values_list("probed_at", flat=True).first()
    try:
        with access.open_session(host) as session:
            ctx.log(f"Connecting to {host.ssh_user}@{host.address}:{host.ssh_port} over SSH "
                    f"and to libvirt at {uri}")
            with _logged_in_beside(session) as ssh_login:
                try:
                    facts = libvirt_adapter.get_host_facts(session.libvirt)
                    ctx.progress(30)
                    read_at = timezone.now()  # a guest's state an event recorded after this is newer than ours
                    domains = libvirt_adapter.list_domains(session.libvirt, definitions=True)
                    stats = _read_load(session.libvirt, ctx)
                except AdapterError:
                    # The SSH login's own failure (a changed host key, say) is the one to tell.
                    raise ssh_login.exception() or sys.exc_info()[1] from None
                ctx.log(f"{facts.hostname}: {facts.hypervisor} {facts.hypervisor_version}, "
                        f"{len(domains)} guest(s)")
                ctx.progress(60)
                # Nothing read is kept until the login has checked the host's pinned key.
                ssh = ssh_login.result()
            paths = _disk_paths(domains)
            placed = _recorded_placements(host)
            now = timezone.now()
            reason = probe_rules.probe_due(
                full=full, paths=paths, placed=placed, probed_at=probed_at, now=now,
                max_age=timedelta(seconds=settings.VMPORTAL_HOST_PROBE_SECONDS),
            )
            if reason is None:
                os_release, storage, probed = None, {path: placed[path] for path in paths}, None
            else:
                (os_release, storage), probed = _probe(ssh, paths, ctx), now
    except AdapterError as exc:
        _record_failure(host, exc, ctx)
        raise
    summary = services.host_inventory_save(
        host=host, facts=facts, os_release=os_release, domains=domains, storage=storage, stats=stats,
        probed_at=probed, read_at=read_at, actor=Actor.system(),
    )
    kept = ("" if probed is not None else
            f"; os-release and where the disks live as read at {timezone.localtime(probed_at):%H:%M:%S}")
    ctx.log(f"Saved {summary['vms']} guest(s): {summary['added']} new, {summary['removed']} gone{kept}")
    if stats is not None:
        services.host_load_record(host=host, stats=stats)
    return {"host": host.name, **summary}


def _recorded_placements(host: Host) -> dict[str, facts_adapter.StorageLocation]:
    """Where the host's disk files were found to live, as recorded (shared or local only)."""
    rows = VirtualDisk.objects.filter(
        vm__host=host, storage__in=(DiskStorageChoices.SHARED, DiskStorageChoices.LOCAL),
    ).values_list("source", "storage", "storage_fstype", "storage_mountpoint")
    return {
        source: facts_adapter.StorageLocation(fstype=fstype, mountpoint=mountpoint,
                                              shared=storage == DiskStorageChoices.SHARED)
        for source, storage, fstype, mountpoint in rows
        if source
    }


@contextlib.contextmanager
def _logged_in_beside(session):
    """The session's SSH login, started in a thread of its own: ``.result()`` is the logged-in session.

    The credentials are read (and decrypted) here first, so the thread touches no database.
    Leaving the block waits for the login, so the session closes what it opened.
    """
    session.ssh_target
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssh-login") as pool:
        yield pool.submit(lambda: session.ssh)


def _probe(ssh, paths: list[str], ctx: JobContext):
    # A host without os-release, or whose findmnt fails, still refreshes: without those facts.
    try:
        probe = facts_adapter.probe_host(ssh, paths)
    except (CommandFailed, CommandTimeout) as exc:
        ctx.log(f"Could not read os-release nor tell shared from local storage: {exc.message}",
                level=JobLogLevelChoices.WARNING)
        return None, {}
    if probe.os_release_error is not None:
        ctx.log(f"Could not read os-release: {probe.os_release_error.message}", level=JobLogLevelChoices.WARNING)
    if probe.storage_error is not None and paths:
        ctx.log(f"Could not tell shared from local storage: {probe.storage_error.message}",
                level=JobLogLevelChoices.WARNING)
    return probe.os_release, probe.storage


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
