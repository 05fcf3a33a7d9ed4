"""`manage.py vm_migrate VM --to HOST`: the wizard's migration from a terminal.

Same service, same checks, same record and audit trail as the web wizard. Without --wait
the migration is queued for a worker; with --wait it runs here (no worker needed), prints
its progress and its outcome with libvirt's figures, and exits non-zero unless it succeeded.
It returns once the record is settled (both hosts said where the guest runs); the figures
after it (both inventories refreshed, the guest's own pause) are a follow-up job a worker
runs. --wait-figures runs that job here too and prints them (no worker needed either).
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from core.jobs import run_job
from hosts.management.commands.vm_list import printable
from hosts.models import Host, VirtualMachine
from migrations_app import jobs as migration_jobs, runner
from migrations_app.choices import FollowUpStatusChoices as F, MigrationStatusChoices as S
from migrations_app.models import Migration
from migrations_app.options import OPTION_KEYS, MigrationOptions, parse_option_pairs, validate
from migrations_app.progress import human_bytes, progress_line
from migrations_app.services import live, records, slots
from migrations_app.services.refusals import ServiceRefused
from migrations_app.verdicts import VerdictStatus

SLOT_POLL_S = 2.0
PROGRESS_EVERY_S = 1.0


def find_vm(text: str) -> VirtualMachine:
    """A guest by UUID or by name; a name used on several hosts is an error naming them."""
    try:
        rows = list(VirtualMachine.objects.filter(uuid=uuid.UUID(text)).select_related("host"))
    except ValueError:
        rows = list(VirtualMachine.objects.filter(name=text).select_related("host"))
    if not rows:
        raise CommandError(f"No guest {printable(text)!r} in the inventory (see `manage.py vm_list`).")
    if len(rows) > 1:
        where = "; ".join(f"{vm.host.name}: {vm.uuid} ({vm.state})" for vm in rows)
        raise CommandError(
            f"{printable(text)!r} names {len(rows)} guests — {where}. Give the UUID of the one to migrate."
        )
    return rows[0]


def find_host(name: str) -> Host:
    host = Host.objects.filter(name__iexact=name).first()
    if host is None:
        known = ", ".join(Host.objects.values_list("name", flat=True)) or "none"
        raise CommandError(f"No host {printable(name)!r} in the inventory (hosts: {known}).")
    return host


def outcome_dict(migration: Migration) -> dict:
    return {
        "id": migration.pk,
        "url": reverse("migrations_app:migration_detail", args=[migration.pk]),
        "vm": migration.vm_name,
        "vm_uuid": str(migration.vm_uuid),
        "source": migration.source.name,
        "destination": migration.destination.name,
        "options": migration.options,
        "status": migration.status,
        "phase": migration.phase,
        "outcome": migration.outcome,
        "error": migration.error,
        "error_hint": migration.error_hint,
        "repair": migration.repair,
        "total_time_ms": migration.total_time_ms,
        "downtime_ms": migration.downtime_ms,
        # libvirt's estimate when it kept no figure of the switch-over (or none happened)
        "expected_downtime_ms": (migration.summary or {}).get("expected_downtime_ms"),
        "setup_time_ms": migration.setup_time_ms,
        "data_transferred_bytes": migration.data_transferred_bytes,
        "heartbeat": (
            {"max_gap_s": migration.heartbeat_gap_s, "continuous": migration.heartbeat_continuous,
             "beats": migration.heartbeat_beats}
            if migration.heartbeat_gap_s is not None else None
        ),
        "neighbours": (migration.summary or {}).get("neighbours"),  # the destination's other guests meanwhile
        "samples": migration.samples.count(),
        "verdicts": migration.verdicts,
        "follow_up": migration.follow_up,
        "follow_up_note": migration.follow_up_note,
    }


class Command(BaseCommand):
    help = "Migrate a guest to another host: the wizard's checks, record and audit, from the command line."

    def add_arguments(self, parser):
        parser.add_argument("vm", help="Guest name or UUID (a name used on several hosts needs the UUID).")
        parser.add_argument("--to", required=True, metavar="HOST", help="Destination host (inventory name).")
        parser.add_argument("--offline", action="store_true", help="Offline migration of a shut-off guest.")
        parser.add_argument(
            "--option", action="append", default=[], metavar="KEY=VALUE",
            help=f"Repeatable. Keys: {', '.join(OPTION_KEYS)}.",
        )
        parser.add_argument("--wait", action="store_true",
                            help="Run the migration here and wait for its outcome (the figures after it follow "
                                 "in a worker's job).")
        parser.add_argument("--wait-figures", action="store_true",
                            help="With --wait (implied): also refresh both inventories and measure the guest's "
                                 "own pause here, and print them.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        vm = find_vm(options["vm"])
        destination = find_host(options["to"])
        actor = command_actor(options, [vm.host, destination], RoleChoices.OPERATOR)
        try:
            chosen = parse_option_pairs(options["option"], base=MigrationOptions(live=not options["offline"]))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["offline"] and chosen.live:
            raise CommandError("--offline and live=true contradict each other; give one of them.")
        problems = validate(chosen)
        if problems:
            raise CommandError("\n".join(problems))
        self.wait_figures = options["wait_figures"]
        wait = options["wait"] or self.wait_figures
        try:
            migration = live.migration_request(
                vm=vm, destination=destination, options=chosen, actor=actor, run_by_worker=not wait
            )
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        self.as_json = options["json"]
        if not wait:
            migration.refresh_from_db()
            if self.as_json:
                self.stdout.write(json.dumps(outcome_dict(migration), indent=2))
            else:
                self.stdout.write(
                    f"Migration #{migration.pk} of {printable(vm.name)} to {destination.name} queued "
                    f"({migration.phase.lower()}). Follow it at {outcome_dict(migration)['url']}"
                )
            return
        self._run_here(migration)

    def _run_here(self, migration: Migration) -> None:
        if not self.as_json:
            mode = "live" if migration.is_live else "offline"
            self.stdout.write(
                f"Migration #{migration.pk}: {printable(migration.vm_name)} {migration.source.name} → "
                f"{migration.destination.name} ({mode})"
            )
        announced = False
        while (job := slots.migration_claim_for_caller(migration=migration)) is None:
            migration.refresh_from_db()
            if migration.status != S.QUEUED:
                break
            if not announced and not self.as_json:
                self.stdout.write(f"  {migration.phase}…")
                announced = True
            time.sleep(SLOT_POLL_S)
        if job is not None:
            last = [0.0]

            def progress(payload: dict) -> None:
                now = time.monotonic()
                if not self.as_json and now - last[0] >= PROGRESS_EVERY_S:
                    last[0] = now
                    self.stdout.write("  " + progress_line(payload))

            run_job(job.pk, lambda ctx: runner.run_migration(migration_id=migration.pk, ctx=ctx, on_progress=progress,
                                                             queue_follow_up=not self.wait_figures))
        migration.refresh_from_db()
        if self.wait_figures and migration.follow_up == F.RUNNING:
            follow_up = records.follow_up_job(migration)
            if follow_up is not None:
                if not self.as_json:
                    self.stdout.write(f"{migration.get_status_display()}; refreshing both inventories and measuring "
                                      "the guest's own pause…")
                    sys.stdout.flush()
                migration_jobs.migration_follow_up_job(follow_up.pk, migration.pk)
                migration.refresh_from_db()
        self._report(migration)
        if migration.status != S.SUCCEEDED:
            raise CommandError(f"migration #{migration.pk} {migration.get_status_display().lower()}")

    def _report(self, migration: Migration) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(outcome_dict(migration), indent=2))
            return
        out = self.stdout.write
        out(f"{migration.get_status_display()}: {printable(migration.outcome or migration.phase)}")
        if migration.error:
            out(f"  error: {printable(migration.error)}")
        if migration.error_hint:
            out(f"  what to do: {printable(migration.error_hint)}")
        if migration.repair:
            out(f"  repair: {printable(migration.repair)}")
        for verdict in migration.verdicts:
            if verdict["status"] != VerdictStatus.PASS:
                out(f"  {verdict['status'].upper():4} {verdict['check']}: {printable(verdict['reason'])}")
                if verdict.get("fix"):
                    out(f"       fix: {printable(verdict['fix'])}")
        rows = [
            ("total time", f"{migration.total_time_ms / 1000:.2f} s" if migration.total_time_ms is not None else None),
            ("whole call", f"{migration.summary['wall_time_s']:.2f} s" if migration.summary.get("wall_time_s") else None),
            ("downtime", f"{migration.downtime_ms} ms" if migration.downtime_ms is not None else None),
            ("setup time", f"{migration.setup_time_ms} ms" if migration.setup_time_ms is not None else None),
            ("data", human_bytes(migration.data_transferred_bytes) if migration.data_transferred_bytes is not None else None),
            ("heartbeat gap", (
                f"{migration.heartbeat_gap_s:.3f} s ({migration.heartbeat_beats} beats, "
                f"{'continuous' if migration.heartbeat_continuous else 'NOT continuous'})"
            ) if migration.heartbeat_gap_s is not None else None),
        ]
        for label, value in rows:
            if value is not None:
                out(f"  {label:<14} {value}")
        if migration.follow_up == F.RUNNING:
            job = records.follow_up_job(migration)
            out(f"  figures        follow (job #{job.pk if job else '?'}: both inventories, the guest's own pause); "
                f"see {outcome_dict(migration)['url']} or use --wait-figures")
        elif migration.follow_up == F.FAILED:
            out(f"  after it       {printable(migration.follow_up_note)}")
        sys.stdout.flush()
