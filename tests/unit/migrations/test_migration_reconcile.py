"""Reconciliation: the true outcome of a migration from where the guest is now, as one table."""

from __future__ import annotations

import pytest

from migrations_app.reconcile import DomainPresence, Outcome, ask_again, guest_location, settle

ABSENT = DomainPresence(exists=False, state=None, reason=None, reachable=True)
UNREACHABLE = DomainPresence(exists=False, state=None, reason=None, reachable=False)


def at(state, reason=None, **extra):
    return DomainPresence(exists=True, state=state, reason=reason, reachable=True, **extra)


RUNNING = at("running", "migrated")
SHUTOFF = at("shutoff", "migrated")

# (source, destination, status, words in reason, words in repair (None = no repair))
LIVE_TABLE = [
    # the guest moved
    (ABSENT, RUNNING, "succeeded", ["runs on kvm-b", "gone from kvm-a"], None),
    (SHUTOFF, RUNNING, "succeeded", ["shut-off definition"], None),
    (at("running", "booted"), at("blocked"), "needs-attention", ["Split brain"], ["Destroy the copy on kvm-b after checking which one is serving"]),
    # it stayed on the source
    (at("running", "migration_canceled"), ABSENT, "failed", ["stayed on kvm-a"], None),
    (RUNNING, at("shutoff", "unknown"), "failed", ["only a shut-off definition"], ["virsh undefine web on kvm-b"]),
    (RUNNING, at("paused", "migrating"), "failed", ["incoming copy"], ["virsh destroy web on kvm-b"]),
    # paused on the source, nothing running on the destination
    (at("paused", "migration"), ABSENT, "needs-attention", ["paused on kvm-a (migrating)"], ["Resume on source", "virsh resume web on kvm-a"]),
    (at("paused", "migrating"), at("shutoff"), "needs-attention", ["paused on kvm-a"], ["Resume on source", "virsh undefine web on kvm-b"]),
    (at("paused", "post-copy failed"), ABSENT, "needs-attention", ["Post-copy failed", "stale"], ["Do not resume", "virsh destroy web on kvm-a"]),
    (at("paused", "postcopy_failed"), ABSENT, "needs-attention", ["Post-copy failed"], ["Do not resume"]),
    # paused on both
    (at("paused", "migrating"), at("paused", "migrating"), "needs-attention", ["paused on both"], ["Destroy the incoming copy on kvm-b", "resume on source"]),
    (at("paused", "postcopy_failed"), at("paused", "postcopy_failed"), "needs-attention", ["memory is split"], ["--postcopy-resume"]),
    # running on the destination, paused copy on the source (post-copy): clean up only once the job ended
    (at("paused", "postcopy"), at("running", "postcopy"), "needs-attention", ["paused copy remains on kvm-a", "post-copy"],
     ["domjobinfo", "undefine the paused source copy"]),
    (at("paused", "migrating"), at("running", "migrated"), "needs-attention", ["paused copy"], ["undefine the paused source copy"]),
    # arrived but left paused
    (ABSENT, at("paused", "migrating"), "needs-attention", ["left paused"], ["Resume on destination", "virsh resume web on kvm-b"]),
    (ABSENT, at("paused", "postcopy_failed"), "needs-attention", ["Post-copy failed"], ["start it again from its disks"]),
    # not running anywhere
    (at("shutoff", "crashed"), ABSENT, "needs-attention", ["not running anywhere", "kvm-a"], ["virsh start web"]),
    (ABSENT, at("shutoff"), "needs-attention", ["not running anywhere: shut off on kvm-b"], ["virsh start"]),
    (SHUTOFF, SHUTOFF, "needs-attention", ["shut off on kvm-a and kvm-b"], ["virsh start"]),
    (ABSENT, ABSENT, "needs-attention", ["neither", "lost"], ["virsh list --all"]),
    # states the table does not name
    (at("crashed", "panicked"), ABSENT, "needs-attention", ["crashed (panicked) on kvm-a and absent on kvm-b"], ["domstate --reason"]),
    (at("pmsuspended"), RUNNING, "needs-attention", ["pmsuspended"], ["keep exactly one copy running"]),
    # a host we cannot see
    (UNREACHABLE, RUNNING, "needs-attention", ["Cannot verify: kvm-a did not answer"], ["Bring kvm-a back"]),
    (RUNNING, UNREACHABLE, "needs-attention", ["Cannot verify: kvm-b did not answer"], ["Bring kvm-b back"]),
    (UNREACHABLE, UNREACHABLE, "needs-attention", ["Cannot verify"], ["reconcile again"]),
    # libvirt still busy
    (at("running", "booted", job_active=True), at("paused", "migrating"), "needs-attention", ["still in progress", "kvm-a"], ["domjobabort"]),
    (at("running"), at("paused", job_active=True),
     "needs-attention", ["on kvm-b still reports"], ["domjobinfo web on kvm-b"]),
]


