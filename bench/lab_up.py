"""Time `lab up` from built guests until every libvirtd answers, every sshd takes
the lab key and every guest heartbeats. Takes the lab down first and leaves it
up. Run by hand as root: .venv/bin/python bench/lab_up.py [--rounds 3] [--cold]
(--cold drops libvirt's cached QEMU capabilities first, as on a first run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import config, hosts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    times = []
    for _ in range(args.rounds):
        hosts.down(log=lambda *_: None)
        if args.cold:
            shutil.rmtree(config.paths().capabilities_cache, ignore_errors=True)
        started = time.monotonic()
        hosts.up(args.hosts, log=lambda *_: None)
        times.append(time.monotonic() - started)
        print(f"lab up, {args.hosts} hosts: ready in {times[-1]:.2f} s")
    print(f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
