"""How long the preflight gather takes for a pair of lab hosts.

    .venv/bin/python bench/preflight_gather.py [--runs 5] [--source labh1] [--destination labh2] [--guest NAME]

Gathers the facts for one running guest on the source (a running guest found
there unless --guest is given) and prints each run's time, the median and the
max. Read-only for the lab: the probe's marker files are removed by gather.
Needs a running lab (python -m lab up).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import django

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.test_settings")  # models only, no database
django.setup()

from hosts import access  # noqa: E402
from hosts.adapters import libvirt as lv  # noqa: E402
from hosts.adapters.ssh import SSHTarget  # noqa: E402
from hosts.models import Host  # noqa: E402
from migrations_app.gather import Endpoint, gather  # noqa: E402
from migrations_app.options import MigrationOptions  # noqa: E402
from migrations_app.preflight import overall, run_preflight  # noqa: E402


def lab_status() -> dict:
    out = subprocess.run([sys.executable, "-m", "lab", "status", "--json"], cwd=BASE, capture_output=True,
                         text=True, check=True)
    status = json.loads(out.stdout)
    if not status.get("up"):
        sys.exit("the lab is not up: python -m lab up")
    return status


def session(host: dict) -> access.HostSession:
    """A session to the lab host with its lab key and pinned host key (no inventory row needed)."""
    pins = {}
    for line in Path(host["ssh_known_hosts"]).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            pins[fields[0]] = f"{fields[1]} {fields[2]}"
    ssh = SSHTarget(address=host["address"], port=host["ssh_port"], user=host["ssh_user"],
                    private_key_pem=Path(host["ssh_key"]).read_text(), pinned_host_key=pins[host["address"]])
    row = Host(name=host["name"], address=host["address"], ssh_port=host["ssh_port"], ssh_user=host["ssh_user"],
               libvirt_uri=host["libvirt_uri"], host_key=pins[host["address"]])
    return access.HostSession(row, target=ssh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source")
    parser.add_argument("--destination")
    parser.add_argument("--guest", help="guest name on the source (default: a running one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    hosts = {h["name"]: h for h in lab_status()["hosts"]}
    names = list(hosts)
    src = hosts[args.source or names[0]]
    dst = hosts[args.destination or next(n for n in names if n != src["name"])]
    with lv.open_connection(src["libvirt_uri"]) as conn:
        guests = [d for d in lv.list_domains(conn) if d.state == "running"]
    guest = next((d for d in guests if d.name == args.guest or (not args.guest and d.name.startswith("hb-"))),
                 None) or (guests[0] if guests and not args.guest else None)
    if guest is None:
        sys.exit(f"no {'guest ' + args.guest if args.guest else 'running guest'} on {src['name']}")

    options = MigrationOptions()
    times = []
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        with session(src) as src_session, session(dst) as dst_session:
            pair, side = gather(source=Endpoint(name=src["name"], session=src_session),
                                destination=Endpoint(name=dst["name"], session=dst_session),
                                guest_uuid=guest.uuid, options=options)
        took = time.monotonic() - started
        times.append(took)
        print(f"run {run}: {took:.2f} s (preflight {overall(run_preflight(pair, side, options))})")
    print(f"{guest.name} {src['name']} -> {dst['name']}, {args.runs} runs: "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")


if __name__ == "__main__":
    main()
