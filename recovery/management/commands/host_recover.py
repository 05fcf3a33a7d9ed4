"""`manage.py host_recover HOST --confirm-fenced [--to HOST] [--dry-run] [--wait] [--json]`.

Same plan, checks, records and audit as the portal's Recover guests page. ``--confirm-fenced``
(also spelt ``--yes-the-host-is-off``) is the admin's statement that HOST is powered off; the
portal still checks that HOST answers neither over SSH nor over libvirt before anything starts.
Without --wait a worker does it; with --wait it runs here and exits non-zero unless every guest
of the plan was recovered.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from core.errors import ServiceRefused
from hosts.command_access import add_as_argument, command_actor
from hosts.models import Host
from recovery import jobs, services
from recovery.choices import RecoveryStatusChoices as RS


def find_host(name: str) -> Host:
    host = Host.all_objects.not_removed().filter(name__iexact=name[:63]).first()
    if host is None:
        raise CommandError(f"No host called {name[:63]!r} in the inventory.")
    return host


def plan_dict(plan) -> dict:
    return {"source": plan.source, "fingerprint": plan.fingerprint,
            "moves": [{"guest": m.name, "uuid": m.uuid, "destination": m.destination, "warnings": list(m.warnings)}
                      for m in plan.moves],
            "left": [{"guest": x.name, "uuid": x.uuid, "reason": x.reason} for x in plan.left]}


def recovery_dict(recovery) -> dict:
    return {"id": recovery.pk, "url": recovery.get_absolute_url(), "host": recovery.host.name,
            "status": recovery.status, "error": recovery.error, "left": recovery.left,
            "items": [{"guest": i.vm_name, "destination": i.destination.name, "status": i.status, "error": i.error}
                      for i in recovery.items.select_related("destination")]}


class Command(BaseCommand):
    help = "Start the guests of a dead host on other hosts (after you made sure it is powered off)."

    def add_arguments(self, parser):
        parser.add_argument("host", help="The unreachable host, by name.")
        parser.add_argument("--confirm-fenced", "--yes-the-host-is-off", dest="fenced", action="store_true",
                            help="State that HOST is powered off and its guests are not running.")
        parser.add_argument("--to", metavar="HOST", help="Start every guest on this host (default: placement).")
        parser.add_argument("--dry-run", action="store_true", help="Show the plan only.")
        parser.add_argument("--wait", action="store_true", help="Run it here and wait for its outcome.")
        parser.add_argument("--json", action="store_true", help="Print the plan or the record as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        host = find_host(options["host"])
        destination = find_host(options["to"]) if options["to"] else None
        actor = command_actor(options, [host, destination], RoleChoices.ADMIN)
        if options["dry_run"]:
            plan = services.plan_for(host, destination=destination)
            if options["json"]:
                self.stdout.write(json.dumps(plan_dict(plan), indent=2))
                return
            for move in plan.moves:
                self.stdout.write(f"recover {move.name} -> {move.destination}")
            for left in plan.left:
                self.stdout.write(f"leave   {left.name}: {left.reason}")
            return
        try:
            recovery = services.recovery_request(host=host, destination=destination, fencing_confirmed=options["fenced"],
                                                 actor=actor, enqueue=not options["wait"])
        except ServiceRefused as refused:
            raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
        if options["wait"]:
            recovery = jobs.run_inline(recovery)
        recovery.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(recovery_dict(recovery), indent=2))
        else:
            self.stdout.write(f"Recovery #{recovery.pk} of {host.name}: {recovery.get_status_display()}"
                              + (f" — {recovery.error}" if recovery.error else ""))
            for item in recovery.items.select_related("destination"):
                self.stdout.write(f"  {item.vm_name} -> {item.destination.name}: {item.get_status_display()}"
                                  + (f" — {item.error}" if item.error else ""))
        if options["wait"] and recovery.status != RS.SUCCEEDED:
            raise CommandError(recovery.error or f"The recovery ended {recovery.get_status_display().lower()}.")
