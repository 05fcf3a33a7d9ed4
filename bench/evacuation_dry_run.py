"""Facts for an evacuation dry run against a single-guest preflight, on the lab.

    flock /work/signals/lab.lock .venv/bin/python bench/evacuation_dry_run.py [--guests 10] [--runs 5]

Puts ``--guests`` guests of its own on the first lab host (heartbeat guests with their
read-only disks, plus one guest with a writable disk on the shared storage, one with a
local disk and one shut off; the started ones are paused unless --running, since a dozen
TCG guests saturate a 2-core machine and a paused guest is probed exactly like a running
one), then alternates, ``--runs`` times each: one single-guest
``gather`` to the second host, and one ``gather_fleet`` of all its guests against every
other lab host, sessions opened and closed inside the timing as ``gather_pair`` and
``gather_evacuation`` do. Prints each run, both medians and their ratio (the goal of the
maintenance-mode issue: ≤ 1.5). Removes its guests; brings the lab up if it is down
and then takes it down again. Needs root (the lab).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import django

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.test_settings")  # models only, no database
django.setup()

from bench.preflight_gather import session  # noqa: E402
from lab import guests as lab_guests  # noqa: E402
from lab import hosts as lab_hosts  # noqa: E402
from lab.system import run as run_cmd  # noqa: E402
from migrations_app.gather import Endpoint, gather  # noqa: E402
from migrations_app.gather_fleet import gather_fleet  # noqa: E402
from migrations_app.options import MigrationOptions  # noqa: E402
from migrations_app.preflight import overall, run_preflight  # noqa: E402

MAX_GUESTS = 30  # heartbeat guests are ~37 MiB each; the machine is shared


def guest_specs(count: int) -> list[tuple[lab_guests.GuestSpec, bool]]:
    """(spec, start) for ``count`` guests: mostly heartbeat guests, one shared-disk, one local-disk, one shut off."""
    tag = uuid.uuid4().hex[:6]
    kinds = ["shared-disk", "local-disk", "shared-disk"][: max(0, count - 1)]
    kinds += ["heartbeat"] * (count - len(kinds))
    return [(lab_guests.GuestSpec(name=f"vmp-evac-{tag}-{i}", kind=kind).with_uuid(), i != 2)
            for i, kind in enumerate(kinds)]


@contextlib.contextmanager
def lab_up():
    brought_up = not lab_hosts.is_up()
    if brought_up:
        lab_hosts.up(3, log=lambda *_: None)
    try:
        yield lab_hosts.status()
    finally:
        if brought_up:
            gc.collect()  # libvirt objects in garbage cycles close their connections while the hosts answer
            lab_hosts.down(log=lambda *_: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--running", action="store_true", help="leave the guests running (CPU-heavy under TCG)")
    parser.add_argument("--probe-times", action="store_true", help="log how long each probe took")
    args = parser.parse_args()
    if not 1 <= args.guests <= MAX_GUESTS:
        sys.exit(f"--guests must be between 1 and {MAX_GUESTS}")
    if not 1 <= args.runs <= 50:
        sys.exit("--runs must be between 1 and 50")
    logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)8.0f ms %(threadName)s %(message)s")
    if args.probe_times:
        logging.getLogger("migrations_app.gather_parts").setLevel(logging.DEBUG)
    options = MigrationOptions()

    with lab_up() as status:
        hosts = status["hosts"]
        if len(hosts) < 3:
            sys.exit("needs a lab of at least 3 hosts")
        src, others = hosts[0], hosts[1:]
        specs = guest_specs(args.guests)
        try:
            for spec, start in specs:
                lab_hosts.start_guest(src, spec, start=start)
                if start and not args.running:
                    run_cmd(["virsh", "-q", "-c", src["libvirt_uri"], "suspend", spec.name])
            one = specs[0][0].uuid
            single, fleet = [], []
            for run in range(1, args.runs + 1):
                started = time.monotonic()
                with session(src) as s, session(others[0]) as d:
                    pair, side = gather(source=Endpoint(name=src["name"], session=s),
                                        destination=Endpoint(name=others[0]["name"], session=d),
                                        guest_uuid=one, options=options)
                single.append(time.monotonic() - started)
                verdict = overall(run_preflight(pair, side, options))

                started = time.monotonic()
                with contextlib.ExitStack() as stack:
                    s = stack.enter_context(session(src))
                    ds = [stack.enter_context(session(h)) for h in others]
                    facts = gather_fleet(
                        source=Endpoint(name=src["name"], session=s),
                        destinations=[Endpoint(name=h["name"], session=d) for h, d in zip(others, ds, strict=True)],
                        guest_uuids=[spec.uuid for spec, _ in specs], options=options)
                fleet.append(time.monotonic() - started)
                verdicts = {overall(run_preflight(facts.pair(g.uuid, h["name"]), facts.guest_for(g.uuid, h["name"]),
                                                  options)) for g in facts.guests for h in others}
                print(f"run {run}: single guest {single[-1]:.2f} s ({verdict}); "
                      f"{len(facts.guests)} guests x {len(others)} hosts {fleet[-1]:.2f} s ({', '.join(sorted(verdicts))})")
        finally:
            for spec, _ in specs:
                lab_hosts.remove_guest(spec.name)
    one_s, all_s = statistics.median(single), statistics.median(fleet)
    print(f"single-guest preflight median {one_s:.2f} s (max {max(single):.2f}); "
          f"{args.guests} guests over {len(others)} hosts median {all_s:.2f} s (max {max(fleet):.2f}); "
          f"ratio {all_s / one_s:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
