"""How long a full inventory refresh of every lab host takes, against bare libvirt in the same run.

    sudo .venv/bin/python bench/lab_refresh.py [--guests-per-host 12] [--runs 5] [--workers 3] [--profile]

The portal runs as in production (bench/evacuation.py's set-up: a private redis-server, W real
RQ workers and a temporary SQLite database, all under a temporary directory and stopped by PID
at the end). The lab hosts
are onboarded and given heartbeat guests of the bench's own until each runs
--guests-per-host guests (removed at the end). Then, alternating, --runs times each:
- portal periodic: the periodic full refresh (hosts.jobs.inventory_refresh_all, as watch_hosts
  calls it) until every host's refresh job has ended, the workers running hosts side by side; it
  keeps the os-release and disk placement read within VMPORTAL_HOST_PROBE_SECONDS (hosts.probe_rules);
- portal asked for: a refresh of every host as a Refresh click asks it, which reads those again
  (one SSH command a host);
- bare: what a refresh has to learn, asked of libvirt directly over the same qemu+ssh URIs,
  one thread per host: a new connection, every domain with its XML, and the bulk stats call.
Prints the medians, the worst run, the ratio portal / bare and, from the last portal run's job
logs, where each host's refresh spent its time; --profile also runs one host's refresh in this
process under cProfile. Goal: the portal's full refresh
<= 2 s. Brings the lab up if it is down (and takes it down again); a running lab is reused and
left up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench import evacuation  # noqa: E402
from bench.evacuation import wait_for  # noqa: E402
from lab import guests as lab_guests  # noqa: E402
from lab import hosts as lab_hosts  # noqa: E402

GOAL_S = 2.0


class Bench(evacuation.Bench):
    """bench/evacuation.py's portal (start, wait_jobs_idle, close), with guests of this bench's own."""

    def running_on(self, entry: dict) -> int:
        from hosts.adapters import libvirt as lv

        with lv.open_connection(entry["libvirt_uri"]) as conn:
            return len(conn.listAllDomains(1))

    def populate(self) -> None:
        since = time.time() - 1
        for entry in self.lab["hosts"]:
            for _ in range(max(0, self.args.guests_per_host - self.running_on(entry))):
                spec = lab_guests.GuestSpec(name=f"vmp-bench-refresh-{uuid.uuid4().hex[:6]}").with_uuid()
                self.guests.append((spec.name, spec.uuid))
                lab_hosts.start_guest(entry, spec)
        if self.guests:
            lab_hosts.wait_heartbeats([name for name, _ in self.guests], since=since, timeout=120)
        from core.actors import Actor
        from hosts.management.commands.lab_onboard import onboard_lab_host

        for entry in self.lab["hosts"]:
            onboard_lab_host(entry, actor=Actor.system())
        self.wait_jobs_idle()

    def portal_refresh(self, *, full: bool) -> float:
        from core.actors import Actor
        from core.choices import JOB_ACTIVE_STATES, JobStatusChoices
        from core.models import Job
        from hosts import services as host_services
        from hosts.jobs import inventory_refresh_all
        from hosts.models import Host

        from django.utils import timezone

        first = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        self.began = timezone.now()
        t0 = time.perf_counter()
        if full:  # what a Refresh click asks of every host: os-release and disk placement read again
            queued = sum(host_services.host_refresh_request(host=host, actor=Actor.system()) is not None
                         for host in Host.objects.all())
        else:
            queued = inventory_refresh_all()
        self.dispatched = time.perf_counter() - t0
        ours = Job.objects.filter(pk__gt=first, kind="host.refresh")
        wait_for(lambda: ours.count() >= queued and not ours.filter(status__in=JOB_ACTIVE_STATES).exists(),
                 timeout=120, what="every host's refresh")
        wall = time.perf_counter() - t0
        failed = list(ours.exclude(status=JobStatusChoices.SUCCEEDED).values_list("error", flat=True))
        if failed:
            raise SystemExit(f"a refresh failed: {failed}")
        self.last_jobs = list(ours.order_by("pk"))
        self.last_marks = (self.dispatched, max(job.ended for job in self.last_jobs) - self.began, wall)
        return wall

    def timeline(self) -> None:
        """Where the last portal refresh's time went, job by job: waiting for a worker, then each logged step."""
        from datetime import datetime

        dispatched, last_ended, wall = self.last_marks
        print(f"  jobs queued after {dispatched:.2f} s; the last ended at {last_ended.total_seconds():.2f} s; "
              f"seen ended at {wall:.2f} s")
        for job in self.last_jobs:
            marks = [("queued", job.created), ("picked up", job.started)]
            marks += [(line["msg"][:48], datetime.fromisoformat(line["t"])) for line in job.log]
            marks.append(("ended", job.ended))
            steps = [f"{label} +{(at - marks[i][1]).total_seconds():.2f} s"
                     for i, (label, at) in enumerate(marks[1:]) if at and marks[i][1]]
            print(f"  job {job.pk}: " + "; ".join(steps))

    def bare_refresh(self) -> float:
        import libvirt

        errors: list[str] = []

        def one(entry: dict) -> None:
            try:
                conn = libvirt.open(entry["libvirt_uri"])
                try:
                    conn.getInfo()
                    for dom in conn.listAllDomains(0):
                        dom.XMLDesc(0)
                        dom.info()
                    conn.getAllDomainStats(0, 0)
                finally:
                    conn.close()
            except libvirt.libvirtError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=one, args=(entry,)) for entry in self.lab["hosts"]]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
        if errors:
            raise SystemExit(f"bare libvirt failed: {errors}")
        return wall

    def run(self) -> None:
        self.start()
        self.populate()
        from hosts.models import VirtualMachine

        guests = VirtualMachine.objects.count()
        portal, asked, bare = [], [], []
        timelines = {}
        for i in range(self.args.runs):
            portal.append(self.portal_refresh(full=False))
            timelines["periodic"] = (self.last_jobs, self.last_marks)
            asked.append(self.portal_refresh(full=True))
            timelines["asked for"] = (self.last_jobs, self.last_marks)
            bare.append(self.bare_refresh())
            print(f"run {i + 1}: portal periodic {portal[-1]:.2f} s, asked for {asked[-1]:.2f} s, "
                  f"bare libvirt {bare[-1]:.2f} s", flush=True)
        load = os.getloadavg()
        p, a, b = statistics.median(portal), statistics.median(asked), statistics.median(bare)
        print(f"\n{len(self.lab['hosts'])} hosts, {guests} guests in the inventory, {self.args.workers} workers, "
              f"load {load[0]:.1f} {load[1]:.1f}")
        print(f"periodic full refresh, portal: median {p:.2f} s, worst {max(portal):.2f} s (goal <= {GOAL_S:g} s)")
        print(f"refresh asked for (os-release and disk placement read again): median {a:.2f} s, "
              f"worst {max(asked):.2f} s")
        print(f"same facts from bare libvirt: median {b:.2f} s, worst {max(bare):.2f} s")
        print(f"ratio portal / bare: periodic {p / b:.2f}, asked for {a / b:.2f}")
        for kind, (jobs, marks) in timelines.items():
            print(f"the last {kind} refresh, step by step (each step's time since the one before):")
            self.last_jobs, self.last_marks = jobs, marks
            self.timeline()
        if self.args.profile:
            self.profile_one()

    def profile_one(self) -> None:
        """One host's refresh run in this process under cProfile: the 20 costliest calls, cumulative."""
        import cProfile
        import pstats

        from core.actors import Actor
        from hosts import services as host_services
        from hosts.jobs import refresh_host_job
        from hosts.models import Host

        host = Host.objects.order_by("name").first()
        for full in (False, True):
            job = host_services.host_refresh_request(host=host, actor=Actor.system(), enqueue=False, full=full)
            profiler = cProfile.Profile()
            t0 = time.perf_counter()
            profiler.runcall(refresh_host_job, job.pk, host.pk, full)
            print(f"\none {'full' if full else 'periodic'} refresh of {host.name} in this process: "
                  f"{time.perf_counter() - t0:.2f} s")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests-per-host", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also profile one host's refresh in this process")
    args = parser.parse_args()
    if not 0 <= args.guests_per_host <= 40 or not 1 <= args.runs <= 50 or not 1 <= args.workers <= 8:
        parser.error("--guests-per-host 0-40, --runs 1-50, --workers 1-8")
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
