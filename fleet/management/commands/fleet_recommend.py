"""`manage.py fleet_recommend`: balance and consolidate recommendations, with their reasons; `--apply ID` applies one.

Same pure rules and services as the fleet page. Each recommendation has an ``id`` and its
``moves`` (``vm``, ``from``, ``to``). ``--dismiss ID --reason TEXT [--hours N]`` hides one (audited)
until it expires or its facts change. Applying starts one run of ordinary migrations on the
rolling queue (the portal's workers run them); ``--wait`` follows it to its end.
"""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from core.choices import RoleChoices
from core.errors import ServiceRefused
from fleet import facts, recommend, services
from hosts.command_access import add_as_argument, command_actor
from hosts.management.commands.vm_list import printable
from hosts.permissions import hosts_to_plan_on
from maintenance.management.commands.host_maintenance import Command as HostMaintenanceCommand

MAX_HOLD_S = 7 * 24 * 3600


def _hold(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CommandError(f"--hold wants whole seconds from 0 to {MAX_HOLD_S}, not {printable(text)!r}.") from None
    if not 0 <= value <= MAX_HOLD_S:
        raise CommandError(f"--hold must be from 0 to {MAX_HOLD_S} seconds (got {value}).")
    return value


class Command(HostMaintenanceCommand):
    help = "Print balance/consolidate recommendations with their reasons, or apply one (--apply ID)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--balance", action="store_const", const=recommend.KIND_BALANCE, dest="kind")
        which.add_argument("--consolidate", action="store_const", const=recommend.KIND_CONSOLIDATE, dest="kind")
        parser.add_argument("--basis", choices=facts.BASES, default="assigned",
                            help="assigned: guests' configured memory (no history needed); used: measured load.")
        parser.add_argument("--hold", type=str, default=None, help="Seconds the spread must have lasted (used basis).")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--metric", choices=facts.METRICS, default=None,
                            help="memory or cpu (default: the portal's setting, on the fleet settings page).")
        parser.add_argument("--apply", metavar="ID", help="Apply the recommendation with this id.")
        parser.add_argument("--dismiss", metavar="ID", help="Dismiss the recommendation with this id (with --reason).")
        parser.add_argument("--reason", default="", help="With --dismiss: why, in a few words.")
        parser.add_argument("--hours", type=int, default=24, help="With --dismiss: how long it stays hidden (1-720).")
        parser.add_argument("--wait", action="store_true", help="With --apply: follow the run to its end.")
        add_as_argument(parser)

    @staticmethod
    def _check_hosts(rec_id: str, options) -> None:
        """With --as: a recommendation of the whole fleet touching hosts outside the user's groups is refused."""
        rec = services.recommendation_find(rec_id=rec_id, basis=options["basis"], metric=options["metric"])
        if rec is not None:
            command_actor(options, services.recommendation_hosts(rec), RoleChoices.OPERATOR)

    def handle(self, *args, **options):
        self.as_json = options["json"]
        actor = command_actor(options)
        metric = options["metric"]
        if options["dismiss"]:
            rec_id = options["dismiss"][:64]
            self._check_hosts(rec_id, options)
            try:
                d = services.recommendation_dismiss(rec_id=rec_id, reason=options["reason"], hours=options["hours"],
                                                    actor=actor, basis=options["basis"], metric=metric)
            except ServiceRefused as refused:
                raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
            self.stdout.write(f"Dismissed {d.rec_id} until {d.expires:%Y-%m-%d %H:%M} UTC, or until its facts change.")
            return
        if options["apply"]:
            rec_id = options["apply"][:64]
            self._check_hosts(rec_id, options)
            if options["wait"]:
                self._need_workers()
            try:
                ev = services.recommendation_apply(rec_id=rec_id, actor=actor, basis=options["basis"], metric=metric)
            except ServiceRefused as refused:
                raise CommandError(f"{refused.message} {refused.hint}".strip()) from None
            self._follow(ev, options["wait"])
            return
        hold = _hold(options["hold"]) if options["hold"] is not None else None
        outcomes = services.recommendations(kind=options["kind"], basis=options["basis"], hold_s=hold, metric=metric,
                                            hosts=hosts_to_plan_on(actor.user) if actor.user else None)
        if self.as_json:
            self.stdout.write(json.dumps({
                "notes": [o.note for o in outcomes],
                "recommendations": [r.as_dict() for o in outcomes for r in o.recommendations],
            }, indent=2))
            return
        for o in outcomes:
            self.stdout.write(printable(o.note))
            for r in o.recommendations:
                cost = f", about {r.expected_s} s" if r.expected_s is not None else ""
                self.stdout.write(f"  [{r.id}] {r.kind}: {printable(r.summary)}{cost}")
                for m in r.moves:
                    self.stdout.write(f"    {printable(m.vm)}: {m.source} → {m.destination}. {printable(m.why)}")
