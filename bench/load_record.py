"""The cost of keeping load history: what one inventory refresh of N hosts (default 500 × 40 guests) spends recording load.

    .venv/bin/python bench/load_record.py [--hosts 500] [--guests 40] [--sample 100] [--compare] [--sweep]
    DATABASE_URL=postgres://… .venv/bin/python bench/load_record.py     # on PostgreSQL

No lab and no worker: hosts are rows with loopback addresses (127.0.x.y) and the libvirt
connection is a fake at the adapter's boundary, answering ``getAllDomainStats`` / ``getCPUStats`` /
``getMemoryStats`` / ``getInfo`` with synthetic figures, so the real adapter (``host_stats``) and the
real service (``host_load_record``: one transaction per host, four statements) run as a refresh runs them.
Three refreshes are timed for ``--sample`` hosts each (all hosts exist, so indexes hold N hosts' rows):
- *first*: no earlier counters (inserts the host's point, its guests' points and the counters);
- *same bucket*: a second refresh inside the same 5 minutes (each point merged into the one kept);
- *next bucket*: five minutes later (new points, CPU deltas from the counters).
Prints the median per host of the adapter and of the write, the projection to N hosts run one after
another, and that against the scale issue's budget: a full refresh of every host within 2 s (#16).
Without DATABASE_URL the database is a temporary SQLite file with the portal's own settings.

``--compare`` times, in the same run and database, on disjoint samples of hosts: the per-row path
the upserts replaced (``legacy_record`` below: a read of the bucket's points, a delete and a
re-insert of the guests' rows, ``update_or_create`` of the counters) and the current service; on
SQLite each also with ``synchronous=FULL`` (SQLite's default, one fsync per commit) beside the
portal's ``NORMAL``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))
REFRESH_BUDGET_S = 2.0  # issue 16: a full refresh of every host ≤ 2 s
GIB = 1024 * 1024


class FakeDomain:
    def __init__(self, uuid_text: str, name: str):
        self._uuid, self._name = uuid_text, name

    def UUIDString(self) -> str:  # noqa: N802
        return self._uuid

    def name(self) -> str:
        return self._name


class FakeConnection:
    """Just what ``hosts.adapters.stats.host_stats`` asks of a libvirt connection, with figures that move."""

    def __init__(self, guests: int, seed: int):
        self.domains = [FakeDomain(str(uuid.UUID(int=seed * 1000 + i)), f"g{seed}-{i}") for i in range(guests)]
        self.tick = 0

    def getInfo(self):  # noqa: N802
        return ["x86_64", 128 * 1024, 32, 2400, 1, 2, 8, 2]

    def getCPUStats(self, cpu, flags=0):  # noqa: N802
        t = self.tick * 300 * 32 * 10**9
        return {"kernel": t // 10, "user": t // 4, "idle": t - t // 10 - t // 4, "iowait": 0}

    def getMemoryStats(self, cell, flags=0):  # noqa: N802
        return {"total": 128 * GIB, "free": (40 + self.tick % 7) * GIB, "buffers": GIB, "cached": 8 * GIB}

    def getAllDomainStats(self, stats=0, flags=0):  # noqa: N802
        out = []
        for i, dom in enumerate(self.domains):
            vcpu = {f"vcpu.{v}.time": (self.tick * 300 + i) * 10**9 * (v + 1) // 4 for v in range(2)}
            out.append((dom, {"state.state": 1, "balloon.current": 2 * GIB, "balloon.maximum": 2 * GIB,
                              "balloon.rss": 2 * GIB + 50_000, "vcpu.current": 2, "vcpu.maximum": 2, **vcpu,
                              "block.count": 1, "block.0.name": "vda", "block.0.capacity": 20 * GIB * 1024,
                              "block.0.allocation": 5 * GIB * 1024, "block.0.physical": 5 * GIB * 1024}))
        return out


def setup(tmp: Path) -> None:
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'load.sqlite3'}")
    os.environ["DJANGO_SETTINGS_MODULE"] = "vmportal.test_settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def make_hosts(n: int):
    from hosts.models import Host

    rows = [Host(name=f"bench-{i:04d}", address=f"127.{1 + i // 250}.{i % 250}.1", auth_method="portal_key",
                 status="reachable") for i in range(n)]
    Host.objects.bulk_create(rows, batch_size=500)
    return list(Host.objects.filter(name__startswith="bench-").order_by("name"))


def history(hosts, conns, start, *, buckets: int) -> None:
    """Every host and guest gets ``buckets`` 5-minute points before ``start`` (bulk, untimed), so the tables
    and their indexes hold N hosts' rows when the refreshes are timed."""
    from hosts.models import GuestLoad, HostLoad

    for k in range(buckets):
        at = start - timedelta(minutes=5 * (buckets - k))
        HostLoad.objects.bulk_create([HostLoad(host=h, step_s=300, at=at, memory_used_kib=80 * GIB,
                                               memory_free_kib=48 * GIB, cpu_pct=30.0) for h in hosts], batch_size=500)
        GuestLoad.objects.bulk_create([GuestLoad(host=h, vm_uuid=d.UUIDString(), step_s=300, at=at, memory_kib=2 * GIB,
                                                 vcpu_pct=20.0) for h in hosts for d in conns[h.pk].domains],
                                      batch_size=2000)


