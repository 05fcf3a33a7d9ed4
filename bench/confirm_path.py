"""Confirm → libvirt's migrate call, lab-free: where the time goes, stage by stage.

    .venv/bin/python bench/confirm_path.py [--runs 20] [--workers 2] [--profile-request FILE]

The portal runs as in production but over the unit tests' fake fleet (tests/fakes/fleet.py): a
private redis-server, W real RQ workers (the portal's worker class, forking a work horse per
job) started by this script in ``--worker`` mode, which put the fake fleet behind
``hosts.access`` (built from the inventory rows, each horse placing the guest where the
inventory says before its job), and a temporary SQLite database made by ``migrate``. This
process plays the browser: the wizard's plan with its preflight towards the destination (not
timed), then the confirm (``live.migration_request`` with that plan), then it waits until the
record is settled; the guest goes kvm-a → kvm-b → kvm-a … The fake libvirt answers in
microseconds, so what is measured is the portal's own path.

Per run, from the records, the RQ job and this process's clock (all one machine):

  request      the confirm call itself (record, lease, audit, commit, its on-commit work)
  record       confirm → the Migration row (its created time)
  job row      the Migration row → its Job row (the slot dispatch after the commit)
  enqueue      the Job row → in Redis (RQ's enqueued_at)
  pick-up      in Redis → a work horse started it (RQ's started_at: dequeue and fork)
  job start    horse → run_job marked the Job running
  checking     run_job → the runner's "checking" (loading the record, migration_begin)
  sessions     both hosts' sessions opened (the job log)
  check        the re-check of fresh facts (summary["check"]["seconds"])
  to libvirt   the rest up to the migrate call (verdicts stored, migrating, audit)
  total        confirm → libvirt's migrate call (Migration.libvirt_called)

This process loads the URL conf first, as the ASGI entry does when the web server starts
(``--cold-web``: it does not, like ``manage.py vm_migrate`` or a web process before its first page).

Prints every run, then p50 / p95 / max per stage (the first run is shown apart from the rest:
it pays this process's first connections). ``--profile-request FILE`` writes a cProfile of
every confirm call and prints its top functions; ``--profile-horses DIR`` one per job run.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench.evacuation import environment, free_port, redis_answers, stop, wait_for  # noqa: E402

GOAL_P95_MS = 300
STAGES = ("request", "record", "job row", "enqueue", "pick-up", "job start", "checking", "sessions", "check",
          "to libvirt", "total")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- the worker side: the portal's worker over the fake fleet -----------------------------


def worker_main(queues: list[str]) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    import core.jobs
    from hosts import access
    from hosts.models import Host, VirtualMachine
    from tests.fakes.fleet import Fleet

    fleet = Fleet()
    rows = list(Host.objects.order_by("pk"))
    for row in rows:
        fleet.adopt(row, *[fleet.guest_of(vm) for vm in VirtualMachine.objects.filter(host=row)])
    by_name = {row.name: fleet.hosts[row.name] for row in rows}

    def place_guests() -> None:
        """The horse was forked from the parent's fleet: put each guest where the inventory says."""
        for vm in VirtualMachine.objects.select_related("host"):
            domain = None
            for host in by_name.values():
                domain = host.domains.pop(str(vm.uuid), None) or domain
            if domain is not None:
                by_name[vm.host.name].domains[str(vm.uuid)] = domain

    real_run_job = core.jobs.run_job

    profile_dir = os.environ.get("CONFIRM_PATH_PROFILE_DIR")

    def run_job(job_id, work):
        place_guests()
        if not profile_dir:
            return real_run_job(job_id, work)
        profile = cProfile.Profile()
        profile.enable()
        try:
            return real_run_job(job_id, work)
        finally:
            profile.disable()
            profile.dump_stats(Path(profile_dir) / f"job-{job_id}.prof")

    import hosts.jobs
    import migrations_app.jobs

    for module in (migrations_app.jobs, hosts.jobs):
        module.run_job = run_job
    with access.override(fleet.session_for):
        call_command("rqworker", *queues)


