"""`manage.py nfs_setup`: the NFS wizard on the command line, run in this process (no worker).

    manage.py nfs_setup --server HOST --export PATH --clients H1,H2 --mount PATH \\
        [--options rw,sync,root_squash] [--nfs-version 4.1] [--confirm-dir-change] [--dry-run] [--yes] [--json]

Reads the hosts and prints the plan (every command, per host). --dry-run stops there. Otherwise
it asks before applying (unless --yes), applies exactly that plan and prints the proof grid.
Running it again with the same arguments resumes or repeats the setup: steps already done are
skipped. Exit status: 0 done (or dry run), 1 blocked/failed/declined, 2 bad arguments.
"""

from __future__ import annotations

import json
import logging
import shlex

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from core.models import Job
from hosts.command_access import add_as_argument, command_actor
from hosts.models import Host
from storage import services
from storage.choices import NfsVersionChoices, SetupStatusChoices
from storage.jobs import share_apply_job, share_plan_job
from storage.models import Share
from storage.steps import Command, plan_from_json, rendered_step
from storage.validation import DEFAULT_OPTIONS, path_problem


class _JobLogEcho(logging.Handler):
    """Prints the job's log lines as run_job records them (core.jobs logs each one)."""

    def __init__(self, write, job_id: int):
        super().__init__(logging.INFO)
        self.write, self.job_id = write, job_id

    def emit(self, record):
        if record.args and len(record.args) == 2 and record.args[0] == self.job_id:
            self.write(str(record.args[1]))