_HOST_FIELDS = ("memory_used_kib", "memory_free_kib", "cpu_pct")
_GUEST_FIELDS = ("memory_kib", "vcpu_pct")


def _as_point(row, fields):
    from hosts import load

    return load.Point(at=row.at, samples=row.samples, values={f: getattr(row, f) for f in fields})


def _apply_point(row, point, fields) -> None:
    row.samples = point.samples
    for f in fields:
        value = point.values.get(f)
        setattr(row, f, round(value) if value is not None and f.endswith("_kib") else value)


def legacy_record(*, host, stats, now):
    """The per-row write the upserts replaced, kept here only to be timed beside them."""
    from django.db import transaction

    from hosts import load
    from hosts.models import GuestLoad, HostLoad, LoadCounters

    with transaction.atomic():
        kept = LoadCounters.objects.select_for_update().filter(host=host).first()
        before = load.Counters(kept.at, kept.cpu_busy_ns, kept.cpu_total_ns, kept.vcpu_ns) if kept else None
        measured = load.sample(stats, before, now=now)
        at = load.bucket_start(now, load.FINE_S)
        point = load.Point(at=at, samples=1, values=measured.host)
        row = HostLoad.objects.filter(host=host, step_s=load.FINE_S, at=at).first()
        if row:
            _apply_point(row, load.merge(_as_point(row, _HOST_FIELDS), point), _HOST_FIELDS)
        else:
            row = HostLoad(host=host, step_s=load.FINE_S, at=at, memory_used_kib=0, memory_free_kib=0)
            _apply_point(row, point, _HOST_FIELDS)
        row.save()
        existing = {str(r.vm_uuid): r for r in GuestLoad.objects.filter(host=host, step_s=load.FINE_S, at=at)}
        new, changed = [], []
        for uuid_text, values in measured.guests.items():
            point = load.Point(at=at, samples=1, values=values)
            if uuid_text in existing:
                row = existing[uuid_text]
                _apply_point(row, load.merge(_as_point(row, _GUEST_FIELDS), point), _GUEST_FIELDS)
                changed.append(row)
            else:
                row = GuestLoad(host=host, vm_uuid=uuid_text, step_s=load.FINE_S, at=at, memory_kib=0)
                _apply_point(row, point, _GUEST_FIELDS)
                new.append(row)
        if changed:
            GuestLoad.objects.filter(pk__in=[row.pk for row in changed]).delete()
            for row in changed:
                row.pk = None
        GuestLoad.objects.bulk_create(new + changed)
        c = measured.counters
        LoadCounters.objects.update_or_create(
            host=host, defaults={"at": c.at, "cpu_busy_ns": c.cpu_busy_ns, "cpu_total_ns": c.cpu_total_ns,
                                 "vcpu_ns": dict(c.vcpu_ns)})
    return measured


def one_refresh(hosts, conns, now, record=None) -> tuple[list[float], list[float]]:
    """(adapter seconds, write seconds) per host for one refresh of ``hosts`` at ``now``."""
    from hosts import services
    from hosts.adapters.stats import host_stats

    record = record or services.host_load_record
    read, write = [], []
    for host in hosts:
        conn = conns[host.pk]
        conn.tick += 1
        t0 = time.perf_counter()
        stats = host_stats(conn)
        t1 = time.perf_counter()
        record(host=host, stats=stats, now=now)
        t2 = time.perf_counter()
        read.append(t1 - t0)
        write.append(t2 - t1)
    return read, write


