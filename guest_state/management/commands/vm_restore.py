"""`manage.py vm_restore STATE_ID [--on HOST] [--paused] [--disks-changed-ok] [--wait] [--json]`.

Checks the destination first (file seen, QEMU, machine type, disks unchanged); with --wait it
runs here and exits non-zero unless the guest is back.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from core.errors import ServiceRefused
from guest_state import jobs, services
from guest_state.choices import RestoreStatusChoices as RS
from guest_state.management.commands.vm_save import state_dict
from guest_state.models import SavedState
from migrations_app.management.commands.vm_migrate import find_host


class Command(BaseCommand):
    help = "Restore a saved guest state, on the host it was saved on or one that sees the file and the disks."

    def add_arguments(self, parser):
        parser.add_argument("state_id", type=int, help="The saved state's id (vm_save prints it).")
        parser.add_argument("--on", metavar="HOST", help="Where to restore (default: where it was saved).")
        parser.add_argument("--paused", action="store_true", help="Leave the guest paused.")
        parser.add_argument("--disks-changed-ok", action="store_true",
                            help="Restore although a disk changed since the save (you know why).")
        parser.add_argument("--wait", action="store_true", help="Run it here and wait for its outcome.")
        parser.add_argument("--json", action="store_true", help="Print the saved state and its restores as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        if not 0 < options["state_id"] < 2**63:
            raise CommandError("A saved state's id is a positive number (vm_save prints it).")
        state = SavedState.objects.filter(pk=options["state_id"]).first()
        if state is None:
            raise CommandError(f"No saved state #{options['state_id']}. See /saved-states/ for the list.")
        host = find_host(options["on"]) if options["on"] else None
        actor = command_actor(options, [state.host, host], RoleChoices.OPERATOR)
        try:
            restore = services.restore_request(state=state, host=host, paused=options["paused"],
                                               changed_disks_confirmed=options["disks_changed_ok"],
                                               actor=actor, enqueue=not options["wait"])
        except ServiceRefused as refused:
            raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
        if options["wait"]:
            jobs.restore_job(restore.job_id, restore.pk)
        restore.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(state_dict(state), indent=2))
        else:
            self.stdout.write(f"Restore #{restore.pk} of {state.vm_name} on {restore.host.name}: "
                              f"{restore.get_status_display()}{' — ' + restore.error if restore.error else ''}")
        if options["wait"] and restore.status != RS.SUCCEEDED:
            raise CommandError(restore.error or "The restore did not complete.")
