"""`make test`: the whole suite as two pytest runs side by side.

The lab tests (integration and browser) spend most of their time waiting on guests and
daemons; the lab-free ones (unit tests, the PostgreSQL runs, `make run` supervision, the
browser tests of pages that need no host) spend theirs on the CPU.
Run together they share the machine instead of queueing behind each other. The lab run prints
as it goes; the lab-free run writes to a log that is printed when it ends, then each run's
result is summed up. The exit status fails if either run fails.

Any arguments are handed to a single ordinary pytest run instead (`make test ARGS="-k vm_list"`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest"]
# The slowest tests of each run are listed at its end, to see where the time goes.
RUNS = {
    "lab": ["-m", "lab", "--durations=25"],
    "lab-free": ["-m", "not lab", "--durations=15"],
}


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def main(argv: list[str]) -> int:
    if argv:
        return subprocess.call([*PYTEST, *argv], cwd=PROJECT)
    logs = PROJECT / "var" / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    free_log = logs / "lab-free.log"
    lab_log = logs / "lab.log"
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    with open(free_log, "w") as free_out:
        procs["lab-free"] = (
            subprocess.Popen([*PYTEST, *RUNS["lab-free"]], cwd=PROJECT, stdout=free_out,
                             stderr=subprocess.STDOUT, start_new_session=True),
            free_log,
        )
        # The lab run prints to the terminal and to its log (for the summary line).
        lab = subprocess.Popen([*PYTEST, *RUNS["lab"]], cwd=PROJECT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
        procs["lab"] = (lab, lab_log)
        try:
            with open(lab_log, "wb") as lab_out:
                for chunk in iter(lambda: lab.stdout.read1(4096), b""):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                    lab_out.write(chunk)
            codes = {name: proc.wait() for name, (proc, _) in procs.items()}
        except KeyboardInterrupt:
            for proc, _ in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)
            for proc, _ in procs.values():
                proc.wait()
            return 130
    elapsed = time.monotonic() - started
    print(f"\n{'=' * 30} lab-free run (its log) {'=' * 30}", flush=True)
    sys.stdout.write(free_log.read_text(errors="replace"))
    print(f"\n{'=' * 30} summary, {elapsed:.0f} s in all {'=' * 30}")
    for name, (_, log) in procs.items():
        verdict = "passed" if codes[name] == 0 else f"FAILED (pytest exit {codes[name]})"
        print(f"{name:>8}: {verdict}: {last_line(log)}")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
