"""`manage.py vm_snapshot VM --name N [--note …] | --list [--json] | --revert N | --delete N [--as USER]`.

Internal libvirt snapshots of a guest's qcow2 disks, with its memory when it runs. Same services,
checks, records and audit as the guest page; the work runs here and the command exits non-zero
unless it succeeded. ``--list`` first compares the records with libvirt's list (``--no-check``:
show the records as they are). ``--revert`` throws the guest's current state away.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.choices import JobStatusChoices, RoleChoices
from core.errors import ServiceRefused
from guest_state import jobs, snapshot_services as services
from guest_state.choices import SnapshotStatusChoices as S
from guest_state.models import GuestSnapshot
from hosts.command_access import add_as_argument, command_actor
from migrations_app.management.commands.vm_migrate import find_vm
from hosts.management.commands.vm_list import printable


def snapshot_dict(snap: GuestSnapshot) -> dict:
    return {
        "id": snap.pk, "name": snap.name, "vm": snap.vm_name, "vm_uuid": str(snap.vm_uuid), "host": snap.host.name,
        "status": snap.status, "with_memory": snap.with_memory, "kind": snap.kind, "note": snap.note,
        "made_here": snap.made_here, "taken": snap.taken.isoformat() if snap.taken else None,
        "checked": snap.checked.isoformat() if snap.checked else None, "revert_count": snap.revert_count,
        "requested_by": snap.requested_by.get_username() if snap.requested_by else None, "error": snap.error,
    }


class Command(BaseCommand):
    help = "Take, list, revert to or delete a guest's libvirt snapshots (internal, in its qcow2 disks)."

    def add_arguments(self, parser):
        parser.add_argument("vm", help="Guest name or UUID.")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--name", metavar="N", help="Take a snapshot with this name (with memory if it runs).")
        what.add_argument("--list", action="store_true", help="List its snapshots as libvirt has them.")
        what.add_argument("--revert", metavar="N", help="Revert the guest to snapshot N (its current state is lost).")
        what.add_argument("--delete", metavar="N", help="Delete snapshot N.")
        parser.add_argument("--note", default="", help="Why (kept with the snapshot), at most 500 characters.")
        parser.add_argument("--no-check", action="store_true", help="--list: do not ask libvirt first.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        vm = find_vm(options["vm"])
        role = RoleChoices.VIEWER if options["list"] else RoleChoices.OPERATOR
        actor = command_actor(options, [vm.host], role)
        if options["list"]:
            return self.listing(vm, options, actor)
        try:
            if options["name"] is not None:
                snap = services.snapshot_request(vm=vm, name=options["name"], note=options["note"], actor=actor,
                                                 enqueue=False)
                jobs.snapshot_create_job(snap.job_id, snap.pk)
                job = snap.job
            else:
                snap = self.find(vm, options["revert"] or options["delete"])
                if options["revert"]:
                    job = services.snapshot_revert_request(snapshot=snap, confirmed=True, actor=actor, enqueue=False)
                    jobs.snapshot_revert_job(job.pk, snap.pk)
                else:
                    job = services.snapshot_delete_request(snapshot=snap, confirmed=True, actor=actor, enqueue=False)
                    jobs.snapshot_delete_job(job.pk, snap.pk)
        except ServiceRefused as refused:
            raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
        job.refresh_from_db()
        snap.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps({**snapshot_dict(snap), "job": job.pk, "job_status": job.status}, indent=2))
        else:
            verb = "Snapshot" if options["name"] is not None else ("Revert to" if options["revert"] else "Deletion of")
            self.stdout.write(f"{verb} {snap.name} of {vm.name}: {job.get_status_display()}"
                              + (f" — {job.error}" if job.error else ""))
        if job.status != JobStatusChoices.SUCCEEDED:
            raise CommandError(job.error or "It did not complete.")

    def find(self, vm, name: str) -> GuestSnapshot:
        snap = (GuestSnapshot.objects.filter(vm_uuid=vm.uuid, host=vm.host, name=name)
                .exclude(status=S.DELETED).order_by("-created").first())
        if snap is None:
            raise CommandError(f"{vm.name} has no snapshot named {printable(name)!r} "
                               f"(see `manage.py vm_snapshot {vm.name} --list`).")
        return snap

    def listing(self, vm, options, actor) -> None:
        if not options["no_check"]:
            job = services.snapshot_check_request(vm=vm, actor=actor, enqueue=False)
            jobs.snapshot_check_job(job.pk, vm.pk)
            job.refresh_from_db()
            if job.status != JobStatusChoices.SUCCEEDED:
                raise CommandError(f"Could not list the snapshots in libvirt: {job.error}")
        snaps = list(GuestSnapshot.objects.filter(vm_uuid=vm.uuid).exclude(status=S.DELETED)
                     .select_related("host", "requested_by").order_by("created", "pk"))
        if options["json"]:
            self.stdout.write(json.dumps([snapshot_dict(s) for s in snaps], indent=2))
            return
        if not snaps:
            self.stdout.write(f"{vm.name} has no snapshots.")
            return
        now = timezone.now()
        for s in snaps:
            age = int((now - (s.taken or s.created)).total_seconds())
            self.stdout.write(f"{printable(s.name):<24} {s.get_status_display():<18} {'memory' if s.with_memory else 'disks':<7} "
                              f"{age // 3600}h{age % 3600 // 60:02d}m ago  {printable(s.note)}")
