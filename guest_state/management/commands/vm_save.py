"""`manage.py vm_save VM --to PATH|--share SHARE|--managed [--note …] [--bypass-cache] [--wait] [--json]`.

``--managed`` is libvirt's managed save: the state stays with libvirt on the host and the guest's
next start resumes it (no file of ours, no record but the job and the audit).

Same service, checks, record and audit as the portal. Without --wait a worker does it; with
--wait it runs here and exits non-zero unless the state was saved.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from core.choices import JobStatusChoices, RoleChoices
from core.errors import ServiceRefused
from guest_state import jobs, services
from guest_state.choices import SavedStateStatusChoices as SS
from guest_state.models import SavedState
from hosts.command_access import add_as_argument, command_actor
from migrations_app.management.commands.vm_cold_migrate import find_share
from migrations_app.management.commands.vm_migrate import find_vm


def state_dict(state: SavedState) -> dict:
    return {
        "id": state.pk, "url": state.get_absolute_url(), "vm": state.vm_name, "vm_uuid": str(state.vm_uuid),
        "host": state.host.name, "path": state.path, "status": state.status, "size": state.size,
        "sha256": state.sha256, "qemu_version": state.qemu_version, "machine_type": state.machine_type,
        "disks": state.disks, "note": state.note, "error": state.error,
        "restores": [{"id": r.pk, "host": r.host.name, "status": r.status, "paused": r.paused, "error": r.error}
                     for r in state.restores.select_related("host")],
    }


class Command(BaseCommand):
    help = "Save a running guest's memory and device state to a file (the guest stops)."

    def add_arguments(self, parser):
        parser.add_argument("vm", help="Guest name or UUID.")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--to", metavar="PATH", help="A directory on the guest's host.")
        where.add_argument("--share", metavar="SHARE", help="A share the host mounts (id or SERVER:/export).")
        where.add_argument("--managed", action="store_true", help="libvirt's managed save: the next start resumes it.")
        parser.add_argument("--note", default="", help="Why (shown with the state), at most 500 characters.")
        parser.add_argument("--bypass-cache", action="store_true", help="Write past the host's page cache.")
        parser.add_argument("--wait", action="store_true", help="Run it here and wait for its outcome.")
        parser.add_argument("--json", action="store_true", help="Print the record as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        vm = find_vm(options["vm"])
        actor = command_actor(options, [vm.host], RoleChoices.OPERATOR)
        if options["managed"]:
            return self.managed(vm, options, actor)
        share = find_share(options["share"]) if options["share"] else None
        try:
            state = services.save_request(vm=vm, directory=options["to"] or "", share=share, note=options["note"],
                                          bypass_cache=options["bypass_cache"], actor=actor,
                                          enqueue=not options["wait"])
        except ServiceRefused as refused:
            raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
        if options["wait"]:
            jobs.save_job(state.job_id, state.pk)
        state.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(state_dict(state), indent=2))
        else:
            self.stdout.write(f"Saved state #{state.pk} of {state.vm_name}: {state.get_status_display()} "
                              f"({state.path}){' — ' + state.error if state.error else ''}")
        if options["wait"] and state.status != SS.SAVED:
            raise CommandError(state.error or "The save did not complete.")

    def managed(self, vm, options, actor) -> None:
        try:
            job = services.managed_save_request(vm=vm, actor=actor, enqueue=not options["wait"])
        except ServiceRefused as refused:
            raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
        if options["wait"]:
            jobs.managed_save_job(job.pk, vm.pk, False)
        job.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps({"vm": vm.name, "job": job.pk, "status": job.status, "error": job.error}))
        else:
            self.stdout.write(f"Managed save of {vm.name}: job #{job.pk} {job.get_status_display()}"
                              + (f" — {job.error}" if job.error else ""))
        if options["wait"] and job.status != JobStatusChoices.SUCCEEDED:
            raise CommandError(job.error or "The managed save did not complete.")
