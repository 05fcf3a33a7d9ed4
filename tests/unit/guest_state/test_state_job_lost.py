"""A save or restore whose work horse died is settled at once from what the host shows (the fake
fleet at the host session; the real adapters, services and receivers above it): the record tells
the truth, the guest's lease is released with it and the audit row says what was found; a host
that does not answer is not guessed at, and the sweep settles it once it answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.actors import Actor
from core.choices import JobStatusChoices
from core.jobs import JobContext, job_lost
from core.models import AuditEvent, Job
from guest_state import reconciler, runner, services
from guest_state.choices import GuestStateJobKindChoices as K, RestoreStatusChoices as RS, SavedStateStatusChoices as SS
from guest_state.models import SavedState
from guest_state.reconcile import MAGIC_COMPLETE, MAGIC_PARTIAL
from hosts.models import GuestLease, HostFacts, VirtualDisk
from tests.fakes import virt
from tests.fakes.fleet import make_host, make_vm
from tests.fakes.shell import fail, ok

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()
DISK = "/shared/web-1.qcow2"
SHA = "cd" * 32
KILLED = "its work horse (pid 4242) died, killed by signal 9"


class Files:
    """The state files the host has: path -> (size, first bytes); answers stat, head, sha256sum, rm."""

    def __init__(self, fake):
        self.files: dict[str, tuple[int, str]] = {}
        self.removed: list[str] = []
        fake.script("stat -L -c '%s %Y' -- /var/lib/vmportal-save/", self.stat)
        fake.script("head -c 16 -- /var/lib/vmportal-save/", self.head)
        fake.script("sha256sum -- /var/lib/vmportal-save/", lambda argv, _stdin: ok(argv, f"{SHA}  {argv[-1]}\n"))
        fake.script("rm -f -- /var/lib/vmportal-save/", self.rm)
        fake.script(f"stat -L -c '%s %Y' -- {DISK}", ok([], "16777216 1700000000\n"))

    def stat(self, argv, _stdin):
        found = self.files.get(argv[-1])
        return ok(argv, f"{found[0]} 1700000100\n") if found else fail(argv, "No such file or directory")

    def head(self, argv, _stdin):
        found = self.files.get(argv[-1])
        return ok(argv, found[1][:16]) if found else fail(argv, "No such file or directory")

    def rm(self, argv, _stdin):
        self.removed.append(argv[-1])
        self.files.pop(argv[-1], None)
        return ok(argv)


@pytest.fixture
def guest(fleet):
    host = make_host("kvm-a")
    HostFacts.objects.create(host=host, hypervisor_version="7.2.0", machine_types=["pc"])
    vm = make_vm(host, "web-1")
    VirtualDisk.objects.create(vm=vm, target="vda", source_type="file", source=DISK, storage="shared")
    fake = fleet.adopt(host, fleet.guest_of(vm))
    return host, vm, fake, Files(fake)


def saving(vm) -> SavedState:
    """A save whose horse is running (the record says "saving", its job "running")."""
    state = services.save_request(vm=vm, directory="/var/lib/vmportal-save", actor=SYSTEM, enqueue=False)
    Job.objects.filter(pk=state.job_id).update(status=JobStatusChoices.RUNNING, started=timezone.now())
    return state


def fleet_conn(fake):
    """libvirt on the fake host, as the dead horse (or libvirtd without it) acted on it."""
    return virt.FakeConnect(fake)


def horse_dies(job_id: int, capture) -> None:
    with capture(execute=True):
        job_lost(job_id, reason=KILLED)


def outcome_audit(action="guest.save_outcome") -> AuditEvent:
    return AuditEvent.objects.get(action=action)


def test_killed_after_libvirt_saved_is_recorded_saved_with_the_runners_figures(
        guest, django_capture_on_commit_callbacks):
    _host, vm, fake, files = guest
    state = saving(vm)
    fleet_conn(fake).lookupByUUIDString(str(vm.uuid)).saveFlags(state.path, None, 0)  # libvirt saved it
    files.files[state.path] = (150_000_000, MAGIC_COMPLETE + "\x02\x00\x00\x00")
    horse_dies(state.job_id, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert (state.status, state.size, state.sha256, state.error) == (SS.SAVED, 150_000_000, SHA, "")
    assert state.disks == [{"path": DISK, "size": 16777216, "mtime_ns": 1700000000 * 10**9, "storage": "shared"}]
    assert not GuestLease.objects.exists()
    audit = outcome_audit()
    assert audit.result == "ok"
    assert audit.parameters["settled"]["outcome"] == "saved"
    assert "killed by signal 9" in audit.parameters["settled"]["reason"]
    assert audit.parameters["settled"]["guest"] == "shutoff (saved)"
    settle = Job.objects.get(kind=K.SAVE_SETTLE)
    assert settle.status == JobStatusChoices.SUCCEEDED and settle.target_id == str(state.pk)


def test_killed_before_libvirt_saved_is_failed_and_the_guest_left_running(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, files = guest
    state = saving(vm)
    horse_dies(state.job_id, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert state.status == SS.FAILED
    assert "killed by signal 9" in state.error and "did not happen: the guest is running" in state.error
    assert fake.domains[str(vm.uuid)].state == "running" and ("save", str(vm.uuid)) not in fake.calls
    assert not GuestLease.objects.exists() and files.removed == []
    assert outcome_audit().result == "failed"


def test_a_partial_file_beside_a_running_guest_is_removed(guest, django_capture_on_commit_callbacks):
    _host, vm, _fake, files = guest
    state = saving(vm)
    files.files[state.path] = (40_000_000, MAGIC_PARTIAL)
    horse_dies(state.job_id, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert state.status == SS.FAILED and "incomplete file is removed" in state.error
    assert files.removed == [state.path]
    assert outcome_audit().parameters["settled"]["removed_partial"] is True


def test_a_partial_file_of_a_guest_that_is_gone_is_left_and_needs_attention(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, files = guest
    state = saving(vm)
    fake.set_state(str(vm.uuid), "shutoff", "crashed")
    files.files[state.path] = (40_000_000, MAGIC_PARTIAL)
    horse_dies(state.job_id, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert state.status == SS.FAILED and state.error.count("Needs attention") == 1
    assert "left for inspection" in state.error and files.removed == []
    assert not GuestLease.objects.exists()


def test_an_unanswering_host_is_not_guessed_at_and_the_sweep_settles_it_later(
        guest, django_capture_on_commit_callbacks, settings):
    _host, vm, fake, files = guest
    state = saving(vm)
    fake.reachable = False
    horse_dies(state.job_id, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert state.status == SS.SAVING and "kvm-a did not answer" in state.error
    assert GuestLease.objects.filter(guest_uuid=vm.uuid).exists()  # still held: nothing is known
    assert not AuditEvent.objects.filter(action="guest.save_outcome").exists()

    # Past the bound the record says it needs an admin; still no guess.
    Job.objects.filter(pk=state.job_id).update(ended=timezone.now() - timedelta(seconds=600))
    with django_capture_on_commit_callbacks(execute=True):
        assert reconciler.states_reconcile() == 1
    state.refresh_from_db()
    assert state.status == SS.SAVING and "Needs attention: kvm-a has not answered for 600 s" in state.error

    # The host answers again: libvirt had finished the save on its own.
    fake.reachable = True
    fleet_conn(fake).lookupByUUIDString(str(vm.uuid)).saveFlags(state.path, None, 0)
    files.files[state.path] = (4096, MAGIC_COMPLETE)
    with django_capture_on_commit_callbacks(execute=True):
        assert reconciler.states_reconcile() == 1
    state.refresh_from_db()
    assert (state.status, state.size, state.sha256) == (SS.SAVED, 4096, SHA)
    assert not GuestLease.objects.exists()
    assert Job.objects.filter(kind=K.SAVE_SETTLE).count() == 3


def test_the_sweep_leaves_a_save_whose_job_runs_and_never_queues_two_settles(guest, django_capture_on_commit_callbacks):
    _host, vm, _fake, _files = guest
    state = saving(vm)
    assert reconciler.states_reconcile() == 0  # its job is running (no RQ id: run in a process that waits)
    Job.objects.filter(pk=state.job_id).update(status=JobStatusChoices.FAILED, ended=timezone.now())
    # Two sweeps before a worker takes the first settle job: one job.
    assert reconciler.states_reconcile() == 1
    assert reconciler.states_reconcile() == 0
    assert Job.objects.filter(kind=K.SAVE_SETTLE, status=JobStatusChoices.QUEUED).count() == 1


def test_a_settle_job_for_a_save_that_ended_meanwhile_changes_nothing(guest):
    _host, vm, _fake, _files = guest
    state = saving(vm)
    services.save_finish(state=state, ok=False, error="libvirt said no")
    job = Job.objects.create(kind=K.SAVE_SETTLE, timeout_s=60)
    result = reconciler.settle_save(state_id=state.pk, reason="test", ctx=JobContext(job))
    state.refresh_from_db()
    assert result == {"status": SS.FAILED, "settled": False} and state.error == "libvirt said no"
    assert AuditEvent.objects.filter(action="guest.save_outcome").count() == 1


# --- restores --------------------------------------------------------------------------------


def saved_state(guest) -> SavedState:
    _host, vm, fake, files = guest
    state = services.save_request(vm=vm, directory="/var/lib/vmportal-save", actor=SYSTEM, enqueue=False)
    files.files[state.path] = (4096, MAGIC_COMPLETE)
    runner.run_save(state_id=state.pk, ctx=JobContext(state.job))
    state.refresh_from_db()
    assert state.status == SS.SAVED
    return state


def restoring(state, *, started: bool = True):
    restore = services.restore_request(state=state, actor=SYSTEM, enqueue=False)
    Job.objects.filter(pk=restore.job_id).update(status=JobStatusChoices.RUNNING, started=timezone.now())
    if started:
        type(restore).objects.filter(pk=restore.pk).update(status=RS.RUNNING)
    return restore


def test_killed_after_libvirt_restored_is_recorded_restored(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, _files = guest
    state = saved_state(guest)
    restore = restoring(state)
    fleet_conn(fake).restoreFlags(state.path, None, 0)
    horse_dies(restore.job_id, django_capture_on_commit_callbacks)
    restore.refresh_from_db()
    assert restore.status == RS.SUCCEEDED and restore.ended is not None
    assert not GuestLease.objects.exists()
    audit = outcome_audit("guest.restore_outcome")
    assert audit.result == "ok" and audit.parameters["settled"]["guest"] == "running (restored)"


@pytest.mark.parametrize("started, words", [(True, "did not happen: the guest is shutoff (saved) on kvm-a"),
                                            (False, "never started")])
def test_killed_before_libvirt_restored_is_failed_and_the_state_stays_usable(
        guest, django_capture_on_commit_callbacks, started, words):
    _host, vm, fake, _files = guest
    state = saved_state(guest)
    restore = restoring(state, started=started)
    horse_dies(restore.job_id, django_capture_on_commit_callbacks)
    restore.refresh_from_db()
    state.refresh_from_db()
    assert restore.status == RS.FAILED and words in restore.error and "killed by signal 9" in restore.error
    assert state.status == SS.SAVED  # may be restored again
    assert fake.domains[str(vm.uuid)].state == "shutoff"
    assert not GuestLease.objects.exists()



# --- A managed save or a state deletion whose job died: its job is its only record -----------

def managed_saving(vm, remove=False):
    job = services.managed_save_request(vm=vm, remove=remove, confirmed=remove, actor=SYSTEM, enqueue=False)
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING, started=timezone.now())
    return job


def test_a_managed_save_killed_after_libvirt_did_it_is_recorded_done(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, _files = guest
    job = managed_saving(vm)
    fleet_conn(fake).lookupByUUIDString(str(vm.uuid)).managedSave(0)  # libvirtd finished it without its client
    horse_dies(job.pk, django_capture_on_commit_callbacks)
    vm.refresh_from_db()
    assert (vm.state, vm.managed_save) == ("shutoff", True)
    audit = AuditEvent.objects.filter(action="guest.managed_save", job_id=job.pk).order_by("pk").last()
    assert audit.result == "ok" and "settled after its job was lost" in audit.message
    assert audit.parameters["settled"]["outcome"] == "done"
    assert not GuestLease.objects.exists()
    assert Job.objects.get(kind=K.JOB_SETTLE).status == JobStatusChoices.SUCCEEDED


def test_a_managed_save_killed_before_libvirt_acted_is_recorded_not_done(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, _files = guest
    job = managed_saving(vm)
    horse_dies(job.pk, django_capture_on_commit_callbacks)
    vm.refresh_from_db()
    assert (vm.state, vm.managed_save) == ("running", False)
    audit = AuditEvent.objects.filter(action="guest.managed_save", job_id=job.pk).order_by("pk").last()
    assert audit.result == "failed" and "did not happen" in audit.message and "worker lost its job" in audit.parameters["error"]
    assert not GuestLease.objects.exists()


def test_a_managed_save_whose_host_does_not_answer_is_recorded_not_known(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, _files = guest
    job = managed_saving(vm)
    fake.reachable = False
    horse_dies(job.pk, django_capture_on_commit_callbacks)
    audit = AuditEvent.objects.filter(action="guest.managed_save", job_id=job.pk).order_by("pk").last()
    assert audit.result == "failed" and "not known" in audit.message
    assert not GuestLease.objects.exists()


def test_a_lost_job_whose_outcome_was_recorded_is_not_settled_twice(guest, django_capture_on_commit_callbacks):
    _host, vm, fake, _files = guest
    job = managed_saving(vm)
    from guest_state import runner as state_runner
    from core.jobs import JobContext as Ctx

    state_runner.run_managed_save(vm_id=vm.pk, remove=False, ctx=Ctx(job))  # done and audited, then the horse died
    horse_dies(job.pk, django_capture_on_commit_callbacks)
    assert AuditEvent.objects.filter(action="guest.managed_save", job_id=job.pk).count() == 2


@pytest.mark.parametrize("removed, ok, status, words", [
    (True, "ok", SS.DELETED, "is gone from kvm-a"),
    (False, "failed", SS.SAVED, "is still on kvm-a"),
])
def test_a_state_deletion_killed_midway_is_settled_from_the_file(guest, django_capture_on_commit_callbacks,
                                                                  removed, ok, status, words):
    _host, vm, fake, files = guest
    state = saving(vm)
    files.files[state.path] = (150_000_000, MAGIC_COMPLETE)
    services.save_finish(state=state, ok=True, size=150_000_000, sha256=SHA)
    state.refresh_from_db()
    job = services.state_delete_request(state=state, confirmed=True, actor=SYSTEM, enqueue=False)
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING, started=timezone.now())
    if removed:
        files.files.pop(state.path)  # rm ran, then the horse died
    horse_dies(job.pk, django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert state.status == status
    audit = AuditEvent.objects.filter(action="guest.state_delete", job_id=job.pk).order_by("pk").last()
    assert audit.result == ok and words in audit.message
