"""The work of a snapshot, a revert, a deletion and a check, on the guest's host, through its session.

Each judges again on libvirt's own description of the guest (the inventory may be stale), acts,
then reads libvirt's list of the guest's snapshots so the records show libvirt's truth.
"""

from __future__ import annotations

from core.errors import PortalError
from core.jobs import JobContext
from hosts import access
from hosts import services as host_services
from hosts.adapters import libvirt as lv
from hosts.adapters.errors import SnapshotNotFound
from hosts.models import VirtualMachine

from . import snapshot_services as services
from .models import GuestSnapshot
from .snapshot_rules import DiskFact, RevertFacts, SnapshotFacts, revert_verdict, snapshot_verdict


def libvirt_facts(facts: lv.SnapshotFacts) -> SnapshotFacts:
    info = facts.domain
    return SnapshotFacts(
        name=info.name, state=info.state, persistent=info.persistent, managed_save=facts.managed_save,
        host_devices=info.host_devices, pflash=facts.pflash, libvirt_version=facts.libvirt_version,
        disks=tuple(DiskFact(target=d.target, source=d.source, format=d.format, device=d.device,
                             source_type=d.source_type, readonly=d.readonly) for d in info.disks),
    )


def _vm(snapshot: GuestSnapshot) -> VirtualMachine:
    vm = VirtualMachine.objects.select_related("host").filter(uuid=snapshot.vm_uuid, host=snapshot.host).first()
    if vm is None:
        raise PortalError(f"{snapshot.vm_name} is no longer on {snapshot.host.name}, where libvirt keeps its snapshots.")
    return vm


def _reconcile(session, vm: VirtualMachine, ctx: JobContext) -> dict:
    found = lv.list_snapshots(session.libvirt, str(vm.uuid))
    return services.snapshots_reconcile(vm=vm, host=vm.host, found=found, job=ctx.job)


def _after(session, vm: VirtualMachine, ctx: JobContext) -> lv.DomainInfo | None:
    """Once the operation is done: the records follow libvirt's list, the guest's row its state.
    A failure here is logged, not the operation's (the next check catches up)."""
    try:
        _reconcile(session, vm, ctx)
        info = lv.get_domain(session.libvirt, str(vm.uuid))
    except PortalError as exc:
        ctx.log(f"Could not read the guest back from libvirt: {exc}")
        return None
    host_services.vm_state_save(vm=vm, info=info)
    return info


def run_snapshot_create(*, snapshot_id: int, ctx: JobContext) -> dict:
    snapshot = GuestSnapshot.objects.select_related("host").get(pk=snapshot_id)
    uuid = str(snapshot.vm_uuid)
    try:
        vm = _vm(snapshot)
        with access.open_session(snapshot.host) as session:
            verdict = snapshot_verdict(libvirt_facts(lv.snapshot_facts(session.libvirt, uuid)))
            if not verdict.ok:
                error = " ".join(verdict.problems)
                services.snapshot_finish(snapshot=snapshot, ok=False, error=error)
                raise PortalError(error)
            ctx.log(f"Taking snapshot {snapshot.name} of {snapshot.vm_name} on {snapshot.host.name}"
                    + (" with its memory" if verdict.with_memory else " (disks only)"))
            ctx.progress(10)
            info = lv.create_snapshot(session.libvirt, uuid, name=snapshot.name, description=snapshot.note,
                                      memory=verdict.with_memory)
            ctx.progress(90)
            services.snapshot_finish(snapshot=snapshot, ok=True, info=info)
            _after(session, vm, ctx)
    except PortalError as exc:
        services.snapshot_finish(snapshot=snapshot, ok=False, error=str(exc))
        raise
    return {"snapshot": snapshot.name, "with_memory": info.with_memory, "kind": info.kind}


def run_snapshot_revert(*, snapshot_id: int, ctx: JobContext) -> dict:
    snapshot = GuestSnapshot.objects.select_related("host").get(pk=snapshot_id)
    uuid = str(snapshot.vm_uuid)
    recorded = False  # the revert's outcome is audited (and its lease released) once
    try:
        vm = _vm(snapshot)
        with access.open_session(snapshot.host) as session:
            facts = lv.snapshot_facts(session.libvirt, uuid)
            listed = {s.name: s for s in lv.list_snapshots(session.libvirt, uuid)}
            seen = listed.get(snapshot.name)
            verdict = revert_verdict(RevertFacts(
                name=snapshot.vm_name, snapshot=snapshot.name, in_libvirt=seen is not None,
                kind=seen.kind if seen else snapshot.kind, managed_save=facts.managed_save,
                libvirt_version=facts.libvirt_version))
            if not verdict.ok:
                error = " ".join(verdict.problems)
                services.snapshot_reverted(snapshot=snapshot, job=ctx.job, ok=False, error=error,
                                           problems=list(verdict.problems))
                recorded = True
                _after(session, vm, ctx)
                raise PortalError(error)
            ctx.log(f"Reverting {snapshot.vm_name} on {snapshot.host.name} to snapshot {snapshot.name}")
            ctx.progress(20)
            lv.revert_snapshot(session.libvirt, uuid, snapshot.name)
            ctx.progress(90)
            services.snapshot_reverted(snapshot=snapshot, job=ctx.job, ok=True)
            recorded = True
            state = _after(session, vm, ctx)
    except PortalError as exc:
        if not recorded:
            services.snapshot_reverted(snapshot=snapshot, job=ctx.job, ok=False, error=str(exc))
        raise
    return {"snapshot": snapshot.name, "state": state.state if state else "unknown"}


def run_snapshot_delete(*, snapshot_id: int, ctx: JobContext) -> dict:
    snapshot = GuestSnapshot.objects.select_related("host").get(pk=snapshot_id)
    uuid = str(snapshot.vm_uuid)
    already_gone = False
    try:
        vm = _vm(snapshot)
        with access.open_session(snapshot.host) as session:
            ctx.log(f"Deleting snapshot {snapshot.name} of {snapshot.vm_name} on {snapshot.host.name}")
            try:
                lv.delete_snapshot(session.libvirt, uuid, snapshot.name)
            except SnapshotNotFound:
                already_gone = True  # deleted outside the portal: only the record is left to remove
    except PortalError as exc:
        services.snapshot_deleted(snapshot=snapshot, job=ctx.job, ok=False, error=str(exc))
        raise
    services.snapshot_deleted(snapshot=snapshot, job=ctx.job, ok=True, already_gone=already_gone)
    with access.open_session(snapshot.host) as session:
        _after(session, vm, ctx)
    return {"snapshot": snapshot.name, "already_gone": already_gone}


def run_snapshot_check(*, vm_id: int, ctx: JobContext) -> dict:
    """Compare the guest's snapshot records with libvirt's list."""
    vm = VirtualMachine.objects.select_related("host").get(pk=vm_id)
    with access.open_session(vm.host) as session:
        ctx.log(f"Listing the snapshots of {vm.name} on {vm.host.name}")
        return _reconcile(session, vm, ctx)
