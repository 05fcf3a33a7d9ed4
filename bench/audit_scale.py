"""The audit trail at scale: N events (default 1,000,000), then how fast it is to review.

    .venv/bin/python bench/audit_scale.py [--events 1000000] [--keep DIR]
    DATABASE_URL=postgres://… .venv/bin/python bench/audit_scale.py     # on PostgreSQL

Without DATABASE_URL the database is a temporary SQLite file with the portal's own settings
(WAL, IMMEDIATE transactions); with it, that (empty, throwaway) PostgreSQL database. The schema
is migrated, N chained events are generated over 90 days (actions of several families,
50 actors, 2,000 targets, a few refusals), and then measured, each the median of 5 runs:
- the audit page's first page, unfiltered (the whole view rendered through Django's client);
- filtered pages: an action family over the last 7 days, one actor, one target (with its type,
  and by id or name alone, also one that matches nothing), one result, and the page 20 pages older than the first;
- CSV export of everything (rows/s), through the same generator the download streams;
- audit_verify over the whole chain.
Goals (issue 12): filtered page ≤ 200 ms, first page ≤ 150 ms, export ≥ 50,000 rows/s,
verify ≤ 60 s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

ACTIONS = [
    "migration.request", "migration.start", "migration.finish", "migration.abort", "migration.cold.request",
    "host.add", "host.refresh", "host.trust", "vm.start", "vm.shutdown", "vm.reboot", "guest.lease_reclaimed",
    "storage.setup", "storage.verify", "maintenance.enter", "maintenance.exit", "auth.login", "auth.logout",
    "auth.login_failed", "user.change",
]
TARGET_TYPES = ["host", "virtualmachine", "migration", "share", "evacuation"]


def setup(tmp: Path) -> None:
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'audit.sqlite3'}")
    os.environ["DJANGO_SETTINGS_MODULE"] = "vmportal.test_settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0, interactive=False)


def generate(n: int) -> float:
    from django.utils import timezone

    from core import audit_chain

    rng = random.Random(12)
    start = timezone.now() - timedelta(days=90)
    step = timedelta(days=90) / n
    t0 = time.perf_counter()
    batch = []
    for i in range(n):
        action = rng.choice(ACTIONS)
        target_type = rng.choice(TARGET_TYPES)
        target_id = str(rng.randrange(2000))
        batch.append(dict(
            time=start + step * i, actor_id=None, actor_label=f"user{rng.randrange(50)}", action=action,
            target_type=target_type, target_id=target_id, target_label=f"{target_type}-{target_id}",
            parameters={"n": i, "options": {"live": True}}, result="refused" if i % 97 == 0 else "ok",
            message=f"{action} of {target_type}-{target_id}", source_ip=f"10.0.{i % 250}.{i % 200 + 1}",
            request_id=f"{i:032x}", job_id=None,
        ))
        if len(batch) == 20000:
            audit_chain.append_many(batch)
            batch = []
            print(f"  {i + 1} events", end="\r", flush=True)
    if batch:
        audit_chain.append_many(batch)
    print()
    return time.perf_counter() - t0


def median_ms(func, runs: int = 5) -> tuple[float, float]:
    """Median wall and CPU milliseconds (CPU of this process: on SQLite that includes the database)."""
    walls, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        func()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", help="keep the SQLite file in this directory")
    args = parser.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vmportal-audit-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        setup(tmp)
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db import connection
        from django.test import Client

        from core import audit_export, audit_pages
        from core.audit_verify import verify_chain
        from core.models import AuditEvent

        t0 = time.perf_counter()
        sum(range(10**7))
        # How busy the machine is: about 0.2 s on an idle core of a current machine.
        print(f"database: {connection.vendor}; calibration sum(range(10**7)) = {time.perf_counter() - t0:.2f} s, "
              f"load average {os.getloadavg()[0]:.1f}")
        existing = AuditEvent.objects.count()
        if existing < args.events:
            took = generate(args.events - existing)
            print(f"generated {args.events - existing} events in {took:.1f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE core_auditevent")
        else:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        user = get_user_model().objects.filter(username="bench").first()
        if user is None:
            user = get_user_model().objects.create_user(username="bench", password="bench-password-1")
            user.groups.add(Group.objects.get_or_create(name="Viewer")[0])
        client = Client()
        client.force_login(user)

        def page(params):
            response = client.get("/audit/", params)
            assert response.status_code == 200, response.status_code
            return response

        first = page({})
        older = first.context["page"].older
        for _ in range(19):
            older = audit_pages.audit_page(AuditEvent.objects.all(), older=older).older
        figures = {
            "first page, unfiltered": median_ms(lambda: page({})),
            "page 20 pages older": median_ms(lambda: page({"older": older})),
            "filtered: migration.* over 7 days": median_ms(lambda: page({"action": "migration.*", "period": "7d"})),
            "filtered: actor": median_ms(lambda: page({"actor": "user7"})),
            "filtered: target type + id": median_ms(lambda: page({"target_type": "host", "target": "42"})),
            "filtered: target id alone": median_ms(lambda: page({"target": "42"})),
            "filtered: target name alone": median_ms(lambda: page({"target": "host-42"})),
            "filtered: target alone, no match": median_ms(lambda: page({"target": "no-such-target"})),
            "filtered: result refused, last 24 h": median_ms(lambda: page({"result": "refused", "period": "24h"})),
            "filtered: action + actor + from/to": median_ms(lambda: page({
                "action": "vm.start", "actor": "user3", "since": "2000-01-01T00:00", "until": "2100-01-01T00:00"})),
        }
        for name, (wall, cpu) in figures.items():
            print(f"{name:40s} {wall:8.1f} ms (CPU {cpu:.1f} ms)")
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sum(piece.count("\n") for piece in audit_export.export_lines(AuditEvent.objects.all(), "csv")) - 1
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'export CSV, everything':40s} {rows} rows in {took:.1f} s = {rows / took:,.0f} rows/s "
              f"(CPU {cpu:.1f} s = {rows / cpu:,.0f} rows/CPU-s)")
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sum(piece.count("\n") for piece in audit_export.export_lines(
            AuditEvent.objects.filter(action_family="migration"), "jsonl"))
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'export JSONL, migration.*':40s} {rows} rows in {took:.1f} s = {rows / took:,.0f} rows/s "
              f"(CPU {cpu:.1f} s)")
        t0, c0 = time.perf_counter(), time.process_time()
        report = verify_chain()
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'audit_verify':40s} {report.events} events in {took:.1f} s (CPU {cpu:.1f} s), ok={report.ok}")
        return 0 if report.ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
