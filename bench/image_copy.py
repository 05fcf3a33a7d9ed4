"""How fast cold migration moves disk images: on one host, between hosts relayed, and between hosts directly.

    .venv/bin/python bench/image_copy.py [--size-mib 512] [--runs 3] [--source labh1] [--destination labh2]

Writes a test image of random data on the source's local image directory, then times, in
turn within each run (each leg after a ``sync`` on both hosts, the order rotating between runs
so no leg always follows the others' writes):

- ``on-host``: ``copy_on_host``, the source writes the copy itself (as onto a share it mounts):
  the local copy, the ideal;
- ``relay``: ``copy_between_hosts``, the bytes relayed through the portal over two SSH sessions;
- ``direct``: ``direct_copy.DirectRoute``, the source's own ssh streams to the destination
  with a one-time key (timed with setting up and removing the key, as cold migration does;
  ``direct, copy alone`` is the stream itself, what a large disk's copy time approaches);
- ``sha256 (source)``: the verification cold migration runs on both sides.

Prints each median and the direct and relayed copies as a share of the local one. Removes
every file it wrote. Needs a running lab (python -m lab up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

from bench.preflight_gather import lab_status, session  # noqa: E402
from hosts.adapters import direct_copy, images  # noqa: E402

IMAGES = "/var/lib/libvirt/images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source", default="labh1")
    parser.add_argument("--destination", default="labh2")
    args = parser.parse_args()
    hosts = {h["name"]: h for h in lab_status()["hosts"]}
    src_host, dst_host = hosts[args.source], hosts[args.destination]
    tag = uuid.uuid4().hex[:6]
    original = f"{IMAGES}/bench-{tag}.img"
    size = args.size_mib * 2**20
    rows: dict[str, list[float]] = {"on-host": [], "relay": [], "direct": [], "direct, copy alone": [],
                                    "sha256 (source)": []}
    with session(src_host) as src_session, session(dst_host) as dst_session:
        src, dst = src_session.ssh, dst_session.ssh
        endpoint = direct_copy.Endpoint(address=dst_host["address"], port=dst_host["ssh_port"],
                                        user=dst_host["ssh_user"], host_key=dst.target.pinned_host_key)
        src.run(["dd", "if=/dev/urandom", f"of={original}", "bs=4M", f"count={args.size_mib // 4}", "status=none"],
                timeout=600)

        def on_host(target: str) -> None:
            t = time.monotonic()
            images.copy_on_host(src, original, target, timeout=600)
            rows["on-host"].append(time.monotonic() - t)

        def relay(target: str) -> None:
            t = time.monotonic()
            images.copy_between_hosts(src, original, dst, target, timeout=600)
            rows["relay"].append(time.monotonic() - t)

        def direct(target: str) -> None:
            t = time.monotonic()
            route = direct_copy.DirectRoute(src, dst, endpoint=endpoint, writes=[(target, [])],
                                            label="bench", lifetime_s=600)
            try:
                route.open()
                copied = route.copy(0, original, timeout=600)
            finally:
                problems = route.close()
            rows["direct"].append(time.monotonic() - t)
            rows["direct, copy alone"].append(copied.seconds)
            assert not problems, problems

        legs = [("copy", src, on_host), ("relay", dst, relay), ("direct", dst, direct)]
        try:
            for run in range(args.runs):
                # Each run starts with another leg, so none always pays for the others' write-back.
                order = legs[run % len(legs):] + legs[:run % len(legs)]
                written = [(host, f"{IMAGES}/bench-{tag}-{name}{run}.img") for name, host, _ in order]
                try:
                    for (_, _, leg), (_, target) in zip(order, written):
                        for host in (src, dst):  # nothing left to write back from before this leg
                            host.run(["sync"], timeout=600)
                        leg(target)
                    t = time.monotonic()
                    digest = images.sha256(src, original)
                    rows["sha256 (source)"].append(time.monotonic() - t)
                    for host, target in written:
                        assert images.sha256(host, target) == digest, f"{target} differs from the original"
                finally:
                    for host, target in written:
                        images.remove_file(host, target)
        finally:
            images.remove_file(src, original)
    print(f"{args.size_mib} MiB image, {args.runs} run(s), {args.source} → {args.destination}")
    for name, times in rows.items():
        best, median = min(times), statistics.median(times)
        print(f"  {name:18s} median {median:6.2f} s  best {best:6.2f} s  = {args.size_mib / median:7.1f} MiB/s")
    local = statistics.median(rows["on-host"])
    for name in ("relay", "direct", "direct, copy alone"):
        print(f"  {name + ' / local:':27s} {local / statistics.median(rows[name]):5.0%} of the local copy's speed "
              f"(goal for direct: >= 80 %)")


if __name__ == "__main__":
    main()
