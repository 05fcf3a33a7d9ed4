"""The fault matrix's RQ worker: the portal's own (``manage.py rqworker`` with its worker class),
plus hold points in the live runner, and in the save and restore runner, where a fault is injected.

A stage such as "completing" lasts a few milliseconds: too short to hit by watching the record.
At each hold point the work horse checks for a gate file ``hold-<point>`` in
$FAULT_MATRIX_HOLDS; when the test created one, the horse writes ``at-<point>`` (its pid) and
waits until the gate is removed. The test kills it there, or takes the database away and
opens the gate. Without a gate file the worker runs exactly as the portal's.

    python tests/integration/fault_worker.py default migrations
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from guest_state import runner as state_runner  # noqa: E402
from migrations_app import runner  # noqa: E402

HOLDS = Path(os.environ["FAULT_MATRIX_HOLDS"])
# Where each point sits in runner._run: after both hosts were gathered (status "checking"); after
# libvirt returned (status "completing"), before the hosts are asked; before the end is written;
# "post-checks": in the follow-up job the end queued (the record says Succeeded, the migration's
# own job has ended), before the inventories are refreshed and the guest's pause is measured.
POINTS = {"preflight": "run_preflight", "completing": "locate_guest", "finishing": "record_end",
          "post-checks": "_follow_up"}


def hold(point: str) -> None:
    gate = HOLDS / f"hold-{point}"
    if not gate.exists():
        return
    (HOLDS / f"at-{point}").write_text(str(os.getpid()))
    while gate.exists():
        time.sleep(0.02)


# In guest_state.runner: before libvirt is asked to save the guest; after libvirt saved it (the
# guest is stopped, the file whole) and before the disks, checksum and record are written; after
# libvirt restored the guest and before the record is written; after libvirt's managed save and
# after a state file was removed, before either is recorded.
STATE_POINTS = {"save-start": ("save_to_file", "before"), "save-written": ("save_to_file", "after"),
                "restore-written": ("restore_from_file", "after"), "managed-saved": ("managed_save_on_host", "after"),
                "state-deleted": ("delete_state_file", "after")}


def held(point: str, function):
    def wrapper(*args, **kwargs):
        hold(point)
        return function(*args, **kwargs)
    return wrapper


def held_after(point: str, function):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        hold(point)
        return result
    return wrapper


for _point, _name in POINTS.items():
    setattr(runner, _name, held(_point, getattr(runner, _name)))
for _point, (_name, _when) in STATE_POINTS.items():
    setattr(state_runner, _name, (held if _when == "before" else held_after)(_point, getattr(state_runner, _name)))

if __name__ == "__main__":
    call_command("rqworker", *sys.argv[1:])
