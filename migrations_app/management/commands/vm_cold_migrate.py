"""`manage.py vm_cold_migrate VM --to HOST [--storage SHARE] [--start] [--wait] [--json]`.

The cold-migration wizard from a terminal: same service, checks, record and audit trail.
Without --wait it is queued for a worker; with --wait it runs here (no worker needed), prints
each step and the copy's progress, and exits non-zero unless it succeeded.
"""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from hosts.management.commands.vm_list import printable
from migrations_app import cold_runner
from migrations_app.choices import ColdMigrationStatusChoices as C
from migrations_app.management.commands.vm_migrate import find_host, find_vm
from migrations_app.models import ColdMigration
from migrations_app.progress import human_bytes
from migrations_app.services import cold as cold_services
from migrations_app.services.refusals import ServiceRefused
from migrations_app.verdicts import VerdictStatus
from storage.models import Share

PROGRESS_EVERY_S = 1.0


def find_share(text: str) -> Share:
    """A share by id, or as ``SERVER:/export/path`` (what share pages and `nfs_setup` print)."""
    shares = Share.objects.select_related("server")
    if text.isdigit():
        share = shares.filter(pk=int(text)).first()
    else:
        server, sep, path = text.partition(":")
        share = shares.filter(server__name__iexact=server, export_path=path).first() if sep else None
    if share is None:
        known = ", ".join(str(s) for s in shares) or "none (set one up with `manage.py nfs_setup`)"
        raise CommandError(f"No share {printable(text)!r}. Shares: {known}. Give its id or SERVER:/export.")
    return share


def outcome_dict(record: ColdMigration) -> dict:
    return {
        "id": record.pk,
        "url": reverse("migrations_app:cold_detail", args=[record.pk]),
        "vm": record.vm_name,
        "vm_uuid": str(record.vm_uuid),
        "source": record.source.name,
        "destination": record.destination.name,
        "share": str(record.share) if record.share else None,
        "start": record.start,
        "status": record.status,
        "phase": record.phase,
        "outcome": record.outcome,
        "error": record.error,
        "error_hint": record.error_hint,
        "verdicts": record.verdicts,
        "files": record.files,
        "bytes_total": record.bytes_total,
        "copy_seconds": record.copy_seconds,
        "total_seconds": record.total_seconds,
        "rollback": record.rollback,
        "summary": record.summary,
    }


class Command(BaseCommand):
    help = "Cold-migrate a shut-off guest: copy its disks (onto a share or to the host), move its definition."

    def add_arguments(self, parser):
        parser.add_argument("vm", help="Guest name or UUID (a name used on several hosts needs the UUID).")
        parser.add_argument("--to", required=True, metavar="HOST",
                            help="Destination host; the guest's own host moves its disks onto --storage.")
        parser.add_argument("--storage", metavar="SHARE",
                            help="Shared storage to put the disks on (share id or SERVER:/export). "
                                 "Without it the disks go to the same directories on the destination.")
        parser.add_argument("--start", action="store_true", help="Start the guest at its destination.")
        parser.add_argument("--keep-source", action="store_true",
                            help="Keep the original disk files on the source after success.")
        parser.add_argument("--wait", action="store_true", help="Run it here and wait for its outcome.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        vm = find_vm(options["vm"])
        destination = find_host(options["to"])
        actor = command_actor(options, [vm.host, destination], RoleChoices.OPERATOR)
        share = find_share(options["storage"]) if options["storage"] else None
        wait = options["wait"]
        try:
            record = cold_services.cold_migration_request(
                vm=vm, destination=destination, share=share, start=options["start"],
                keep_source=options["keep_source"], actor=actor, run_by_worker=not wait,
            )
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        self.as_json = options["json"]
        if not wait:
            record.refresh_from_db()
            if self.as_json:
                self.stdout.write(json.dumps(outcome_dict(record), indent=2))
            else:
                self.stdout.write(f"Cold migration #{record.pk} of {printable(vm.name)} queued. "
                                  f"Follow it at {outcome_dict(record)['url']}")
            return
        self._run_here(record)

    def _run_here(self, record: ColdMigration) -> None:
        from core.jobs import run_job

        where = f"onto {record.share}" if record.same_host else f"{record.source.name} → {record.destination.name}"
        if not self.as_json:
            self.stdout.write(f"Cold migration #{record.pk}: {printable(record.vm_name)} {where}")
        last = [0.0]

        def on_step(cold: ColdMigration, step: str) -> None:
            if self.as_json:
                return
            if step == "copied":
                self.stdout.write(f"  Copied and verified (SHA-256): {human_bytes(cold.bytes_done)}")
            elif step in ("copy-file", "checked", "defining", "starting"):
                self.stdout.write(f"  {cold.phase}")

        def on_progress(cold: ColdMigration, done: int, total: int) -> None:
            now = time.monotonic()
            if not self.as_json and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                percent = int(100 * done / total) if total else 0
                self.stdout.write(f"    {percent:3d} %  {human_bytes(done)} of {human_bytes(total)}")

        run_job(record.job_id, lambda ctx: cold_runner.run_cold_migration(
            cold_id=record.pk, ctx=ctx, on_step=on_step, on_progress=on_progress))
        record.refresh_from_db()
        if self.as_json:
            self.stdout.write(json.dumps(outcome_dict(record), indent=2))
        else:
            self._print(record)
        if record.status != C.SUCCEEDED:
            raise CommandError(f"Cold migration #{record.pk} {record.get_status_display().lower()}.")

    def _print(self, record: ColdMigration) -> None:
        for v in record.verdicts:
            if v.get("status") != VerdictStatus.PASS:
                self.stdout.write(f"  [{v['status']}] {v['check']}: {v['reason']}")
                if v.get("fix"):
                    self.stdout.write(f"         fix: {v['fix']}")
        self.stdout.write(f"{record.get_status_display()}: {record.outcome}")
        if record.error:
            self.stdout.write(f"  error: {record.error}")
        if record.error_hint:
            self.stdout.write(f"  what to do: {record.error_hint}")
        for step in record.rollback:
            self.stdout.write(f"  undo: {step['step']}: {'done' if step['ok'] else 'FAILED ' + step.get('error', '')}")
        if record.status == C.SUCCEEDED and record.copy_seconds:
            rate = record.bytes_total / 2**20 / record.copy_seconds if record.copy_seconds else 0
            self.stdout.write(f"  copied {human_bytes(record.bytes_total)} in {record.copy_seconds:.2f} s "
                              f"({rate:.1f} MiB/s); total {record.total_seconds:.2f} s")
