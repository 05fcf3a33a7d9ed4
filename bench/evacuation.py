"""How long evacuating N lab guests at concurrency c takes, against the ideal of the same run.

    sudo .venv/bin/python bench/evacuation.py [--guests 4] [--concurrency 2] [--singles 6] [--workers W]
                                              [--check-hosts] [--timeline] [--timeline-logs]

The portal runs as in production: a private redis-server, W real RQ workers (`manage.py
rqworker default migrations`, default 2 × c: a worker refreshes both hosts' inventories after
the migration it ran has settled, and the queue's next item must not wait for that) and a
temporary SQLite database, all under a temporary directory and stopped by PID at the end. The
lab hosts are onboarded; N heartbeat guests of the bench's own are started on labh1 (the
lab's own guests there are excluded from the evacuation).

Measured in the same run, with the same workers and hosts:
- single: one of those guests migrated on its own, labh1 → labh2 → labh1 → labh3 → …
  (request → migration settled; with --check-hosts after the wizard's preflight of the
  destination, not timed), each once the one before has fully ended, --singles times
  before the evacuation and as many after the way home (the machine's load changes); the median;
- evacuation: `evacuation_enter` → the evacuation settled (every item ended), concurrency c;
  ideal = ceil(N / c) × median single; the ratio wall / ideal (goal ≤ 1.2);
- the way home (`maintenance_exit`), against the same ideal.
Where the guests ended up is asked of libvirt on every lab host. Brings the lab up if it is
down (and takes it down again); a running lab is reused and left up.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from lab import guests as lab_guests  # noqa: E402
from lab import hosts as lab_hosts  # noqa: E402

POLL_S = 0.05
GOAL = 1.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(POLL_S)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def environment(workdir: Path, redis_port: int) -> dict:
    from cryptography.fernet import Fernet

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_"))},
        "DJANGO_SETTINGS_MODULE": "vmportal.settings",
        "DJANGO_SECRET_KEY": "bench-evacuation-secret-key",
        "VMPORTAL_SECRETS_KEY": Fernet.generate_key().decode(),
        "VMPORTAL_AUDIT_KEY": "bench-evacuation-audit-key",
        "DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VMPORTAL_GUEST_HEARTBEAT_PROBE": "lab.heartbeat:probe",
        "PYTHONPATH": str(BASE),
        "PYTHONUNBUFFERED": "1",
    }


def phases(m) -> str:
    """Where a migration's time went: waiting for a worker, the runner's checks, libvirt, what follows."""
    def span(a, b):
        return f"{(b - a).total_seconds():.2f}" if a and b else "?"

    libvirt_s = (m.total_time_ms or 0) / 1000
    after = (m.ended - m.migration_started).total_seconds() - libvirt_s if m.ended and m.migration_started else None
    check = (m.summary or {}).get("check", {}).get("mode", "?")
    return (f"queue {span(m.created, m.started)} s, checks ({check}) {span(m.started, m.migration_started)} s, "
            f"libvirt {libvirt_s:.2f} s, after {after:.2f} s" if after is not None else "phases ?")


def timeline(ev) -> None:
    """When each step of a run happened, in seconds after the evacuation's record was created.

    The run's check of the hosts (its job: queued, started, ended) and, per item, its migration:
    requested, picked up by a worker, libvirt called, libvirt returned, settled; with
    --timeline-logs each migration job's log lines too.
    """
    zero = ev.created

    def at(t) -> str:
        return f"{(t - zero).total_seconds():6.2f}" if t else "     ?"

    if ev.facts_job is not None:
        j = ev.facts_job
        print(f"    t={at(j.created)} run's check of the hosts queued, started {at(j.started)}, ended {at(j.ended)} "
              f"({j.status})")
    for item in ev.items.select_related("migration", "migration__job").order_by("position"):
        m = item.migration
        if m is None:
            continue
        returned = None
        wall = (m.summary or {}).get("wall_time_s")
        if m.libvirt_called and wall is not None:
            returned = m.libvirt_called + timedelta(seconds=wall)
        print(f"    t={at(m.created)} {item.vm_name} #{m.pk} requested, worker {at(m.started)}, "
              f"libvirt called {at(m.libvirt_called)}, returned {at(returned)}, settled {at(m.ended)}")
        if m.job is not None and TIMELINE_LOGS:
            for line in m.job.log:
                print(f"        {at(datetime.fromisoformat(line['t']))} {line['msg'][:110]}")


TIMELINE_LOGS = False


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen] = []
        self.guests: list[tuple[str, str]] = []  # (name, uuid)
        self.workdir = Path(tempfile.mkdtemp(prefix="vmportal-bench-evacuation-"))
        self.lab_owned = False

    # --- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        if not lab_hosts.is_up():
            print("bringing the lab up …")
            lab_hosts.up(3, log=lambda *_: None)
            self.lab_owned = True
        self.lab = lab_hosts.status()
        port = free_port()
        env = environment(self.workdir, port)
        os.environ.update(env)
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_for(lambda: redis_answers(port), timeout=15, what="redis-server")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        from core.worker import load_url_conf

        load_url_conf()  # this process plays the web server, which loads it when it starts (vmportal/asgi.py)
        for i in range(self.args.workers):
            log = open(self.workdir / f"worker-{i + 1}.log", "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", "default", "migrations"], cwd=BASE, env=env,
                stdout=log, stderr=subprocess.STDOUT,
            ))
        import libvirt

        libvirt.registerErrorHandler(lambda *_: None, None)

    def onboard(self) -> None:
        from core.actors import Actor
        from hosts.management.commands.lab_onboard import onboard_lab_host
        from hosts.models import Host

        for entry in self.lab["hosts"]:
            onboard_lab_host(entry, actor=Actor.system())
        self.wait_jobs_idle()
        self.hosts = {h.name: h for h in Host.objects.all()}
        labh1 = self.lab["hosts"][0]
        since = time.time() - 1
        for _ in range(self.args.guests):
            spec = lab_guests.GuestSpec(name=f"vmp-bench-evac-{uuid.uuid4().hex[:6]}").with_uuid()
            self.guests.append((spec.name, spec.uuid))
            lab_hosts.start_guest(labh1, spec)
        lab_hosts.wait_heartbeats([n for n, _ in self.guests], since=since, timeout=30)
        self.refresh(labh1["name"])

    def refresh(self, name: str) -> None:
        from core.actors import Actor
        from core.choices import JobStatusChoices
        from hosts import services as host_services
        from hosts.jobs import refresh_host_job

        job = host_services.host_refresh_request(host=self.hosts[name], actor=Actor.system(), enqueue=False)
        refresh_host_job(job.pk, self.hosts[name].pk)
        job.refresh_from_db()
        if job.status != JobStatusChoices.SUCCEEDED:
            raise SystemExit(f"refresh of {name} failed: {job.error}")

    def wait_jobs_idle(self, timeout: float = 300) -> None:
        from core.choices import JOB_ACTIVE_STATES
        from core.models import Job

        wait_for(lambda: not Job.objects.filter(status__in=JOB_ACTIVE_STATES).exists(), timeout=timeout,
                 what="the workers to finish their jobs")

    # --- measurements ---------------------------------------------------------------------

    def where(self, domain_uuid: str) -> dict[str, str]:
        from hosts.adapters import libvirt as lv
        from hosts.adapters import migration as mg

        found = {}
        for h in self.lab["hosts"]:
            with lv.open_connection(h["libvirt_uri"]) as conn:
                presence = mg.domain_presence(conn, domain_uuid)
            if presence.exists:
                found[h["name"]] = presence.state
        return found

    def single(self, name: str, guest_uuid: str, destination: str) -> float:
        from core.actors import Actor
        from hosts.models import VirtualMachine
        from migrations_app.choices import MigrationStatusChoices as MS
        from migrations_app.models import Migration
        from migrations_app.options import MigrationOptions
        from migrations_app.services import live

        vm = VirtualMachine.objects.get(uuid=guest_uuid)
        source = vm.host.name
        plan = None
        if self.args.check_hosts:
            # As from the wizard: the destination's preflight first (not timed), as the queue's items
            # start from the evacuation plan's facts.
            from migrations_app.choices import PreflightRunStatusChoices as PS
            from migrations_app.models import PreflightRun
            from migrations_app.services import plans

            plan = plans.migration_plan_create(vm=vm, options=MigrationOptions(), actor=Actor.system(),
                                               destinations=[self.hosts[destination]])
            wait_for(lambda: not PreflightRun.objects.filter(plan=plan, status__in=(PS.QUEUED, PS.RUNNING)).exists(),
                     timeout=120, what=f"the preflight of plan #{plan.pk}")
        t0 = time.monotonic()
        m = live.migration_request(vm=vm, destination=self.hosts[destination], options=MigrationOptions(),
                                   actor=Actor.system(), plan=plan)
        wait_for(lambda: Migration.objects.get(pk=m.pk).is_terminal, timeout=300, what=f"migration #{m.pk}")
        wall = time.monotonic() - t0
        self.wait_jobs_idle()  # the next one starts on idle workers; its figures and refreshes are in
        m.refresh_from_db()
        if m.status != MS.SUCCEEDED:
            raise SystemExit(f"single migration #{m.pk} {m.status}: {m.error} {m.outcome}")
        print(f"  single {name} {source} -> {destination}: {wall:.2f} s ({phases(m)}; downtime {m.downtime_ms} ms, "
              f"heartbeat gap {m.heartbeat_gap_s} s)")
        return wall

    def singles(self) -> list[float]:
        name, guest_uuid = self.guests[0]
        home, others = self.lab["hosts"][0]["name"], [h["name"] for h in self.lab["hosts"][1:3]]
        times = []
        for i in range(self.args.singles):
            destination = others[(i // 2) % len(others)] if i % 2 == 0 else home
            times.append(self.single(name, guest_uuid, destination))
        if self.args.singles % 2:
            self.single(name, guest_uuid, home)  # back home, not counted
        return times

    def run_queue(self, start) -> tuple[float, object]:
        """Start an evacuation (or return) with ``start()``; wait until it settled; (wall s, record)."""
        from maintenance.models import Evacuation

        t0 = time.monotonic()
        ev = start()
        wait_for(lambda: Evacuation.objects.get(pk=ev.pk).is_terminal, timeout=600, what=f"{ev} to settle")
        wall = time.monotonic() - t0
        ev.refresh_from_db()
        return wall, ev

    def describe(self, ev) -> int:
        """Print each item's migration; return the most items whose migrations ran at the same time."""
        spans = []
        for item in ev.items.select_related("migration", "destination").order_by("position"):
            m = item.migration
            if m is None:
                print(f"  {item.vm_name}: {item.status} ({item.reason})")
                continue
            begun = m.started or m.created
            spans.append((begun.timestamp(), m.ended.timestamp()))
            print(f"  {item.vm_name} -> {item.destination.name}: {item.status}, migration #{m.pk} "
                  f"{(m.ended - m.created).total_seconds():.2f} s from request ({phases(m)}; "
                  f"downtime {m.downtime_ms} ms, heartbeat gap {m.heartbeat_gap_s} s "
                  f"{'continuous' if m.heartbeat_continuous else 'NOT continuous'})")
        # The rolling queue's own delay: from the settle that freed a lane to the next item's request.
        c = ev.concurrency
        ends = sorted(b for _, b in spans)
        created = sorted(i.migration.created.timestamp() for i in ev.items.select_related("migration")
                         if i.migration is not None)
        handoffs = [created[k] - ends[k - c] for k in range(c, len(created))]
        if handoffs:
            print(f"  queue hand-off (a lane freed → next item requested): max {max(handoffs) * 1000:.0f} ms")
        points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda p: (p[0], p[1]))
        most = now = 0
        for _, step in points:
            now += step
            most = max(most, now)
        return most

    def check_on(self, host_names: set[str]) -> None:
        for name, guest_uuid in self.guests:
            found = self.where(guest_uuid)
            if len(found) != 1 or set(found) - host_names or set(found.values()) != {"running"}:
                raise SystemExit(f"{name} is not running on exactly one of {sorted(host_names)}: {found}")

    def evacuate_and_return(self, before: list[float], *, measure_after) -> None:
        """Evacuate labh1 at concurrency c, bring the guests home, measure the singles after; print the figures."""
        from core.actors import Actor
        from hosts.models import Host, VirtualMachine
        from maintenance import planning, services

        n, c = self.args.guests, self.args.concurrency
        home_name = self.lab["hosts"][0]["name"]
        home = Host.objects.get(name=home_name)
        ours = {u for _, u in self.guests}
        excluded = [str(u) for u in VirtualMachine.objects.filter(host=home).values_list("uuid", flat=True)
                    if str(u) not in ours]
        plan = planning.evacuation_plan(host=home, concurrency=c, excluded=excluded,
                                        check_hosts=self.args.check_hosts)
        moving = [r for r in plan.rows if r.moves]
        if {r.uuid for r in moving} != ours:
            raise SystemExit(f"the plan does not move exactly the bench's guests: {[(r.name, r.action) for r in plan.rows]}")
        wall, ev = self.run_queue(lambda: services.evacuation_enter(
            host=home, actor=Actor.system(), concurrency=c, excluded=excluded, plan=plan))
        self.wait_jobs_idle()  # the figures that follow each settled migration (heartbeat gap) are in
        at_once = self.describe(ev)
        if self.args.timeline:
            timeline(ev)
        self.check_on({h["name"] for h in self.lab["hosts"][1:]})
        print(f"evacuation: {ev.status} — {ev.outcome}")
        self.wait_jobs_idle()
        home.refresh_from_db()
        back_wall, back = self.run_queue(lambda: services.maintenance_exit(host=home, actor=Actor.system(),
                                                                            concurrency=c))
        self.wait_jobs_idle()
        back_at_once = self.describe(back)
        if self.args.timeline:
            timeline(back)
        self.check_on({home_name})
        print(f"return: {back.status} — {back.outcome}")
        self.wait_jobs_idle()
        # Singles before and after the queue, so the ideal sees the machine as the queue did.
        after = measure_after()
        times = before + after
        median = statistics.median(times)
        print()
        print(f"N = {n} guests, c = {c}, {self.args.workers} RQ workers; single migration median {median:.2f} s "
              f"(over {len(times)}: {len(before)} before, median {statistics.median(before):.2f} s, and "
              f"{len(after)} after, median {statistics.median(after):.2f} s)")
        ideal = math.ceil(n / c) * median
        print(f"ideal = ceil({n} / {c}) × {median:.2f} s = {ideal:.2f} s")
        print(f"evacuation: wall {wall:.2f} s, ratio {wall / ideal:.2f} (goal ≤ {GOAL}), "
              f"at most {at_once} migrations at once")
        print(f"return:     wall {back_wall:.2f} s, ratio {back_wall / ideal:.2f} (goal ≤ {GOAL}), "
              f"at most {back_at_once} migrations at once")

    def measure(self, work) -> None:
        """Set everything up, run ``work()`` between two readings of the load, and take it all down."""
        try:
            self.start()
            self.onboard()
            print(f"load average {os.getloadavg()[0]:.2f} (this machine has {os.cpu_count()} CPUs)")
            work()
            print(f"load average {os.getloadavg()[0]:.2f}")
        finally:
            self.close()

    # --- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        for name, _ in self.guests:
            lab_hosts.remove_guest(name)
        for proc in reversed(self.procs):  # workers first, redis last
            stop(proc)
        if self.lab_owned:
            # libvirt objects left in garbage cycles close their connections when freed, which waits
            # for the host: free them while it still answers, not at exit with the lab gone.
            gc.collect()
            lab_hosts.down(log=lambda *_: None)
        shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--singles", type=int, default=4, help="single migrations measured before (and after)")
    parser.add_argument("--workers", type=int, default=0, help="RQ workers (default 2 × concurrency)")
    parser.add_argument("--check-hosts", action="store_true",
                        help="plan with the hosts asked, as the plan page does (the items then start from its "
                             "facts), and check each single's destination first, as the wizard does")
    parser.add_argument("--timeline", action="store_true",
                        help="print when each step of the evacuation and the return happened")
    parser.add_argument("--timeline-logs", action="store_true", help="with --timeline: each item's job log too")
    args = parser.parse_args()
    global TIMELINE_LOGS
    TIMELINE_LOGS = args.timeline_logs
    args.timeline = args.timeline or args.timeline_logs
    if not 1 <= args.concurrency <= 8 or not 1 <= args.guests <= 20 or not 1 <= args.singles <= 50:
        parser.error("--concurrency 1..8, --guests 1..20, --singles 1..50")
    args.workers = args.workers or 2 * args.concurrency
    if os.geteuid() != 0:
        parser.error("the lab needs root")
    bench = Bench(args)
    bench.measure(lambda: bench.evacuate_and_return(bench.singles(), measure_after=bench.singles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