@pytest.mark.parametrize("source,destination,status,reason_words,repair_words", LIVE_TABLE)
def test_settle_live(source, destination, status, reason_words, repair_words):
    outcome = settle(source, destination, "running", guest="web", source_host="kvm-a", destination_host="kvm-b")
    assert isinstance(outcome, Outcome)
    assert outcome.status == status, outcome
    for word in reason_words:
        assert word in outcome.reason, (word, outcome.reason)
    if repair_words is None:
        assert outcome.repair is None
    else:
        assert outcome.repair, outcome
        for word in repair_words:
            assert word in outcome.repair, (word, outcome.repair)


def test_failed_post_copy_never_suggests_resuming_the_source():
    for destination in (ABSENT, at("shutoff")):
        outcome = settle(at("paused", "postcopy_failed"), destination, "failed", guest="web", source_host="kvm-a")
        assert "Resume on source" not in (outcome.repair or "")
        assert "virsh resume" not in (outcome.repair or "")


def test_job_status_is_quoted_but_does_not_decide():
    a = settle(ABSENT, RUNNING, "failed")
    b = settle(ABSENT, RUNNING, "running")
    assert a.status == b.status == "succeeded"
    assert "'failed'" in a.reason and "'running'" in b.reason
    assert "when we lost track" not in settle(ABSENT, RUNNING, "").reason


OFFLINE_TABLE = [
    (ABSENT, at("shutoff"), "succeeded", ["defined on kvm-b"]),
    (at("shutoff"), at("shutoff"), "succeeded", ["kvm-a still has its definition"]),
    (at("shutoff"), ABSENT, "failed", ["still defined only on kvm-a"]),
    (ABSENT, ABSENT, "needs-attention", ["lost"]),
    (ABSENT, RUNNING, "needs-attention", ["now active"]),
    (at("paused"), ABSENT, "needs-attention", ["now active"]),
    (UNREACHABLE, at("shutoff"), "needs-attention", ["Cannot verify"]),
]


@pytest.mark.parametrize("source,destination,status,reason_words", OFFLINE_TABLE)
def test_settle_offline(source, destination, status, reason_words):
    outcome = settle(source, destination, "running", guest="web", source_host="kvm-a", destination_host="kvm-b", offline=True)
    assert outcome.status == status, outcome
    for word in reason_words:
        assert word in outcome.reason


@pytest.mark.parametrize(
    "source,destination,expected",
    [
        (ABSENT, RUNNING, "destination"),
        (SHUTOFF, RUNNING, "destination"),
        (at("paused", "postcopy"), at("running", "postcopy"), "destination"),
        (RUNNING, ABSENT, "source"),
        (RUNNING, at("paused", "migrating"), "source"),
        (RUNNING, RUNNING, "both"),
        (at("paused"), at("paused"), "neither"),
        (ABSENT, ABSENT, "neither"),
        (SHUTOFF, SHUTOFF, "neither"),
        (UNREACHABLE, RUNNING, "unknown"),
        (RUNNING, UNREACHABLE, "unknown"),
    ],
)
def test_guest_location(source, destination, expected):
    assert guest_location(source, destination) == expected


JOB = at("running", "migrating", job_active=True)

# (source, destination, seconds since the first question, ask again?) with a 5 s wait for a
# job still reported and 8 s for a host that does not answer.
ASK_AGAIN_TABLE = [
    (RUNNING, ABSENT, 0.0, False),  # both answered, no job: settle now
    (ABSENT, RUNNING, 0.0, False),
    (JOB, ABSENT, 0.0, True),  # libvirt still migrates: wait for it
    (JOB, ABSENT, 4.9, True),
    (JOB, ABSENT, 5.0, False),  # waited long enough: settle (needs attention)
    (UNREACHABLE, RUNNING, 0.0, True),  # the source's libvirtd restarts: ask again
    (RUNNING, UNREACHABLE, 7.9, True),
    (RUNNING, UNREACHABLE, 8.0, False),  # still silent: settle without it (needs attention)
    (UNREACHABLE, UNREACHABLE, 0.0, True),
    (UNREACHABLE, JOB, 6.0, True),  # the job's wait is over, the silent host's is not
    (JOB, UNREACHABLE, 8.0, False),
]


@pytest.mark.parametrize("source,destination,elapsed_s,expected", ASK_AGAIN_TABLE)
def test_ask_again(source, destination, elapsed_s, expected):
    assert ask_again(source, destination, elapsed_s=elapsed_s, job_wait_s=5.0, unreachable_wait_s=8.0) is expected
