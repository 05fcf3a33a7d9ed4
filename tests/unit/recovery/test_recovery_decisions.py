import dataclasses

import pytest

from recovery.decisions import StartFacts, start_verdict

BASE = StartFacts(guest="db-1", dead_host="kvm-a", destination="kvm-b", dead_host_answer=None, on_destination=None)


@pytest.mark.parametrize("changes, words", [
    ({}, None),
    ({"on_destination": "shutoff"}, None),  # a shut-off definition there is redefined and started
    ({"dead_host_answer": "kvm-a answered over SSH just now."}, "kvm-a answered again before db-1 was started"),
    ({"dead_host_answer": "x", "on_destination": "running"}, "answered again"),  # the host first
    ({"on_destination": "running"}, "already runs on kvm-b (running)"),
    ({"on_destination": "paused"}, "already runs on kvm-b"),
    ({"disk_problems": ("its disk /s/a is locked by a running QEMU.",)}, "was not started: its disk /s/a is locked"),
    ({"on_destination": "running", "disk_problems": ("x",)}, "already runs"),
])
def test_start_verdict(changes, words):
    verdict = start_verdict(dataclasses.replace(BASE, **changes))
    if words is None:
        assert verdict is None
    else:
        assert verdict and words in verdict
