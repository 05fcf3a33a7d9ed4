"""`manage.py host_maintenance HOST enter|exit`: host maintenance mode from a terminal (scripts, cron).

Same plan, services, records and audit trail as the portal's pages. ``enter --dry-run`` prints
the plan (exit status 2 when a guest is blocked); ``enter`` empties the host through the rolling
queue; ``exit`` brings the guests home (``--no-return``: leaves them). The portal's workers run
the migrations; with ``--wait`` this command follows the evacuation to its end and exits
non-zero unless every guest ended where the plan said.
"""

from __future__ import annotations

import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from hosts.permissions import hosts_for_actor
from core.errors import ServiceRefused
from hosts.management.commands.vm_list import printable
from hosts.models import VirtualMachine
from maintenance import planning, services
from maintenance.choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, StrategyChoices
from maintenance.models import MAX_CONCURRENCY, Evacuation
from maintenance.payloads import evacuation_payload
from migrations_app.management.commands.vm_migrate import find_host

POLL_S = 0.5
EXIT_FAILED, EXIT_BLOCKED = 1, 2


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CommandError(f"--concurrency wants a whole number from 1 to {MAX_CONCURRENCY}, not {printable(text)!r}.") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise CommandError(f"--concurrency must be from 1 to {MAX_CONCURRENCY} (got {value}).")
    return value


def _guest_uuid(host, text: str) -> str:
    """A guest of ``host`` by name or UUID, as its UUID."""
    rows = [vm for vm in VirtualMachine.objects.filter(host=host) if text in (vm.name, str(vm.uuid))]
    if not rows:
        names = ", ".join(VirtualMachine.objects.filter(host=host).values_list("name", flat=True)) or "none"
        raise CommandError(f"{host.name} has no guest {printable(text)!r} (its guests: {printable(names)}).")
    return str(rows[0].uuid)


def plan_dict(plan: planning.EvacuationPlan) -> dict:
    return {
        "host": plan.host,
        "status": "planned",
        "strategy": plan.strategy,
        "concurrency": plan.concurrency,
        "checked_hosts": plan.checked,
        "fingerprint": plan.fingerprint,
        "estimated_s": plan.estimated_s,
        "estimate_basis": plan.estimate_basis,
        "blocked": [r.name for r in plan.blockers],
        "guests": [
            {
                "vm": r.name, "uuid": r.uuid, "from": plan.host, "to": r.destination, "action": r.action,
                "status": "blocked" if r.blocker else ("planned" if r.action != IA.STAY else "stays"),
                "migration": None,
                "reason": r.blocker.reason if r.blocker else r.note,
                "remedy": r.blocker.remedy if r.blocker else "",
                "verdicts": [{"check": v.check, "status": v.status, "reason": v.reason, "fix": v.fix} for v in r.verdicts],
                "estimated_s": r.estimated_s,
            }
            for r in plan.rows
        ],
    }


def outcome_dict(ev: Evacuation) -> dict:
    state = evacuation_payload(ev)
    return {
        "evacuation": ev.pk,
        "url": ev.get_absolute_url(),
        "host": ev.host.name,
        "kind": ev.kind,
        "status": ev.status,
        "outcome": ev.outcome,
        "wall_time_s": state["wall_s"],
        "guests": [
            {
                "vm": i["vm"], "uuid": i["uuid"], "from": i["from"], "to": i["to"], "action": i["action"],
                "status": i["status"], "migration": i["migration"], "reason": i["reason"], "remedy": i["remedy"],
                "total_ms": i["total_ms"], "downtime_ms": i["downtime_ms"],
            }
            for i in state["items"]
        ],
    }