def _synchronous(value: str | None) -> None:
    from django.db import connection

    if value and connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous={value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--guests", type=int, default=40)
    parser.add_argument("--sample", type=int, default=100, help="Hosts timed in each refresh (all exist).")
    parser.add_argument("--history", type=int, default=12, help="5-minute points every host and guest has first.")
    parser.add_argument("--sweep", action="store_true",
                        help="Then time the hourly retention sweep rolling every point kept into hourly ones.")
    parser.add_argument("--compare", action="store_true",
                        help="Also time the per-row path the upserts replaced (and SQLite's synchronous=FULL).")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vmportal-load-bench-"))
    try:
        setup(tmp)
        from django.db import connection
        from django.utils import timezone

        from hosts import load, services
        from hosts.models import GuestLoad, HostLoad

        hosts = make_hosts(args.hosts)
        conns = {h.pk: FakeConnection(args.guests, h.pk) for h in hosts}
        sqlite = connection.vendor == "sqlite"
        # (label, write function, SQLite synchronous): each variant on its own hosts, so none sees another's points.
        variants = [("current", services.host_load_record, None)]
        if args.compare:
            variants = ([("per-row, FULL", legacy_record, "FULL"), ("current, FULL", services.host_load_record, "FULL")]
                        if sqlite else [("per-row", legacy_record, None)]) + variants
        stride = max(len(hosts) // (args.sample * len(variants)), 1) * len(variants)
        samples = [hosts[i::stride][: args.sample] for i in range(len(variants))]
        start = load.bucket_start(timezone.now(), load.FINE_S) - timedelta(hours=1)
        history(hosts, conns, start, buckets=args.history)
        with connection.cursor() as cursor:
            pragma = ""
            if sqlite:
                cursor.execute("PRAGMA synchronous")
                pragma = f", synchronous={ {0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA'}[cursor.fetchone()[0]] }"
                cursor.execute("PRAGMA journal_mode")
                pragma += f", journal_mode={cursor.fetchone()[0]}"
        print(f"{connection.vendor}{pragma}: {len(hosts)} hosts × {args.guests} guests; "
              f"{HostLoad.objects.count()} host and {GuestLoad.objects.count()} guest points kept before timing; "
              f"{len(samples[0])} hosts timed per refresh and variant")
        cases = [("first", start + timedelta(minutes=60)), ("same bucket", start + timedelta(minutes=62)),
                 ("next bucket", start + timedelta(minutes=65))]
        print(f"{'variant':<15} {'refresh':<12} {'adapter ms/host':>16} {'write ms/host':>14} "
              f"{'× ' + str(args.hosts) + ' hosts s':>14} {'share of 2 s':>13}")
        totals: dict[str, float] = {}
        for label, at in cases:
            # Host by host, every variant in turn: a burst of load on the machine lands on all of them alike.
            timed = {name: ([], []) for name, _, _ in variants}
            for i in range(len(samples[0])):
                for (name, record, sync), sample in zip(variants, samples, strict=True):
                    if i >= len(sample):
                        continue
                    _synchronous(sync)
                    read, write = one_refresh(sample[i:i + 1], conns, at, record)
                    _synchronous("NORMAL" if sync else None)
                    timed[name][0].extend(read)
                    timed[name][1].extend(write)
            for name, (read, write) in timed.items():
                r_ms, w_ms = statistics.median(read) * 1000, statistics.median(write) * 1000
                total_s = (r_ms + w_ms) * args.hosts / 1000
                totals[name] = max(totals.get(name, 0.0), total_s)
                print(f"{name:<15} {label:<12} {r_ms:>16.2f} {w_ms:>14.2f} {total_s:>14.2f} "
                      f"{total_s / REFRESH_BUDGET_S:>12.0%}")
        if len(variants) > 1:
            worst = ", ".join(f"{name} {s:.2f} s" for name, s in totals.items())
            print(f"Worst refresh of {args.hosts} hosts: {worst}; per-row / current = "
                  f"{totals[variants[0][0]] / totals['current']:.1f}×")
        print(f"Budget: a full refresh of every host ≤ {REFRESH_BUDGET_S:g} s (issue 16); the projection is one host "
              "after another on one core, before the refresh's own parallelism.")
        if args.sweep:
            fine = HostLoad.objects.filter(step_s=load.FINE_S).count() + GuestLoad.objects.filter(step_s=load.FINE_S).count()
            t0 = time.perf_counter()
            done = services.load_retention_sweep(now=start + timedelta(days=8))  # every point is past its week
            took = time.perf_counter() - t0
            coarse = HostLoad.objects.filter(step_s=3600).count() + GuestLoad.objects.filter(step_s=3600).count()
            print(f"Retention sweep (hourly, not per refresh): {fine} 5-minute points rolled into {coarse} hourly ones "
                  f"({done} rows) in {took:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
