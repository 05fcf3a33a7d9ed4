"""`manage.py maintenance_window add|list|cancel`: the maintenance calendar from a terminal.

Same services, validation and audit trail as the calendar page. Times without an offset are in
``--zone`` (default: the portal's TIME_ZONE). ``add --json`` prints the window with its ``id``,
``uid`` and ``next`` occurrence (``start``/``end`` in UTC). The tick in ``watch_hosts`` runs it.
"""

from __future__ import annotations

import json as jsonlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from core.errors import ServiceRefused
from hosts.management.commands.vm_list import printable
from hosts.models import Host

from calendar_app import services
from calendar_app.choices import OnEndChoices, OnStartChoices
from calendar_app.models import MaintenanceWindow
from calendar_app.payloads import window_dict
from calendar_app.timeinput import TimeInputError, parse_time


def _hosts(text: str) -> list[Host]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CommandError("--hosts wants one or more host names separated by commas.")
    found = {h.name: h for h in Host.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise CommandError(f"Unknown host(s): {printable(', '.join(unknown))}.")
    return [found[n] for n in dict.fromkeys(names)]


class Command(BaseCommand):
    help = "Add, list or cancel maintenance windows (hosts go into maintenance by themselves)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Create a window.")
        add.add_argument("--title", required=True)
        add.add_argument("--hosts", required=True, help="H1[,H2]")
        add.add_argument("--start", required=True, help="ISO 8601, e.g. 2027-03-06T02:00 (in --zone) or …Z")
        add.add_argument("--end", required=True)
        add.add_argument("--zone", default=None, help="Zone of times without an offset and of the recurrence")
        add.add_argument("--rrule", default="", help="iCalendar RRULE, e.g. FREQ=MONTHLY;BYDAY=1SA")
        add.add_argument("--except", dest="exdates", action="append", default=[], metavar="ISO",
                         help="Leave out the occurrence starting then (repeatable)")
        add.add_argument("--cutoff", type=int, default=30, help="No new evacuation this many minutes before the end")
        add.add_argument("--no-evacuate", action="store_true", help="At the start only warn")
        add.add_argument("--no-return", action="store_true", help="At the end leave the guests where they are")
        add.add_argument("--notes", default="")
        add.add_argument("--at-risk", action="store_true", help="Accept a capacity conflict with other windows")
        add.add_argument("--json", action="store_true")
        add_as_argument(add)
        lst = sub.add_parser("list", help="List windows.")
        lst.add_argument("--all", action="store_true", help="Include cancelled windows")
        lst.add_argument("--json", action="store_true")
        cancel = sub.add_parser("cancel", help="Cancel a window.")
        cancel.add_argument("id", type=int)
        add_as_argument(cancel)

    def handle(self, *args, action, **options):
        return {"add": self.add, "list": self.list, "cancel": self.cancel}[action](**options)

    def add(self, *, title, hosts, start, end, zone, rrule, exdates, cutoff, no_evacuate, no_return, notes, at_risk,
            json, **_):
        zone = zone or settings.TIME_ZONE
        chosen = _hosts(hosts)
        actor = command_actor(_, chosen, RoleChoices.OPERATOR)
        try:
            spec = services.WindowSpec(
                title=title, hosts=chosen, start=parse_time(start, zone), end=parse_time(end, zone), zone=zone,
                rrule=rrule, exdates=[parse_time(d, zone).isoformat() for d in exdates], cutoff_minutes=cutoff,
                on_start=OnStartChoices.WARN if no_evacuate else OnStartChoices.EVACUATE,
                on_end=OnEndChoices.LEAVE if no_return else OnEndChoices.RETURN, notes=notes)
            window = services.window_create(spec=spec, actor=actor, confirm_at_risk=at_risk)
        except TimeInputError as exc:
            raise CommandError(str(exc)) from None
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        self._print(window, json)

    def _print(self, window, as_json):
        d = window_dict(window)
        if as_json:
            self.stdout.write(jsonlib.dumps(d, indent=2))
        else:
            nxt = d["next"]
            self.stdout.write(f"window {window.pk} ({window.uid}): {printable(window.title)} on "
                              f"{', '.join(d['hosts'])}; next " + (f"{nxt['start']} – {nxt['end']}" if nxt else "none"))

    def list(self, *, all, json, **_):
        windows = MaintenanceWindow.objects.prefetch_related("hosts").order_by("start", "pk")
        if not all:
            windows = windows.filter(cancelled=False)
        rows = [window_dict(w) for w in windows]
        if json:
            self.stdout.write(jsonlib.dumps(rows, indent=2))
            return
        for d in rows:
            nxt = d["next"]
            self.stdout.write(f"{d['id']:>5}  {printable(d['title'])[:40]:<40}  {','.join(d['hosts']):<20}  "
                              + (f"next {nxt['start']}" if nxt else "over") + ("  cancelled" if d["cancelled"] else "")
                              + (f"  RRULE {d['rrule']}" if d["rrule"] else ""))

    def cancel(self, *, id, **_):
        window = MaintenanceWindow.objects.filter(pk=id).first()
        if window is None:
            raise CommandError(f"There is no window {id}.")
        actor = command_actor(_, window.hosts.all(), RoleChoices.OPERATOR)
        try:
            services.window_cancel(window=window, actor=actor)
        except ServiceRefused as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"window {id} cancelled")
