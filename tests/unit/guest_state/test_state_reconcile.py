"""What a save or restore whose job died is recorded as, from what the host shows (a table)."""

from __future__ import annotations

import pytest

from guest_state.reconcile import (
    DONE,
    FAILED,
    MAGIC_COMPLETE,
    MAGIC_PARTIAL,
    NOT_DONE,
    RESTORED,
    SAVED,
    WAIT,
    GuestOnHost,
    StateFile,
    managed_save_outcome,
    orphan_reason,
    restore_outcome,
    save_outcome,
    state_delete_outcome,
)

RUNNING = GuestOnHost(reachable=True, exists=True, state="running", reason="booted")
PAUSED_BY_USER = GuestOnHost(reachable=True, exists=True, state="paused", reason="user")
SAVING = GuestOnHost(reachable=True, exists=True, state="paused", reason="saving", job_active=True)
SAVING_PAUSED = GuestOnHost(reachable=True, exists=True, state="paused", reason="user", job_active=True)
SHUTOFF_SAVED = GuestOnHost(reachable=True, exists=True, state="shutoff", reason="saved")
SHUTOFF_CRASHED = GuestOnHost(reachable=True, exists=True, state="shutoff", reason="crashed")
ABSENT = GuestOnHost(reachable=True, exists=False)
UNREACHABLE = GuestOnHost(reachable=False)
RESTORED_RUNNING = GuestOnHost(reachable=True, exists=True, state="running", reason="restored")
STARTING = GuestOnHost(reachable=True, exists=True, state="paused", reason="starting_up")
RESTORING = GuestOnHost(reachable=True, exists=True, state="paused", reason="migrating", job_active=True)

WHOLE = StateFile(present=True, magic=MAGIC_COMPLETE, size=150_000_000)
PARTIAL = StateFile(present=True, magic=MAGIC_PARTIAL, size=40_000_000)
FOREIGN = StateFile(present=True, magic="#!/bin/sh\nrm -rf", size=12)
EMPTY_WHOLE = StateFile(present=True, magic=MAGIC_COMPLETE, size=0)
NONE = StateFile(present=False)


@pytest.mark.parametrize(
    "guest, file, outcome, remove, attention, words",
    [
        # The guest still runs: the save did not happen, whatever the file.
        (RUNNING, NONE, FAILED, False, False, "did not happen: the guest is running (booted) on kvm-a, with no state"),
        (PAUSED_BY_USER, NONE, FAILED, False, False, "paused (user)"),
        (RUNNING, PARTIAL, FAILED, True, False, "incomplete file is removed"),
        (RUNNING, FOREIGN, FAILED, True, False, "not a libvirt state file"),
        (RUNNING, WHOLE, FAILED, False, True, "did not stop the guest"),
        # libvirt still saves (it goes on without its client): wait, never guess.
        (SAVING, PARTIAL, WAIT, False, False, "still saving it"),
        (SAVING_PAUSED, PARTIAL, WAIT, False, False, "still running a job on it"),
        # The guest is gone: the header decides.
        (SHUTOFF_SAVED, WHOLE, SAVED, False, False, "save happened: the guest is shutoff (saved)"),
        (ABSENT, WHOLE, SAVED, False, False, "not defined on kvm-a, with a complete state file (150000000 bytes)"),
        (ABSENT, EMPTY_WHOLE, FAILED, False, True, "memory state is lost"),
        (SHUTOFF_CRASHED, PARTIAL, FAILED, False, True, "incomplete file is left for inspection"),
        (SHUTOFF_CRASHED, NONE, FAILED, False, True, "Start it from its disk"),
        (ABSENT, FOREIGN, FAILED, False, True, "not a libvirt state file"),
        # The host does not answer: do not guess.
        (UNREACHABLE, None, WAIT, False, False, "kvm-a did not answer"),
        (RUNNING, None, WAIT, False, False, "did not answer"),
    ],
)
def test_save_outcome(guest, file, outcome, remove, attention, words):
    settled = save_outcome(host="kvm-a", guest=guest, file=file)
    assert (settled.outcome, settled.remove_partial, settled.attention) == (outcome, remove, attention), settled.why
    assert words in settled.why


