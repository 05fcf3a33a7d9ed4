"""The work of a save and of a restore, on the host, through its session."""

from __future__ import annotations

import posixpath
import shlex

from django.db import transaction

from core.actors import Actor
from core.choices import JobLogLevelChoices
from core.errors import PortalError
from core.jobs import JobContext
from hosts import access
from hosts.adapters import libvirt as lv
from hosts import services as host_services
from hosts.adapters import migration as migration_adapter
from hosts.choices import VM_ACTIVE_STATES
from hosts.models import Host, HostFacts, VirtualDisk, VirtualMachine

from . import services
from .choices import RestoreStatusChoices as RS
from .compat import DiskAtSave, DiskNow, RestoreFacts, restore_verdict
from .models import SavedState, StateRestore


def file_stat(ssh, path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file on the host, or None when it is not there."""
    result = ssh.run(["stat", "-L", "-c", "%s %Y", "--", path], check=False)
    if not result.ok:
        return None
    size, mtime = result.stdout.split()
    return int(size), int(mtime) * 1_000_000_000


def file_sha256(ssh, path: str) -> str:
    return ssh.run(["sha256sum", "--", path], timeout=services.JOB_TIMEOUT_S).stdout.split()[0]


def disks_at_save(ssh, vm_id: int | None) -> list[dict]:
    """Size, mtime and storage (shared, local…) of each writable file disk of the guest, as a
    restore later compares them (another host may restore only from shared disks)."""
    disks = []
    for disk in VirtualDisk.objects.filter(vm_id=vm_id, readonly=False, source_type="file"):
        seen = file_stat(ssh, disk.source)
        if seen is not None:
            disks.append({"path": disk.source, "size": seen[0], "mtime_ns": seen[1], "storage": disk.storage})
    return disks


def save_to_file(session, state: SavedState) -> None:
    """libvirt writes the guest's state to the record's file and stops it (the fault worker's hold points)."""
    lv.save_domain(session.libvirt, str(state.vm_uuid), state.path, bypass_cache=state.bypass_cache)


def restore_from_file(session, path: str, *, paused: bool, bypass_cache: bool) -> None:
    """libvirt brings the guest back from ``path`` (the fault worker's hold points)."""
    lv.restore_domain(session.libvirt, path, paused=paused, bypass_cache=bypass_cache)


def run_save(*, state_id: int, ctx: JobContext) -> None:
    state = SavedState.objects.select_related("host").get(pk=state_id)
    try:
        with access.open_session(state.host) as session:
            ctx.log(f"Saving {state.vm_name} to {state.path}")
            session.ssh.run(["mkdir", "-p", "--", posixpath.dirname(state.path)])
            ctx.progress(10)
            save_to_file(session, state)
            ctx.progress(60)
            disks = disks_at_save(session.ssh, state.vm_id)
            size = (file_stat(session.ssh, state.path) or (0, 0))[0]
            sha256 = file_sha256(session.ssh, state.path)
            ctx.progress(100)
    except PortalError as exc:
        services.save_finish(state=state, ok=False, error=str(exc))
        raise
    services.save_finish(state=state, ok=True, size=size, sha256=sha256, disks=disks)


def restore_path(restore: StateRestore) -> str:
    """The state file's path as the restore's host sees it (another host sees a share elsewhere)."""
    state = restore.state
    if state.share is not None and restore.host_id != state.host_id:
        seen_at = state.share.path_seen_by(restore.host) or ""
        return posixpath.join(seen_at, posixpath.basename(state.path))
    return state.path


def hosts_to_ask(state: SavedState, destination: Host) -> list[Host]:
    """Besides the destination, the hosts that may run the guest: the one it was saved on and any
    the inventory shows it on."""
    ids = set(VirtualMachine.objects.filter(uuid=state.vm_uuid).exclude(host=destination)
              .values_list("host_id", flat=True))
    if state.host_id != destination.pk:
        ids.add(state.host_id)
    return list(Host.objects.filter(pk__in=ids).order_by("name"))


def guest_elsewhere(uuid: str, hosts: list[Host]) -> tuple[list[str], list[str], dict[int, bool]]:
    """Ask each host about the guest: (hosts it is active on, hosts that did not answer, and for
    each host that answered whether it keeps a shut-off definition of it)."""
    active, unanswered, defined = [], [], {}
    for host in hosts:
        if not host.is_connectable:
            unanswered.append(host.name)
            continue
        try:
            with access.open_session(host) as session:
                found = migration_adapter.domain_presence(session.libvirt, uuid)
        except PortalError:
            unanswered.append(host.name)
            continue
        if found.exists and found.state in VM_ACTIVE_STATES:
            active.append(host.name)
        defined[host.pk] = found.exists and found.persistent and found.state not in VM_ACTIVE_STATES
    return active, unanswered, defined


def run_restore(*, restore_id: int, ctx: JobContext) -> None:
    restore = StateRestore.objects.select_related("state", "host", "state__host").get(pk=restore_id)
    state = restore.state
    StateRestore.objects.filter(pk=restore.pk, status=RS.QUEUED).update(status=RS.RUNNING)
    path = restore_path(restore)
    facts = HostFacts.objects.filter(host=restore.host).first()
    uuid = str(state.vm_uuid)
    elsewhere = hosts_to_ask(state, restore.host)
    notes: list[str] = []
    try:
        active_on, unanswered, defined = guest_elsewhere(uuid, elsewhere)
        with access.open_session(restore.host) as session:
            ctx.log(f"Checking {restore.host.name} for {path}")
            here = migration_adapter.domain_presence(session.libvirt, uuid)
            if here.exists and here.state in VM_ACTIVE_STATES:
                active_on.insert(0, restore.host.name)
            file_now = file_stat(session.ssh, path)
            file_seen = file_now is not None and file_now[0] == state.size and file_sha256(session.ssh, path) == state.sha256
            ctx.progress(40)
            disks_now = []
            for disk in state.disks:
                seen = file_stat(session.ssh, disk["path"])
                disks_now.append(DiskNow(path=disk["path"], present=seen is not None,
                                         size=seen[0] if seen else 0, mtime_ns=seen[1] if seen else 0))
            verdict = restore_verdict(RestoreFacts(
                same_host=restore.host_id == state.host_id, file_seen=file_seen,
                qemu_at_save=state.qemu_version, qemu_here=facts.hypervisor_version if facts else "",
                machine_at_save=state.machine_type, machines_here=tuple(facts.machine_types if facts else ()),
                disks_at_save=tuple(DiskAtSave(**d) for d in state.disks), disks_now=tuple(disks_now),
                changed_disks_confirmed=restore.changed_disks_confirmed, saved_on=state.host.name,
                guest=state.vm_name, active_on=tuple(active_on), unanswered=tuple(unanswered),
            ))
            if not verdict.ok:
                services.restore_finish(restore=restore, ok=False, error=" ".join(verdict.problems),
                                        problems=list(verdict.problems))
                return
            ctx.progress(60)
            restore_from_file(session, path, paused=restore.paused, bypass_cache=state.bypass_cache)
            ctx.progress(80)
            if restore.host_id != state.host_id:
                notes = make_this_its_home(session, restore, uuid, [h for h in elsewhere if defined.get(h.pk)], ctx)
            ctx.progress(100)
    except PortalError as exc:
        services.restore_finish(restore=restore, ok=False, error=str(exc))
        raise
    services.restore_finish(restore=restore, ok=True, error=" ".join(notes))
    if restore.host_id != state.host_id:
        follow_restored_guest(restore, elsewhere)


def make_this_its_home(session, restore: StateRestore, uuid: str, keeping: list[Host], ctx: JobContext) -> list[str]:
    """After a restore on another host: define the guest there (its persistent definition as the
    host it was saved on kept it, else as restored) and remove the shut-off definitions other
    hosts keep, so it has exactly one home, as a migration with --persistent --undefinesource
    leaves it. A definition that cannot be removed is said, with the command that removes it."""
    xml = None
    for host in keeping:
        try:
            with access.open_session(host) as other:
                xml = xml or lv.inactive_xml(other.libvirt, uuid)
        except PortalError:
            continue
    lv.define_domain(session.libvirt, xml or lv.inactive_xml(session.libvirt, uuid))
    ctx.log(f"{restore.state.vm_name} is defined on {restore.host.name}")
    notes = []
    for host in keeping:
        try:
            with access.open_session(host) as other:
                if migration_adapter.domain_presence(other.libvirt, uuid).state not in VM_ACTIVE_STATES:
                    lv.undefine_domain(other.libvirt, uuid)
                    ctx.log(f"Its shut-off definition on {host.name} is removed")
                    continue
        except PortalError as exc:
            ctx.log(f"Could not remove its definition on {host.name}: {exc}", level=JobLogLevelChoices.WARNING)
        notes.append(f"The shut-off definition on {host.name} is left: remove it there "
                     f"({shlex.join(['virsh', 'undefine', '--keep-nvram', uuid])}) so the guest is not started twice.")
    return notes


def follow_restored_guest(restore: StateRestore, elsewhere: list[Host]) -> None:
    """The inventory follows a guest restored on another host: its row moves there (what points
    at it keeps pointing at the guest) and every host concerned is refreshed (queued)."""
    with transaction.atomic():
        host_services.vm_relocate(vm_uuid=restore.state.vm_uuid, source=restore.state.host, destination=restore.host)
    for host in (restore.host, *elsewhere):
        if host.is_connectable:
            host_services.host_refresh_request(host=host, actor=Actor.system())


def managed_save_on_host(session, uuid: str, *, remove: bool) -> None:
    """libvirt's managed save of the guest, or the discarding of it (the fault worker's hold point)."""
    (lv.managed_save_remove if remove else lv.managed_save)(session.libvirt, uuid)


def delete_state_file(session, path: str) -> None:
    """Remove a state file on the host (the fault worker's hold point)."""
    session.ssh.run(["rm", "-f", "--", path])


def run_managed_save(*, vm_id: int, remove: bool, ctx: JobContext) -> dict:
    """libvirt's managed save (or discarding it); the guest's row follows at once."""
    vm = VirtualMachine.objects.select_related("host").get(pk=vm_id)
    uuid = str(vm.uuid)
    try:
        with access.open_session(vm.host) as session:
            ctx.log(("Discarding the managed save of " if remove else "Managed save of ") + f"{vm.name} on {vm.host.name}")
            managed_save_on_host(session, uuid, remove=remove)
            has_image = lv.saved_state(session.libvirt, uuid).managed_save
            info = lv.get_domain(session.libvirt, uuid)
    except PortalError as exc:
        services.managed_save_finish(vm=vm, job=ctx.job, remove=remove, ok=False, error=str(exc))
        raise
    host_services.vm_state_save(vm=vm, info=info)
    VirtualMachine.objects.filter(pk=vm.pk).update(managed_save=has_image)
    services.managed_save_finish(vm=vm, job=ctx.job, remove=remove, ok=True)
    return {"vm": vm.name, "state": info.state, "managed_save": has_image}


def run_state_delete(*, state_id: int, ctx: JobContext) -> None:
    """Remove a saved state's file on its host (only that file: the path the record holds)."""
    state = SavedState.objects.select_related("host").get(pk=state_id)
    try:
        with access.open_session(state.host) as session:
            ctx.log(f"Deleting {state.path} on {state.host.name}")
            delete_state_file(session, state.path)
    except PortalError as exc:
        services.state_deleted(state=state, job=ctx.job, ok=False, error=str(exc))
        raise
    services.state_deleted(state=state, job=ctx.job, ok=True)
