"""A live migration through the portal against bare virsh, same guest, same hosts, alternating.

    sudo .venv/bin/python bench/portal_vs_virsh.py [--rounds 5] [--workers 2] [--via services|cli]

The portal runs as in production (bench/evacuation.py's set-up: a private redis-server, real RQ
workers, a temporary SQLite database, the lab hosts onboarded) and is driven through the services
the browser uses: the wizard's plan with its background preflight towards the destination (as the
destination page shows it; not timed), then the confirm (``migration_request`` with that plan),
timed until the record says Succeeded. With ``--via cli`` a portal leg is instead what a script
runs: ``manage.py vm_migrate GUEST --to HOST --wait --json`` as a process of its own, no wizard
preflight before it, timed as a whole command (Python's start, the runner's own check, the
migration and what follows it); the record's request → Succeeded is printed beside it. Bare virsh is ``virsh -c SRC migrate --live --p2p
--persistent --undefinesource GUEST DST`` of the same guest, timed as a whole command.

With ``--dirty`` it measures the non-converging case instead: the lab's ``dirty-guest`` with both
hosts' egress throttled (``--rate``, default 400mbit), one leg each, alternating direction: bare
``virsh migrate --live --p2p --persistent --undefinesource`` with ``--timeout`` seconds then
aborted (``virsh domjobabort``), the same with ``--auto-converge``, the same with ``--postcopy
--postcopy-after-precopy``, then the portal with default options (adaptive convergence, post-copy
not allowed) and with ``allow_postcopy``, each leg as the browser runs it (the wizard's preflight,
not timed, then the confirm, timed until the record has ended); prints each total and libvirt's downtime, and the
portal's default against the best virsh option without post-copy (auto-converge) and the portal's
post-copy against virsh post-copy (goal ≤ 1.2, downtime ≤ 300 ms).

One round = the portal there and back, then virsh there and back (the order swaps every
round, so neither always runs on a machine the other just loaded). Between legs the portal's
follow-up (heartbeat figures, inventory refresh) is let finish and, after virsh, the inventory is
refreshed (neither timed). Prints each leg, the medians of a round trip and their ratio (goal ≤
1.2), and confirm → libvirt's migrate call (median, p95; goal p95 ≤ 300 ms). Brings the lab up
if it is down (and takes it down again); a running lab is reused and left up.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench.evacuation import Bench, phases, wait_for  # noqa: E402

GOAL_RATIO = 1.2
GOAL_P95_MS = 300
POLL_S = 0.02


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class PortalVsVirsh(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        args.guests, args.check_hosts = 1, False
        super().__init__(args)
        self.confirm_to_libvirt_ms: list[float] = []

    def lab_host(self, name: str) -> dict:
        return next(h for h in self.lab["hosts"] if h["name"] == name)

    def portal_leg(self, guest_uuid: str, destination: str) -> float:
        from core.actors import Actor
        from hosts.models import VirtualMachine
        from migrations_app.choices import MigrationStatusChoices as MS, PreflightRunStatusChoices as PS
        from migrations_app.models import Migration, PreflightRun
        from migrations_app.options import MigrationOptions
        from migrations_app.services import live, plans

        vm = VirtualMachine.objects.select_related("host").get(uuid=guest_uuid)
        source = vm.host.name
        dest = self.hosts[destination]
        options = MigrationOptions()
        # The wizard: the destination's preflight in the background, shown, then confirmed.
        plan = plans.migration_plan_create(vm=vm, options=options, actor=Actor.system(), destinations=[dest])
        wait_for(lambda: not PreflightRun.objects.filter(plan=plan, status__in=(PS.QUEUED, PS.RUNNING)).exists(),
                 timeout=120, what=f"the preflight of plan #{plan.pk}")
        t0 = time.monotonic()
        m = live.migration_request(vm=vm, destination=dest, options=options, actor=Actor.system(), plan=plan)
        wait_for(lambda: Migration.objects.filter(pk=m.pk, status__in=(MS.SUCCEEDED, MS.FAILED, MS.ABORTED,
                                                                         MS.NEEDS_ATTENTION)).exists(),
                 timeout=300, what=f"migration #{m.pk}")
        wall = time.monotonic() - t0
        m.refresh_from_db()
        if m.status != MS.SUCCEEDED:
            raise SystemExit(f"portal migration #{m.pk} {m.status}: {m.error} {m.outcome}")
        to_libvirt = (m.libvirt_called - m.created).total_seconds() * 1000
        self.confirm_to_libvirt_ms.append(to_libvirt)
        check = m.summary.get("check", {})
        job = m.job

        def ms(a, b) -> str:
            return f"{(b - a).total_seconds() * 1000:.0f}" if a and b else "?"

        print(f"  portal {source} -> {destination}: {wall:.2f} s (confirm -> libvirt call {to_libvirt:.0f} ms: "
              f"to the job row {ms(m.created, job.created)}, in the queue {ms(job.created, job.started)}, "
              f"job start -> checking {ms(job.started, m.started)}, checking -> libvirt {ms(m.started, m.libvirt_called)}"
              f" (check {check.get('mode')} {check.get('seconds')} s); {phases(m)}; downtime {m.downtime_ms} ms)")
        self.wait_jobs_idle()  # its follow-up (heartbeat, inventory) ends before the next leg
        return wall

    def cli_leg(self, guest_uuid: str, destination: str) -> float:
        from hosts.models import VirtualMachine
        from migrations_app.choices import MigrationStatusChoices as MS
        from migrations_app.models import Migration

        source = VirtualMachine.objects.select_related("host").get(uuid=guest_uuid).host.name
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "manage.py", "vm_migrate", guest_uuid, "--to", destination, "--wait",
                               "--json"], cwd=BASE, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - t0
        m = Migration.objects.filter(vm_uuid=guest_uuid).order_by("-created", "-pk").first()
        if done.returncode != 0 or m is None or m.status != MS.SUCCEEDED:
            raise SystemExit(f"vm_migrate {guest_uuid} --to {destination} failed ({done.returncode}): "
                             f"{done.stderr.strip()[-500:]} {done.stdout.strip()[-500:]}")
        to_libvirt = (m.libvirt_called - m.created).total_seconds() * 1000
        self.confirm_to_libvirt_ms.append(to_libvirt)
        check = m.summary.get("check", {})
        print(f"  vm_migrate {source} -> {destination}: {wall:.2f} s as a command (record: request -> libvirt call "
              f"{to_libvirt:.0f} ms (check {check.get('mode')} {check.get('seconds')} s), request -> Succeeded "
              f"{(m.ended - m.created).total_seconds():.2f} s; {phases(m)}; downtime {m.downtime_ms} ms)")
        self.wait_jobs_idle()
        return wall

    def virsh_leg(self, name: str, source: str, destination: str) -> float:
        src, dst = self.lab_host(source), self.lab_host(destination)
        t0 = time.monotonic()
        done = subprocess.run(
            ["virsh", "-q", "-c", src["libvirt_uri"], "migrate", "--live", "--p2p", "--persistent",
             "--undefinesource", name, dst["libvirt_uri"]], capture_output=True, text=True, timeout=300,
        )
        wall = time.monotonic() - t0
        if done.returncode != 0:
            raise SystemExit(f"virsh migrate {name} {source} -> {destination} failed: {done.stderr.strip()}")
        print(f"  virsh  {source} -> {destination}: {wall:.2f} s")
        return wall

    def virsh_dirty_leg(self, name: str, source: str, destination: str, extra: list[str]) -> tuple[float, int | None, str]:
        """(wall s, downtime ms, how it ended) of one bare virsh leg; aborted after --timeout seconds."""
        src, dst = self.lab_host(source), self.lab_host(destination)
        t0 = time.monotonic()
        proc = subprocess.Popen(["virsh", "-q", "-c", src["libvirt_uri"], "migrate", "--live", "--p2p", "--persistent",
                                 "--undefinesource", *extra, name, dst["libvirt_uri"]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _out, err = proc.communicate(timeout=self.args.timeout)
            ended = "finished" if proc.returncode == 0 else f"failed: {err.strip()[-200:]}"
        except subprocess.TimeoutExpired:
            subprocess.run(["virsh", "-q", "-c", src["libvirt_uri"], "domjobabort", name], capture_output=True)
            proc.communicate(timeout=120)
            ended = f"not finished after {self.args.timeout} s (aborted)"
        wall = time.monotonic() - t0
        downtime = None
        if ended == "finished":
            info = subprocess.run(["virsh", "-q", "-c", dst["libvirt_uri"], "domjobinfo", "--completed", name],
                                  capture_output=True, text=True).stdout
            for line in info.splitlines():
                if line.strip().lower().startswith("total downtime"):
                    downtime = int(line.split(":", 1)[1].split()[0])
        return wall, downtime, ended

    def dirty(self) -> None:
        from lab import knobs

        def knob_args(knob: str, host: str, *, undo: bool, guest: str | None = None, rate: str = "4mbit"):
            return argparse.Namespace(knob=knob, host=host, as_host=None, name=guest, rate=rate, disk="local", undo=undo)
        from hosts.models import VirtualMachine
        from migrations_app.choices import MigrationStatusChoices as MS
        from migrations_app.models import Migration
        from migrations_app.options import MigrationOptions
        from core.actors import Actor
        from migrations_app.choices import PreflightRunStatusChoices as PS
        from migrations_app.models import PreflightRun
        from migrations_app.services import live, plans

        a, b = self.lab["hosts"][0]["name"], self.lab["hosts"][1]["name"]
        name = f"vmp-bench-dirty-{os.getpid()}"
        made = knobs.run_knob(knob_args("dirty-guest", a, undo=False, guest=name))
        self.guests.append((name, made["uuid"]))  # removed by close()
        try:
            for h in (a, b):
                knobs.run_knob(knob_args("throttle", h, undo=False, rate=self.args.rate))
            self.refresh(a)
            here, there = a, b
            rows = []
            for label, extra in (("virsh plain", []), ("virsh --auto-converge", ["--auto-converge"]),
                                 ("virsh post-copy", ["--postcopy", "--postcopy-after-precopy"])):
                wall, downtime, ended = self.virsh_dirty_leg(name, here, there, extra)
                print(f"  {label} {here} -> {there}: {wall:.1f} s, downtime {downtime} ms, {ended}")
                rows.append((label, wall, downtime, ended == "finished"))
                if ended == "finished":
                    here, there = there, here
            for h in (a, b):
                self.refresh(h)
            for label, options in (("portal default", MigrationOptions()),
                                   ("portal post-copy allowed", MigrationOptions(allow_postcopy=True))):
                vm = VirtualMachine.objects.get(uuid=made["uuid"])
                # As the plain legs and the browser: the wizard's preflight first (not timed), then the confirm.
                plan = plans.migration_plan_create(vm=vm, options=options, actor=Actor.system(),
                                                   destinations=[self.hosts[there]])
                wait_for(lambda: not PreflightRun.objects.filter(plan=plan, status__in=(PS.QUEUED, PS.RUNNING)).exists(),
                         timeout=120, what=f"the preflight of plan #{plan.pk}")
                t0 = time.monotonic()
                m = live.migration_request(vm=vm, destination=self.hosts[there], options=options, actor=Actor.system(),
                                           plan=plan)
                wait_for(lambda: Migration.objects.get(pk=m.pk).is_terminal, timeout=600, what=f"migration #{m.pk}")
                wall = time.monotonic() - t0
                m.refresh_from_db()
                print(f"  {label} {here} -> {there}: {wall:.1f} s to {m.status} (libvirt {(m.total_time_ms or 0) / 1000:.1f} s), "
                      f"check {m.summary.get('check', {}).get('mode')}, "
                      f"downtime {m.downtime_ms} ms (libvirt's last estimate {m.summary.get('expected_downtime_ms')} ms), "
                      f"heartbeat gap {m.heartbeat_gap_s} s, steps {m.summary.get('adaptive_steps')}")
                seen = m.summary.get("neighbours") or {}
                print(f"    the destination's other guests: {seen.get('verdict') or seen.get('why')}")
                for g in seen.get("guests", []):
                    print(f"      {g['name']}: CPU {g['cpu_before_pct']} % -> {g['cpu_during_pct']} %, "
                          f"steal {g['steal_before_pct']} % -> {g['steal_during_pct']} %")
                rows.append((label, wall, m.downtime_ms, m.status == MS.SUCCEEDED))
                self.wait_jobs_idle()
                if m.status == MS.SUCCEEDED:
                    here, there = there, here
        finally:
            for h in (a, b):
                knobs.run_knob(knob_args("throttle", h, undo=True))
        got = {label: (wall, downtime, ok) for label, wall, downtime, ok in rows}
        print()
        print(f"dirty guest, both hosts throttled to {self.args.rate}:")
        for label, (wall, downtime, ok) in got.items():
            shown = f"{downtime} ms" if downtime is not None else "not reported by libvirt"
            print(f"  {label:26s} {wall:6.1f} s  downtime {shown}  {'finished' if ok else 'NOT finished'}")
        for portal_label, virsh_label in (("portal default", "virsh --auto-converge"),
                                          ("portal post-copy allowed", "virsh post-copy")):
            p, v = got[portal_label], got[virsh_label]
            if p[2] and v[2]:
                shown = f"{p[1]} ms" if p[1] is not None else "not reported by libvirt (no completed job figures)"
                print(f"  {portal_label} / {virsh_label}: {p[0] / v[0]:.2f} (goal <= {GOAL_RATIO}), "
                      f"downtime {shown} (goal <= 300 ms)")

    def portal_round(self, guest_uuid: str, home: str, away: str) -> float:
        leg = self.cli_leg if self.args.via == "cli" else self.portal_leg
        return leg(guest_uuid, away) + leg(guest_uuid, home)

    def virsh_round(self, name: str, home: str, away: str) -> float:
        total = self.virsh_leg(name, home, away) + self.virsh_leg(name, away, home)
        for host in (home, away):  # the portal did not see those moves: its inventory catches up
            self.refresh(host)
        return total

    def run(self) -> None:
        name, guest_uuid = self.guests[0]
        home, away = self.lab["hosts"][0]["name"], self.lab["hosts"][1]["name"]
        portal, virsh = [], []
        for i in range(self.args.rounds):
            print(f"round {i + 1}:")
            if i % 2 == 0:
                portal.append(self.portal_round(guest_uuid, home, away))
                virsh.append(self.virsh_round(name, home, away))
            else:
                virsh.append(self.virsh_round(name, home, away))
                portal.append(self.portal_round(guest_uuid, home, away))
            print(f"  round trip: portal {portal[-1]:.2f} s, virsh {virsh[-1]:.2f} s")
        p, v = statistics.median(portal), statistics.median(virsh)
        ms = self.confirm_to_libvirt_ms
        print()
        print(f"{self.args.rounds} round trips of {name} {home} <-> {away}, {self.args.workers} RQ workers")
        what = ("vm_migrate --wait as a command, both legs" if self.args.via == "cli"
                else "confirm -> Succeeded, both legs")
        print(f"portal ({what}): median {p:.2f} s (min {min(portal):.2f}, max {max(portal):.2f})")
        print(f"virsh migrate --live --p2p --persistent --undefinesource: median {v:.2f} s "
              f"(min {min(virsh):.2f}, max {max(virsh):.2f})")
        print(f"ratio portal / virsh: {p / v:.2f} (goal <= {GOAL_RATIO})")
        print(f"{'request' if self.args.via == 'cli' else 'confirm'} -> libvirt migrate call over {len(ms)} "
              f"migrations: median {statistics.median(ms):.0f} ms, p95 {p95(ms):.0f} ms, max {max(ms):.0f} ms "
              f"(goal p95 <= {GOAL_P95_MS} ms when the facts are fresh"
              f"{'; vm_migrate has no wizard preflight before it, so its runner checks in full' if self.args.via == 'cli' else ''})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="RQ workers")
    parser.add_argument("--via", choices=("services", "cli"), default="services",
                        help="a portal leg through the wizard's services (default) or as `vm_migrate --wait`")
    parser.add_argument("--dirty", action="store_true", help="the non-converging case instead (see above)")
    parser.add_argument("--rate", default="400mbit", help="egress throttle for --dirty (tc rate)")
    parser.add_argument("--timeout", type=int, default=90, help="seconds a bare virsh leg gets in --dirty")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50 or not 1 <= args.workers <= 8:
        parser.error("--rounds 1..50, --workers 1..8")
    if os.geteuid() != 0:
        parser.error("the lab needs root")
    if not 10 <= args.timeout <= 600:
        parser.error("--timeout 10..600")
    bench = PortalVsVirsh(args)
    bench.measure(bench.dirty if args.dirty else bench.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