class Command(BaseCommand):
    help = "Set up an NFS share between inventory hosts (plan, confirm, apply, prove)."

    def add_arguments(self, parser):
        parser.add_argument("--server", required=True, help="Inventory host that exports the directory.")
        parser.add_argument("--export", required=True, help="Export directory on the server (absolute path).")
        parser.add_argument("--clients", required=True, help="Comma-separated inventory hosts that mount it.")
        parser.add_argument("--mount", required=True, help="Mount path, the same on every client.")
        parser.add_argument("--options", default=DEFAULT_OPTIONS, help=f"Export options (default {DEFAULT_OPTIONS}).")
        parser.add_argument("--nfs-version", default=NfsVersionChoices.V4_1, help="3, 4, 4.1 or 4.2 (default 4.1).")
        parser.add_argument("--export-to", default="", help="Allowed clients: inventory hosts, CIDRs or '*' (default: the clients).")
        parser.add_argument("--server-impl", default="", choices=["", "kernel", "ganesha"], help="Default: detect.")
        parser.add_argument("--confirm-risky", action="store_true", help="Allow no_root_squash or '*' (you have read why not).")
        parser.add_argument("--confirm-dir-change", action="store_true",
                            help="Allow the plan to change the owner and mode of an export directory that already exists "
                                 "(the plan shows before and after).")
        parser.add_argument("--dry-run", action="store_true", help="Print the plan and change nothing.")
        parser.add_argument("--yes", action="store_true", help="Apply without asking.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document instead of text.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        as_json = options["json"]
        clients = [c.strip() for c in options["clients"].split(",") if c.strip()]
        request = dict(
            server=options["server"], clients=clients, export_path=options["export"], mount_path=options["mount"],
            export_to=options["export_to"], options=options["options"], nfs_version=options["nfs_version"],
            server_impl=options["server_impl"], confirm_risky=options["confirm_risky"],
        )
        # Admin on the server and every client (unknown names are the request's validation's to report).
        actor = command_actor(options, Host.objects.filter(name__in=[options["server"], *clients]), RoleChoices.ADMIN)
        try:
            share = self._existing_share(request)
            if share is None:
                share, setup, job = services.share_create(**request, actor=actor, enqueue=False)
            else:
                setup, job = services.share_plan_request(share=share, actor=actor, enqueue=False)
        except ValidationError as exc:
            problems = [f"{name}: {m}" for name, messages in exc.message_dict.items() for m in messages]
            raise CommandError("Nothing was run; the request is invalid:\n  " + "\n  ".join(problems), returncode=2) from None
        except services.ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None

        self._run(share_plan_job, job, setup.pk, echo=not as_json)
        setup.refresh_from_db()
        report = {"share": str(share), "share_id": share.pk, "setup_id": setup.pk, "status": setup.status}
        if setup.status == SetupStatusChoices.DETECT_FAILED:
            return self._finish(report, as_json, f"Could not read the hosts: {setup.error} {setup.error_hint}".strip())
        plan = plan_from_json(setup.plan)
        report["plan"] = {"summary": plan.summary, "blockers": list(plan.blockers), "notes": [n.__dict__ for n in plan.notes],
                          "steps": [rendered_step(s) for s in plan.steps], "proof": [rendered_step(s) for s in plan.proof]}
        if not as_json:
            self._print_plan(plan)
        if plan.blockers:
            return self._finish(report, as_json, "The plan is blocked; nothing was changed.")
        if options["dry_run"]:
            report["dry_run"] = True
            return self._finish(report, as_json, None)
        change = plan.summary.get("existing_dir_change")
        if change and not options["confirm_dir_change"]:
            return self._finish(report, as_json, (
                f"Not applied: {change['path']} already exists on {change['host']}; the plan would change its owner:group and "
                f"mode from {change['before']} to {change['after']}. Re-run with --confirm-dir-change to allow that, "
                "or choose a new directory. Nothing was changed."))
        if not options["yes"]:
            if as_json:
                return self._finish(report, as_json, "Not applied: with --json, pass --yes to apply.")
            try:
                answer = input(f"Apply this plan ({len(plan.steps)} steps on {len(plan.hosts())} hosts)? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                return self._finish(report, as_json, "Not applied; nothing was changed.")

        try:
            apply_job = services.share_apply_request(setup=setup, actor=actor, enqueue=False,
                                                     confirm_dir_change=options["confirm_dir_change"])
        except services.ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}".strip()) from None
        self._run(share_apply_job, apply_job, setup.pk, echo=not as_json)
        setup.refresh_from_db()
        apply_job.refresh_from_db()
        report.update(status=setup.status, outcomes=setup.outcomes, grid=setup.grid, job_id=apply_job.pk,
                      duration_s=apply_job.duration_s)
        if not as_json:
            self._print_grid(setup.grid)
        if setup.status != SetupStatusChoices.SUCCEEDED or not all(row.get("ok") for row in setup.grid):
            failed = setup.outcomes.get(setup.failed_step) or {}
            message = apply_job.error or setup.error or "The proof is not green."
            if failed.get("output"):
                message += "\n" + failed["output"]
            if setup.error_hint or apply_job.error_hint:
                message += f"\nWhat to do: {setup.error_hint or apply_job.error_hint}"
            report["failed_step"] = setup.failed_step
            return self._finish(report, as_json, message)
        return self._finish(report, as_json, None)

    # ------------------------------------------------------------------

    def _existing_share(self, request: dict) -> Share | None:
        if path_problem(request["export_path"], what="export directory") or not request["server"].isprintable():
            return None  # not a share that can exist; share_create explains what is wrong
        server = Host.objects.filter(name__iexact=request["server"]).first()
        if server is None:
            return None
        share = Share.objects.filter(server=server, export_path=request["export_path"]).first()
        if share is None:
            return None
        same = (
            sorted(c.name.lower() for c in share.clients.all()) == sorted(c.lower() for c in request["clients"])
            and share.mount_path == request["mount_path"] and share.options == request["options"]
            and share.nfs_version == request["nfs_version"] and share.export_to == request["export_to"].strip()
            and share.server_impl == request["server_impl"]
        )
        if not same:
            raise CommandError(
                f"{share} exists with other settings (clients {', '.join(c.name for c in share.clients.all())}, "
                f"mount {share.mount_path}, options {share.options}, NFS {share.nfs_version}); "
                "changing a share is not supported yet. Repeat its own settings to resume it.",
                returncode=2,
            )
        return share

    def _run(self, func, job: Job, setup_id: int, *, echo: bool) -> None:
        logger = logging.getLogger("core.jobs")
        handler = _JobLogEcho(self.stdout.write, job.pk) if echo else None
        previous = logger.level, logger.propagate
        if handler:  # the lines go to stdout once, plainly, instead of through the console log
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        try:
            func(job.pk, setup_id)
        finally:
            if handler:
                logger.removeHandler(handler)
                logger.setLevel(previous[0])
                logger.propagate = previous[1]

    def _print_plan(self, plan) -> None:
        w = self.stdout.write
        summary = plan.summary
        w("")
        w(f"Plan for {summary.get('source')} → {summary.get('mount_path')} "
          f"({'NFS-Ganesha' if summary.get('server_impl') == 'ganesha' else 'kernel NFS server'}; {summary.get('server_impl_reason')})")
        for note in plan.notes:
            w(f"  [{note.level}] {note.host}: {note.text}")
        for blocker in plan.blockers:
            w(self.style.ERROR(f"  BLOCKED: {blocker}"))
        host = None
        for step in plan.steps:
            r = rendered_step(step)
            if step.host != host:
                host = step.host
                w(f"\n== {host}")
            w(f"- {r['title']}  ({r['key']})")
            for line in r["check"]:
                w(f"    check:  {line}")
            for line in r["actions"]:
                w(f"    run:    {line}")
            for item in r["inputs"]:
                w("    input:  " + item["text"].rstrip("\n").replace("\n", "\n            "))
            for line in r["verify"]:
                w(f"    verify: {line}")
        if plan.proof:
            w(f"\n== proof ({len(plan.proof)} steps: markers written as QEMU's user and read on every host, pools active)")
            for step in plan.proof:
                actions = [
                    shlex.join(a.argv) + (f"   # stdin: {a.stdin.strip()!r}" if a.stdin else "")
                    for a in step.actions if isinstance(a, Command)
                ]
                for line in [*actions, *(p.render() for p in (*step.check, *step.verify))]:
                    w(f"    {step.host}: {line}")
        w("")

    def _print_grid(self, grid: list) -> None:
        w = self.stdout.write
        mark = {True: "yes", False: "NO", None: "-"}
        w(f"\n{'host':<16} {'mounted':<8} {'same file':<10} {'qemu r/w':<9} {'pool':<5}")
        for row in grid:
            w(f"{row['host']:<16} {mark[row['mounted']]:<8} {mark[row['same_file']]:<10} {mark[row['qemu_rw']]:<9} {mark[row['pool']]:<5}"
              + ("" if row["ok"] else "  " + "; ".join(row["problems"])[:200]))

    def _finish(self, report: dict, as_json: bool, error: str | None):
        report["ok"] = error is None
        if error:
            report["error"] = error
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, default=str))
            if error:
                raise CommandError(error.splitlines()[0], returncode=1)
            return
        if error:
            raise CommandError(error, returncode=1)
        self.stdout.write(self.style.SUCCESS("Dry run: nothing was changed." if report.get("dry_run") else f"Done: {report['share']} is ready."))