class Command(BaseCommand):
    help = "Enter or exit host maintenance: evacuate a host's guests by plan, or bring them home."

    def add_arguments(self, parser):
        parser.add_argument("host", help="Host (inventory name).")
        parser.add_argument("what", choices=("enter", "exit"))
        parser.add_argument("--dry-run", action="store_true", help="Print the plan; change nothing.")
        parser.add_argument("--concurrency", default="2", help=f"Guests moved at once, 1–{MAX_CONCURRENCY} (default 2).")
        parser.add_argument("--strategy", default=StrategyChoices.SPREAD, choices=StrategyChoices.values)
        parser.add_argument("--exclude", nargs="+", default=[], metavar="VM", help="Guests to leave on the host.")
        parser.add_argument("--shutdown", nargs="+", default=[], metavar="VM",
                            help="Guests to shut down now and start again when maintenance ends.")
        parser.add_argument("--to", action="append", default=[], metavar="VM=HOST",
                            help="Repeatable: send VM to HOST instead of the planned destination.")
        parser.add_argument("--copy-storage", action="store_true", help="Copy local disks during live migration.")
        parser.add_argument("--no-return", action="store_true", help="exit: leave the guests where they are.")
        parser.add_argument("--no-check", action="store_true",
                            help="Plan from the inventory alone, without asking the hosts (faster, no verdicts).")
        parser.add_argument("--wait", action="store_true", help="Follow the evacuation to its end.")
        parser.add_argument("--json", action="store_true", help="Print the plan or the outcome as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        self.as_json = options["json"]
        host = find_host(options["host"])
        self.actor = command_actor(options, [host], RoleChoices.OPERATOR)
        concurrency = _concurrency(options["concurrency"])
        if options["what"] == "enter":
            self._enter(host, concurrency, options)
        else:
            self._exit(host, concurrency, options)

    # --- enter

    def _enter(self, host, concurrency: int, options) -> None:
        if options["no_return"]:
            raise CommandError("--no-return belongs to exit.")
        overrides = {}
        for pair in options["to"]:
            vm, sep, dest = pair.partition("=")
            if not sep or not vm or not dest:
                raise CommandError(f"--to wants VM=HOST, not {printable(pair)!r}.")
            overrides[_guest_uuid(host, vm)] = find_host(dest).name
        excluded = [_guest_uuid(host, v) for v in options["exclude"]]
        shutdown = [_guest_uuid(host, v) for v in options["shutdown"]]
        choices = dict(strategy=options["strategy"], concurrency=concurrency, excluded=excluded,
                       overrides=overrides, shutdown=shutdown, copy_storage=options["copy_storage"])
        try:
            plan = planning.evacuation_plan(host=host, check_hosts=not options["no_check"],
                                            candidates=hosts_for_actor(self.actor, RoleChoices.OPERATOR), **choices)
        except Exception as exc:  # noqa: BLE001 — a host that cannot be asked is a message, not a traceback
            raise CommandError(f"Could not make the plan: {exc}. Try --no-check to plan from the inventory.") from None
        if options["dry_run"]:
            self._print_plan(plan)
            if plan.blockers:
                raise SystemExit(EXIT_BLOCKED)
            return
        if options["wait"]:
            self._need_workers()
        try:
            ev = services.evacuation_enter(host=host, actor=self.actor, plan=plan, **choices)
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        self._follow(ev, options["wait"])

    # --- exit

    def _exit(self, host, concurrency: int, options) -> None:
        for flag in ("exclude", "shutdown", "to"):
            if options[flag]:
                raise CommandError(f"--{flag} belongs to enter.")
        bring_back = not options["no_return"]
        plan = services.return_plan(host=host, bring_back=bring_back,
                                    sources=hosts_for_actor(self.actor, RoleChoices.OPERATOR))
        if options["dry_run"]:
            self._print_return(plan)
            return
        if options["wait"] and plan.moves:
            self._need_workers()
        try:
            ev = services.maintenance_exit(host=host, actor=self.actor, bring_back=bring_back,
                                           concurrency=concurrency, plan=plan)
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        if ev is None:
            if self.as_json:
                self.stdout.write(json.dumps({"host": host.name, "status": "succeeded", "guests": []}, indent=2))
            else:
                self.stdout.write(f"{host.name} is out of maintenance; no guest to bring back.")
            return
        self._follow(ev, options["wait"])

    # --- following and printing

    def _need_workers(self) -> None:
        """--wait follows work the portal's workers do: refuse up front when none listens."""
        if settings.VMPORTAL_JOBS_INLINE:
            return
        import django_rq
        from rq import Worker

        try:
            workers = Worker.all(connection=django_rq.get_connection("migrations"))
        except Exception as exc:  # noqa: BLE001 — Redis down is a message
            raise CommandError(f"Cannot reach Redis to find the portal's workers: {exc}. Start the portal (make run).") from None
        if not any("migrations" in w.queue_names() for w in workers):
            raise CommandError("No worker takes migration jobs, so nothing would move. Start the portal "
                               "(make run) or `manage.py rqworker default migrations`, then try again.")

    def _follow(self, ev: Evacuation, wait: bool) -> None:
        if not wait:
            ev.refresh_from_db()
            if self.as_json:
                self.stdout.write(json.dumps(outcome_dict(ev), indent=2))
            else:
                self.stdout.write(f"{ev} started ({ev.get_status_display().lower()}). Follow it at {ev.get_absolute_url()}")
            return
        seen: dict[int, str] = {}
        while True:
            ev.refresh_from_db()
            if not self.as_json:
                for item in ev.items.select_related("destination"):
                    if seen.get(item.pk) != item.status:
                        seen[item.pk] = item.status
                        to = f" → {item.destination.name}" if item.destination_id else ""
                        self.stdout.write(f"  {printable(item.vm_name)}{to}: {item.get_status_display().lower()}"
                                          + (f" ({printable(item.reason)})" if item.reason and item.status != "running" else ""))
            if ev.is_terminal:
                break
            time.sleep(POLL_S)
        if self.as_json:
            self.stdout.write(json.dumps(outcome_dict(ev), indent=2))
        else:
            self.stdout.write(f"{ev.get_status_display()}: {printable(ev.outcome)}")
        if ev.status != ES.SUCCEEDED:
            raise SystemExit(EXIT_FAILED)

    def _print_plan(self, plan: planning.EvacuationPlan) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(plan_dict(plan), indent=2))
            return
        out = self.stdout.write
        how = "checked with the hosts" if plan.checked else "from the inventory only"
        out(f"Plan for {plan.host} ({plan.strategy}, {plan.concurrency} at a time, {how}): "
            f"about {plan.estimated_s} s. {plan.estimate_basis}")
        for r in plan.rows:
            to = r.destination or "—"
            out(f"  {r.position:>3}. {printable(r.name):<24} {r.state:<8} {r.get_action_label():<24} → {to}")
            if r.blocker:
                out(f"       BLOCKED ({r.blocker.check}): {printable(r.blocker.reason)}")
                out(f"       fix: {printable(r.blocker.remedy)}")
            elif r.note:
                out(f"       {printable(r.note)}")
            for v in r.verdicts:
                if v.status != "pass":
                    out(f"       {v.status.upper():4} {v.check}: {printable(v.reason)}")
        if plan.blockers:
            out(f"{len(plan.blockers)} guest(s) blocked: the evacuation would end incomplete.")

    def _print_return(self, plan: services.ReturnPlan) -> None:
        rows = [{"vm": r.name, "uuid": r.uuid, "from": r.origin, "to": r.destination, "action": r.action,
                 "status": "planned" if r.action != IA.STAY else "stays", "migration": None,
                 "reason": r.note, "remedy": r.remedy} for r in plan.rows]
        if self.as_json:
            self.stdout.write(json.dumps({"host": plan.host, "status": "planned", "guests": rows}, indent=2))
            return
        if not plan.rows:
            self.stdout.write(f"No guest of {plan.host} to bring back.")
        for r in rows:
            self.stdout.write(f"  {printable(r['vm']):<24} {r['from'] or '—'} → {r['to']}: {r['action']}"
                              + (f" ({printable(r['reason'])})" if r["reason"] else ""))