@pytest.mark.parametrize("lost_for_s, attention, words", [
    (0, False, "the sweep asks it again"),
    (299, False, "the sweep asks it again"),
    (300, True, "Needs attention: kvm-a has not answered for 300 s"),
    (4000, True, "the guest stays held"),
])
def test_an_unanswering_host_needs_attention_after_the_bound(lost_for_s, attention, words):
    for settled in (save_outcome(host="kvm-a", guest=UNREACHABLE, file=None, lost_for_s=lost_for_s,
                                 attention_after_s=300),
                    restore_outcome(host="kvm-a", started=True, guest=UNREACHABLE, lost_for_s=lost_for_s,
                                    attention_after_s=300)):
        assert (settled.outcome, settled.attention) == (WAIT, attention)
        assert words in settled.why


@pytest.mark.parametrize(
    "started, guest, outcome, words",
    [
        (True, RESTORED_RUNNING, RESTORED, "restore happened: the guest is running (restored) on kvm-b"),
        (True, PAUSED_BY_USER, RESTORED, "paused (user)"),
        (True, ABSENT, FAILED, "did not happen: the guest is not defined on kvm-b. The saved state is still usable"),
        (True, SHUTOFF_SAVED, FAILED, "shutoff (saved)"),
        (True, STARTING, WAIT, "still starting it"),
        (True, RESTORING, WAIT, "still running a job on it"),
        (True, UNREACHABLE, WAIT, "kvm-b did not answer"),
        # Still queued: the runner never reached libvirt, whatever the host shows or whether it answers.
        (False, RESTORED_RUNNING, FAILED, "never started (the guest is running (restored) on kvm-b)"),
        (False, UNREACHABLE, FAILED, "never started. The saved state is still usable"),
    ],
)
def test_restore_outcome(started, guest, outcome, words):
    settled = restore_outcome(host="kvm-b", started=started, guest=guest)
    assert settled.outcome == outcome, settled.why
    assert words in settled.why


@pytest.mark.parametrize(
    "job_id, status, error, rq_state, words",
    [
        (None, None, "", None, "its job no longer exists"),
        (7, "failed", "The worker lost this job: killed", None, "its job #7 ended as failed: The worker lost"),
        (7, "aborted", "", None, "its job #7 ended as aborted"),
        (7, "running", "", "missing", "its job #7 is missing in the queue"),
        (7, "queued", "", "canceled", "canceled in the queue"),
        (7, "running", "", "started", None),
        (7, "queued", "", None, None),  # not known to Redis yet, or inline: may still run
    ],
)
def test_orphan_reason(job_id, status, error, rq_state, words):
    found = orphan_reason(job_id=job_id, job_status=status, job_error=error, rq_state=rq_state)
    assert found == words if words is None else words in found


# --- Managed saves and deletions whose job died ---------------------------------------------


@pytest.mark.parametrize("remove, guest, has_image, outcome, words", [
    (False, GuestOnHost(reachable=True, exists=True, state="shutoff", reason="saved"), True, DONE, "happened"),
    (False, GuestOnHost(reachable=True, exists=True, state="running", reason="booted"), False, NOT_DONE, "did not happen"),
    (False, GuestOnHost(reachable=True, exists=True, state="paused", reason="saving"), False, WAIT, "still saving it"),
    (False, GuestOnHost(reachable=True, exists=True, state="shutoff", reason="destroyed"), False, NOT_DONE,
     "memory state is lost"),
    (False, GuestOnHost(reachable=False), None, WAIT, "did not answer"),
    (False, GuestOnHost(reachable=True, exists=True, state="running"), None, WAIT, "not known"),
    (True, GuestOnHost(reachable=True, exists=True, state="shutoff", reason="saved"), False, DONE, "was discarded"),
    (True, GuestOnHost(reachable=True, exists=True, state="shutoff", reason="saved"), True, NOT_DONE,
     "was not discarded"),
    (True, GuestOnHost(reachable=False), None, WAIT, "next refresh"),
])
def test_managed_save_outcome(remove, guest, has_image, outcome, words):
    settled = managed_save_outcome(host="kvm-a", remove=remove, guest=guest, has_image=has_image)
    assert settled.outcome == outcome and words in settled.why, settled.why
    assert settled.attention is (words == "memory state is lost")


@pytest.mark.parametrize("present, outcome, words", [
    (False, DONE, "is gone from kvm-a"), (True, NOT_DONE, "still on kvm-a"), (None, WAIT, "kept as saved"),
])
def test_state_delete_outcome(present, outcome, words):
    settled = state_delete_outcome(host="kvm-a", path="/s/web.state", file_present=present)
    assert settled.outcome == outcome and words in settled.why