# --- the browser side ------------------------------------------------------------------------


class ConfirmPath:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="vmportal-bench-confirm-"))
        self.rows: list[dict[str, float]] = []
        self.profile = cProfile.Profile() if args.profile_request else None

    def start(self) -> None:
        port = free_port()
        env = environment(self.workdir, port)
        env["VMPORTAL_GUEST_HEARTBEAT_PROBE"] = ""  # no lab guests here
        if self.args.profile_horses:
            Path(self.args.profile_horses).mkdir(parents=True, exist_ok=True)
            env["CONFIRM_PATH_PROFILE_DIR"] = str(Path(self.args.profile_horses).resolve())
        os.environ.update(env)
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: redis_answers(port), timeout=15, what="redis-server")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        if not self.args.cold_web:
            try:
                from core.worker import load_url_conf
            except ImportError:  # a tree from before it existed: as it was
                print("(no core.worker.load_url_conf in this tree: this process starts cold)")
            else:
                load_url_conf()  # as the ASGI entry does when the web server starts
        from tests.fakes.fleet import make_host, make_vm

        self.src, self.dst = make_host("kvm-a"), make_host("kvm-b")
        self.vm = make_vm(self.src)
        for i in range(self.args.workers):
            log = open(self.workdir / f"worker-{i + 1}.log", "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", "default", "migrations"], cwd=BASE,
                env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(self.workers_up, timeout=60, what=f"{self.args.workers} RQ workers")

    def workers_up(self) -> bool:
        import django_rq
        from rq import Worker

        return len(Worker.all(connection=django_rq.get_connection("default"))) >= self.args.workers

    def wait_idle(self) -> None:
        from core.choices import JOB_ACTIVE_STATES
        from core.models import Job

        wait_for(lambda: not Job.objects.filter(status__in=JOB_ACTIVE_STATES).exists(), timeout=120,
                 what="the workers to finish their jobs")

    def run_once(self, destination) -> dict[str, float]:
        import django_rq
        from rq.job import Job as RQJob

        from core.actors import Actor
        from hosts.models import VirtualMachine
        from migrations_app.choices import PreflightRunStatusChoices as PS
        from migrations_app.models import Migration, PreflightRun
        from migrations_app.options import MigrationOptions
        from migrations_app.services import live, plans

        vm = VirtualMachine.objects.get(pk=self.vm.pk)
        options = MigrationOptions()
        plan = plans.migration_plan_create(vm=vm, options=options, actor=Actor.system(), destinations=[destination])
        wait_for(lambda: not PreflightRun.objects.filter(plan=plan, status__in=(PS.QUEUED, PS.RUNNING)).exists(),
                 timeout=60, what=f"the preflight of plan #{plan.pk}")
        self.wait_idle()
        t0_wall, t0 = time.time(), time.perf_counter()
        if self.profile is not None:
            self.profile.enable()
        m = live.migration_request(vm=vm, destination=destination, options=options, actor=Actor.system(), plan=plan)
        if self.profile is not None:
            self.profile.disable()
        request_ms = (time.perf_counter() - t0) * 1000
        wait_for(lambda: Migration.objects.get(pk=m.pk).is_terminal, timeout=120, what=f"migration #{m.pk}")
        m.refresh_from_db()
        if m.status != "succeeded":
            raise SystemExit(f"migration #{m.pk} {m.status}: {m.error} {m.outcome}")
        job = m.job
        rq_job = RQJob.fetch(job.rq_job_id, connection=django_rq.get_connection(job.queue_name))

        def ts(value) -> float:
            if isinstance(value, datetime):
                return (value if value.tzinfo else value.replace(tzinfo=dt_timezone.utc)).timestamp()
            return float(value)

        sessions_at = next((ts(datetime.fromisoformat(e["t"])) for e in job.log
                            if e["msg"].startswith(("Re-checked", "Checked both"))), None)
        check_s = float(m.summary.get("check", {}).get("seconds") or 0)
        started = ts(m.started)
        row = {
            "request": request_ms,
            "record": (ts(m.created) - t0_wall) * 1000,
            "job row": (ts(job.created) - ts(m.created)) * 1000,
            "enqueue": (ts(rq_job.enqueued_at) - ts(job.created)) * 1000,
            "pick-up": (ts(rq_job.started_at) - ts(rq_job.enqueued_at)) * 1000,
            "job start": (ts(job.started) - ts(rq_job.started_at)) * 1000,
            "checking": (started - ts(job.started)) * 1000,
            "sessions": ((sessions_at - started) * 1000 - check_s * 1000) if sessions_at else float("nan"),
            "check": check_s * 1000,
            "to libvirt": ((ts(m.libvirt_called) - sessions_at) * 1000) if sessions_at else float("nan"),
            "total": (ts(m.libvirt_called) - t0_wall) * 1000,
            "mode": m.summary.get("check", {}).get("mode"),
        }
        self.wait_idle()  # its figures' job ends before the next confirm
        return row

    def run(self) -> None:
        self.start()
        try:
            print(f"confirm → libvirt over the fake fleet: {self.args.runs} runs, {self.args.workers} workers "
                  f"(database {self.workdir / 'portal.sqlite3'}); load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} CPUs")
            print("  run  " + " ".join(f"{s:>10}" for s in STAGES) + "  check")
            hosts = (self.dst, self.src)
            for i in range(self.args.runs):
                row = self.run_once(hosts[i % 2])
                self.rows.append(row)
                print(f"  {i + 1:>3}  " + " ".join(f"{row[s]:>10.1f}" for s in STAGES) + f"  {row['mode']}")
            self.summary()
        finally:
            for proc in reversed(self.procs):
                stop(proc)
        if self.profile is not None:
            self.profile.dump_stats(self.args.profile_request)
            print(f"\ncProfile of the confirm calls: {self.args.profile_request}")
            pstats.Stats(self.args.profile_request).sort_stats("cumulative").print_stats(25)

    def summary(self) -> None:
        print("\nper stage, ms (first run apart; p50 / p95 / max of the others):")
        rest = self.rows[1:] or self.rows
        for stage in STAGES:
            values = [r[stage] for r in rest if not math.isnan(r[stage])]
            if not values:
                continue
            print(f"  {stage:<11} first {self.rows[0][stage]:>8.1f}   p50 {statistics.median(values):>7.1f}   "
                  f"p95 {pct(values, 0.95):>7.1f}   max {max(values):>7.1f}")
        print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end: other work on the "
              "machine shows in every stage)")
        totals = [r["total"] for r in self.rows]
        p95 = pct(totals, 0.95)
        print(f"\nconfirm → libvirt call, all {len(totals)} runs: p50 {statistics.median(totals):.0f} ms, "
              f"p95 {p95:.0f} ms (goal p95 ≤ {GOAL_P95_MS} ms: {'met' if p95 <= GOAL_P95_MS else 'NOT met'})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="confirms to time (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers (default 2, as `make run`)")
    parser.add_argument("--profile-request", metavar="FILE", help="write a cProfile of the confirm calls here")
    parser.add_argument("--cold-web", action="store_true",
                        help="this process does not load the URL conf first as the web server's start does "
                             "(like a command, or a web process before its first page)")
    parser.add_argument("--profile-horses", metavar="DIR",
                        help="write a cProfile of every job a work horse runs here (job-<id>.prof)")
    args = parser.parse_args()
    if not 1 <= args.runs <= 500 or not 1 <= args.workers <= 8:
        parser.error("--runs 1..500, --workers 1..8")
    ConfirmPath(args).run()


if __name__ == "__main__":
    main()
