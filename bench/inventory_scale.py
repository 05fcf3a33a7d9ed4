"""The inventory at fleet scale, before and after paged lists: page time and size, vm_list --json.

    .venv/bin/python bench/inventory_scale.py [--before REF] [--sizes 20,100,4000,20000] [--runs 3]
    .venv/bin/python bench/inventory_scale.py --before 501df3c --sizes 20,20000 --runs 20 --rounds 3

Two source trees are measured side by side in one run (alternately, --rounds times): this one ("after") and ``--before``
(a git revision, extracted with git archive; by default the last revision whose inventory
rendered every guest in one table). For each tree, in a process of its own with a fresh
SQLite database of that tree's schema, synthetic hosts (loopback addresses, never contacted,
no worker running: bench/synthetic_inventory.py) with 40 guests each are added up to each
size, and measured (median of --runs, and for the inventory's first page, the search and the host
page also the 95th percentile and the median CPU time; through Django's test client, DEBUG off,
without the test-time template instrumentation):
- the inventory page /hosts/ and its live partial (what every open page fetched per event);
- a filtered search (state + text) and the host page (time and queries);
- ``manage.py vm_list --json`` to /dev/null: time, and the peak of what it allocates (tracemalloc).
Goals (issue 16), at 500 hosts × 40 guests: first page ≤ 150 ms and ≤ 300 KB, filtered search
≤ 150 ms, host page ≤ 50 ms with constant queries, vm_list --json ≤ 1 s.

Measured (``--sizes 20,20000 --runs 10``, load 0.1 at the start, one round), at 20,000 guests
on 501 hosts, after vs before: first page 59.8 ms (p95 65.2) and 66 KB vs 7,562 ms and 8,154 KB;
search (state + text) 90.7 ms (p95 99.9); host page 35.3 ms (p95 48.4), 19 queries at 20 and at
20,000 guests; vm_list --json 713 ms vs 2,017 ms, peak 4.4 vs 112.3 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
BEFORE = "0f80c56"  # the inventory before paged lists: every guest in one table
GUESTS_PER_HOST = 40


def walls_ms(func, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each run (CPU time moves less when other work shares the cores)."""
    walls, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        func()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return walls, cpus


def median_ms(func, runs: int) -> float:
    return statistics.median(walls_ms(func, runs)[0])


