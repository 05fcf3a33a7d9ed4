"""``python -m lab``: up, down, status, build-guests, heartbeat, knob."""

from __future__ import annotations

import argparse
import json
import sys
import time

from lab import guests, heartbeat, hosts, knobs
from lab.system import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="VMPortal's lab of libvirt hosts in namespaces")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring the lab up (no-op if it is up)")
    p_up.add_argument("--hosts", type=int, default=3)
    p_up.add_argument("--guests-per-host", type=int, default=1)
    sub.add_parser("down", help="stop everything the lab started")
    p_status = sub.add_parser("status", help="show hosts and guests")
    p_status.add_argument("--json", action="store_true")
    p_build = sub.add_parser("build-guests", help="assemble the guest images from source")
    p_build.add_argument("--linux", action="store_true", help="also build the Linux guest (downloads Debian's cloud kernel package)")
    p_hb = sub.add_parser("heartbeat", help="largest heartbeat gap of a guest")
    p_hb.add_argument("guest")
    p_hb.add_argument("--since", type=float, default=0.0, help="Unix time")
    p_hb.add_argument("--json", action="store_true")
    knobs.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            hosts.up(args.hosts, args.guests_per_host)
        elif args.command == "down":
            hosts.down()
        elif args.command == "status":
            st = hosts.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                print_status(st)
        elif args.command == "build-guests":
            started = time.monotonic()
            built = guests.build_guests()
            if args.linux:
                from lab import linux_guest

                built["linux"] = str(linux_guest.build())
            print(f"built {', '.join(built)} in {time.monotonic() - started:.2f} s")
        elif args.command == "heartbeat":
            rep = heartbeat.report(args.guest, args.since)
            if args.json:
                print(json.dumps(rep.as_dict(), indent=2))
            else:
                print(f"{rep.guest}: {rep.beats} beats, largest gap {rep.max_gap_s:.3f} s, "
                      f"{'continuous' if rep.continuous else 'NOT continuous'}, last beat {rep.last_beat_age_s} s ago")
        elif args.command == "knob":
            result = knobs.run_knob(args)
            if result:
                print(json.dumps(result, indent=2))
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


def print_status(st: dict) -> None:
    if not st["hosts"]:
        extra = f" (left behind: {', '.join(st['leftovers'])})" if st.get("leftovers") else ""
        print(f"lab is down{extra}")
        return
    print(f"lab {'up' if st['up'] else 'DEGRADED'}; shared storage at {st['shared_path']}")
    for h in st["hosts"]:
        guests_text = ", ".join(f"{n} ({s})" for n, s in h["guest_states"].items()) or "no guests"
        print(f"  {h['name']:6} {h['address']:12} {h['libvirt_uri']:30} "
              f"{'running' if h['running'] else 'STOPPED'}{'' if h['libvirtd_running'] else ' libvirtd DOWN'}  {guests_text}")
