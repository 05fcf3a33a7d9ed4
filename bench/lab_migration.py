"""Live-migrate a lab heartbeat guest back and forth with plain libvirt-python and
print what it cost: wall time, libvirt-reported downtime, and the guest's own
largest heartbeat gap. Run by hand with the lab up:

    .venv/bin/python bench/lab_migration.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libvirt  # noqa: E402

from lab import hosts  # noqa: E402
from lab.heartbeat import report  # noqa: E402

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
         | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda *_: None, None)
    st = hosts.status()
    if not st["hosts"]:
        print("the lab is not up: python -m lab up", file=sys.stderr)
        return 1
    a, b = st["hosts"][0], st["hosts"][1]
    guest = next(g for g in a["guests"] if g.startswith("hb-"))
    rows = []
    src, dst = a, b
    for _ in range(args.rounds):
        t0 = time.time()
        time.sleep(0.3)
        conn = libvirt.open(src["libvirt_uri"])
        try:
            started = time.monotonic()
            conn.lookupByName(guest).migrateToURI3(dst["libvirt_uri"], {}, FLAGS)
            wall = time.monotonic() - started
        finally:
            conn.close()
        time.sleep(0.6)
        dconn = libvirt.open(dst["libvirt_uri"])
        try:
            stats = dconn.lookupByName(guest).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        finally:
            dconn.close()
        rep = report(guest, since=t0)
        rows.append((wall, stats.get("downtime"), stats.get("time_elapsed"), rep.max_gap_s, rep.continuous))
        print(f"{src['name']} -> {dst['name']}: call {wall:.2f} s, libvirt job {stats.get('time_elapsed')} ms, "
              f"downtime {stats.get('downtime')} ms, heartbeat gap {rep.max_gap_s:.3f} s, "
              f"{'continuous' if rep.continuous else 'NOT continuous'}")
        src, dst = dst, src
    if src is not a:  # odd number of rounds: bring it home
        conn = libvirt.open(src["libvirt_uri"])
        try:
            conn.lookupByName(guest).migrateToURI3(a["libvirt_uri"], {}, FLAGS)
        finally:
            conn.close()
    gaps = [r[3] for r in rows]
    downs = [r[1] for r in rows if r[1] is not None]
    print(f"median call {statistics.median(r[0] for r in rows):.2f} s; median downtime "
          f"{statistics.median(downs) if downs else 'n/a'} ms; heartbeat gap median {statistics.median(gaps):.3f} s, "
          f"max {max(gaps):.3f} s; all continuous: {all(r[4] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