def median_p95_ms(func, runs: int) -> tuple[float, float, float]:
    """Median and 95th percentile of the wall time (the nearest rank; the slowest run when there
    are fewer than 20), and the median CPU time."""
    walls, cpus = walls_ms(func, runs)
    walls.sort()
    return statistics.median(walls), walls[min(len(walls) - 1, -(-95 * len(walls) // 100) - 1)], statistics.median(cpus)


def vm_list_figures(runs: int) -> tuple[float, float]:
    """Milliseconds of ``manage.py vm_list --json`` (in this process, output to /dev/null), and
    the peak of the memory it allocated (MiB, tracemalloc, in a run of its own)."""
    from django.core.management import call_command

    def run():
        with open(os.devnull, "w") as sink:
            call_command("vm_list", "--json", stdout=sink)

    took = median_ms(run, runs)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return took, peak / 2**20


def measure(tree: Path, db: Path, sizes: list[int], runs: int) -> None:
    """In this process: the tree's portal on a fresh database, one JSON line of figures per size."""
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "vmportal.test_settings"
    os.environ.pop("DJANGO_DEBUG", None)
    sys.path.insert(0, str(tree))
    sys.path.append(str(BASE / "bench"))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.core.signals import request_started
    from django.db import connection, reset_queries
    from django.test import Client
    from django.conf import settings
    from django.test.utils import CaptureQueriesContext

    from hosts.models import Host, VirtualMachine
    from synthetic_inventory import make_fleet

    # Not setup_test_environment(): it instruments every template render (a signal and a copy of
    # the context per template) and a served page pays no such cost. The test client's host only.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user(username="bench", password="bench-password-1")
    user.groups.add(Group.objects.get_or_create(name="Viewer")[0])
    client = Client()
    client.force_login(user)

    def get(url, params=None):
        response = client.get(url, params or {})
        assert response.status_code == 200, (url, response.status_code)
        return response

    # Without this each request empties the query log that CaptureQueriesContext reads.
    request_started.disconnect(reset_queries)
    hosts = guests = 0
    for size in sizes:
        # Up to size guests: hosts of GUESTS_PER_HOST each, and one smaller for the rest.
        full, rest = divmod(size - guests, GUESTS_PER_HOST)
        hosts += make_fleet(full, GUESTS_PER_HOST, start=hosts)[0]
        if rest:
            hosts += make_fleet(1, rest, start=hosts)[0]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        guests = VirtualMachine.objects.count()
        hosts = Host.objects.count()
        host = Host.objects.order_by("pk")[hosts // 2]
        page = get("/hosts/")
        partial = get("/hosts/partials/inventory/")
        with CaptureQueriesContext(connection) as ctx:
            get(f"/hosts/{host.pk}/")
        host_queries = len(ctx.captured_queries)
        took, peak = vm_list_figures(runs)
        page_ms, page_p95, page_cpu = median_p95_ms(lambda: get("/hosts/"), runs)
        search_ms, search_p95, search_cpu = median_p95_ms(
            lambda: get("/hosts/", {"state": "running", "q": "vm-01"}), runs)
        host_ms, host_p95, host_cpu = median_p95_ms(lambda: get(f"/hosts/{host.pk}/"), runs)
        print(json.dumps({
            "guests": guests, "hosts": hosts,
            "page_ms": page_ms, "page_p95_ms": page_p95, "page_cpu_ms": page_cpu, "page_kb": len(page.content) / 1024,
            "partial_ms": median_ms(lambda: get("/hosts/partials/inventory/"), runs),
            "partial_kb": len(partial.content) / 1024,
            "search_ms": search_ms, "search_p95_ms": search_p95, "search_cpu_ms": search_cpu,
            "host_ms": host_ms, "host_p95_ms": host_p95, "host_cpu_ms": host_cpu, "host_queries": host_queries,
            "vm_list_ms": took, "vm_list_mib": peak,
        }), flush=True)


def run_tree(name: str, tree: Path, work: Path, sizes: list[int], runs: int) -> list[dict]:
    db = work / f"{name}.sqlite3"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", str(tree), "--db", str(db),
         "--sizes", ",".join(map(str, sizes)), "--runs", str(runs)],
        cwd=tree, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name}: measuring failed\n{proc.stderr[-4000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with (default %(default)s)")
    parser.add_argument("--sizes", default="20,100,4000,20000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two trees this many times")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.measure:
        measure(Path(args.measure), Path(args.db), sizes, args.runs)
        return 0

    work = Path(tempfile.mkdtemp(prefix="vmportal-inventory-bench-"))
    try:
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(BASE), "archive", args.before], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        t0 = time.perf_counter()
        sum(range(10**7))
        print(f"before = {args.before}, after = this tree; calibration sum(range(10**7)) = "
              f"{time.perf_counter() - t0:.2f} s, load average {os.getloadavg()[0]:.1f}; median of {args.runs}")
        # before, after, before, after…: a machine that gets busier or quieter meanwhile weighs
        # on both trees alike; each figure is the median over the rounds.
        rounds: dict[str, list[list[dict]]] = {"before": [], "after": []}
        for n in range(args.rounds):
            for name, tree in (("before", before), ("after", BASE)):
                rounds[name].append(run_tree(f"{name}-{n}", tree, work, sizes, args.runs))
            print(f"round {n + 1} of {args.rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
        def middle(values: list):
            return statistics.median_low(values) if all(isinstance(v, int) for v in values) else statistics.median(values)

        results = {name: [{key: middle([r[i][key] for r in done]) for key in done[0][i]}
                          for i in range(len(done[0]))] for name, done in rounds.items()}
        columns = [("page_ms", "page ms", ".1f"), ("page_p95_ms", "page p95 ms", ".1f"),
                   ("page_cpu_ms", "page CPU ms", ".1f"), ("page_kb", "page KB", ".0f"),
                   ("partial_ms", "live partial ms", ".1f"), ("partial_kb", "partial KB", ".0f"),
                   ("search_ms", "search ms", ".1f"), ("search_p95_ms", "search p95 ms", ".1f"),
                   ("search_cpu_ms", "search CPU ms", ".1f"),
                   ("host_ms", "host page ms", ".1f"), ("host_p95_ms", "host p95 ms", ".1f"),
                   ("host_cpu_ms", "host CPU ms", ".1f"),
                   ("host_queries", "host queries", "d"), ("vm_list_ms", "vm_list ms", ".0f"),
                   ("vm_list_mib", "vm_list peak MiB", ".1f")]
        print(f"{'tree':7s} {'guests':>7s} {'hosts':>5s} " + " ".join(f"{label:>15s}" for _, label, _ in columns))
        for name, rows in results.items():
            for row in rows:
                print(f"{name:7s} {row['guests']:7d} {row['hosts']:5d} "
                      + " ".join(f"{format(row[key], fmt) if key in row else '—':>15s}" for key, _, fmt in columns))
        for name, rows in results.items():
            small, large = rows[0], rows[-1]
            print(f"{name}: {large['guests']} ÷ {small['guests']} guests: page time × {large['page_ms'] / small['page_ms']:.1f}, "
                  f"page size × {large['page_kb'] / small['page_kb']:.1f}, "
                  f"live partial time × {large['partial_ms'] / small['partial_ms']:.1f}")
        b, a = results["before"][-1], results["after"][-1]
        print(f"at {a['guests']} guests, after vs before: page {b['page_ms'] / a['page_ms']:.1f}× faster and "
              f"{b['page_kb'] / a['page_kb']:.1f}× smaller; vm_list --json {b['vm_list_ms'] / a['vm_list_ms']:.1f}× faster, "
              f"allocation peak {b['vm_list_mib']:.1f} → {a['vm_list_mib']:.1f} MiB")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
