"""A save or restore whose work horse is killed (kill -9) is settled within 10 s from what the
lab's libvirt shows, by a real RQ worker (the portal's worker class with the fault matrix's hold
points, tests/integration/fault_worker.py) against a database file and a Redis of this module's
own: the record is terminal and true, the guest runs on exactly one host or is saved with the
file's real checksum, and the guest's lease is released.

Rows: killed before libvirt was asked to save (the guest runs on, the save failed); killed while
libvirt writes the file (libvirtd finishes without its client: whichever way it went, the record
says it); killed after libvirt saved, before the record was written (saved, with the SHA-256 the
host computes); killed after libvirt restored the guest (restored, heartbeats again); a managed
save and a state file's deletion killed after the host did them (recorded done, from the host).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from core.models import AuditEvent
from guest_state import services
from guest_state.choices import RESTORE_ACTIVE, SAVED_STATE_ACTIVE
from guest_state.choices import RestoreStatusChoices as RS
from guest_state.choices import SavedStateStatusChoices as SS
from guest_state.models import SavedState, StateRestore
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.models import GuestLease
from lab.heartbeat import report
from lab_support import SYSTEM, heartbeat_guest, sh, vm_row, wait_counter, where
from tests.integration.test_fault_matrix_lab import running_portal
from tests.waiting import wait_until

SETTLE_S = 10  # issue #18: a dead job is settled within 10 s
SAVE_DIR = "/var/lib/libvirt/vmportal-save-lost"

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def portal(lab, django_db_blocker, tmp_path_factory):
    """The test process and the worker share one SQLite file, made by the module itself."""
    try:
        with running_portal(lab, django_db_blocker, tmp_path_factory.mktemp("state-lost")) as p:
            yield p
    finally:
        for entry in lab["hosts"][:1]:
            sh(entry, ["rm", "-rf", SAVE_DIR])


def settled(portal, record, what: str, t0: float) -> float:
    """Seconds from the kill until ``record`` is terminal (the worker log is shown if it never is)."""
    active = SAVED_STATE_ACTIVE if isinstance(record, SavedState) else RESTORE_ACTIVE
    try:
        wait_until(lambda: type(record).objects.filter(pk=record.pk).exclude(status__in=active).exists(),
                   timeout=60, interval=0.1, what=f"{what}: {record} settled")
    except TimeoutError as exc:
        record.refresh_from_db()
        raise AssertionError(f"{exc} ({record.status}: {record.error})\n--- worker log ---\n"
                             f"{portal.worker_log_tail()}") from exc
    took = time.monotonic() - t0
    record.refresh_from_db()
    print(f"\n{what} | {took:.1f} s | {record.status}: {record.error or 'no error'}")
    return took


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def file_sha256(host: dict, path: str) -> str | None:
    found = sh(host, ["sha256sum", "--", path])
    return found.stdout.split()[0] if found.returncode == 0 else None


def request_save(portal, lab_host, domain_uuid: str, note: str) -> SavedState:
    vm = vm_row(portal.hosts[lab_host["name"]], domain_uuid)
    return services.save_request(vm=vm, directory=SAVE_DIR, note=note, actor=SYSTEM)


def assert_released(domain_uuid: str) -> None:
    assert not GuestLease.objects.filter(guest_uuid=domain_uuid).exists(), "the guest's lease is still held"


def test_killed_before_libvirt_saved_fails_and_the_guest_runs_on(portal, lab):
    lab_host = lab["hosts"][0]
    with heartbeat_guest(lab_host, prefix="sl") as (name, domain_uuid), portal.held_at("save-start") as horse_at:
        state = request_save(portal, lab_host, domain_uuid, "killed before the save")
        t0 = kill(horse_at())
        took = settled(portal, state, "kill -9 / before libvirt saved", t0)
        assert state.status == SS.FAILED and "did not happen" in state.error, state.error
        assert "killed by signal 9" in state.error
        assert where(lab["hosts"], domain_uuid) == {lab_host["name"]: "running"}
        assert file_sha256(lab_host, state.path) is None
        assert_released(domain_uuid)
        assert took < SETTLE_S


def test_killed_while_libvirt_saves_is_settled_as_it_went(portal, lab):
    """The horse is let go into libvirt's save and killed once libvirt shows the guest being saved."""
    lab_host = lab["hosts"][0]
    with heartbeat_guest(lab_host, prefix="sl") as (name, domain_uuid):
        with portal.held_at("save-start") as horse_at:
            state = request_save(portal, lab_host, domain_uuid, "killed while saving")
            pid = horse_at()
        # The gate is gone: the horse calls libvirt. Kill it as soon as libvirt is saving the guest.
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            def saving():
                found = mg.domain_presence(conn, domain_uuid)
                return found.job_active or found.reason == "saving" or found.state != "running"
            wait_until(saving, timeout=10, interval=0.005, what="libvirt saving the guest")
            seen = mg.domain_presence(conn, domain_uuid)
        t0 = kill(pid)
        took = settled(portal, state, f"kill -9 / while saving (libvirt showed {seen.state}/{seen.reason})", t0)
        found = where(lab["hosts"], domain_uuid)
        if state.status == SS.SAVED:
            assert found in ({}, {lab_host["name"]: "shutoff"}), found
            assert file_sha256(lab_host, state.path) == state.sha256 and state.size > 0
        else:
            assert state.status == SS.FAILED and found == {lab_host["name"]: "running"}, (state.error, found)
        assert_released(domain_uuid)
        assert took < SETTLE_S


def test_killed_after_libvirt_saved_is_saved_and_a_restore_killed_after_libvirt_is_restored(portal, lab):
    lab_host = lab["hosts"][0]
    with heartbeat_guest(lab_host, prefix="sl") as (name, domain_uuid):
        with portal.held_at("save-written") as horse_at:
            state = request_save(portal, lab_host, domain_uuid, "killed after the save")
            pid = horse_at()
            at_save = report(name).last_counter
            t0 = kill(pid)
        took = settled(portal, state, "kill -9 / after libvirt saved", t0)
        assert state.status == SS.SAVED, state.error
        assert file_sha256(lab_host, state.path) == state.sha256
        assert state.size == int(sh(lab_host, ["stat", "-c", "%s", "--", state.path]).stdout)
        assert where(lab["hosts"], domain_uuid) in ({}, {lab_host["name"]: "shutoff"})
        assert sh(lab_host, ["head", "-c", "16", "--", state.path]).stdout == "LibvirtQemudSave"
        assert_released(domain_uuid)
        assert took < SETTLE_S

        with portal.held_at("restore-written") as horse_at:
            since = time.time()
            restore = services.restore_request(state=state, actor=SYSTEM)
            t0 = kill(horse_at())
        took = settled(portal, restore, "kill -9 / after libvirt restored", t0)
        assert restore.status == RS.SUCCEEDED, restore.error
        assert where(lab["hosts"], domain_uuid) == {lab_host["name"]: "running"}
        wait_counter(name, at_least=at_save + 2, since=since, timeout=20)
        assert report(name, since=since).first_counter in (at_save + 1, at_save + 2)  # from the saved memory
        assert StateRestore.objects.get(pk=restore.pk).state.status == SS.SAVED
        assert_released(domain_uuid)
        assert took < SETTLE_S


def outcome_audited(portal, job_id: int, action: str, what: str, t0: float) -> tuple[AuditEvent, float]:
    """The settle job's audit row for the lost job ``job_id`` (the request wrote the first)."""
    try:
        wait_until(lambda: AuditEvent.objects.filter(job_id=job_id, action=action).count() > 1,
                   timeout=60, interval=0.1, what=f"{what}: outcome audited")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{portal.worker_log_tail()}") from exc
    took = time.monotonic() - t0
    audit = AuditEvent.objects.filter(job_id=job_id, action=action).order_by("pk").last()
    print(f"\n{what} | {took:.1f} s | {audit.result}: {audit.message}")
    return audit, took


def test_a_managed_save_and_a_state_deletion_killed_after_the_host_did_them_are_recorded_done(portal, lab):
    lab_host = lab["hosts"][0]
    with heartbeat_guest(lab_host, prefix="sl") as (name, domain_uuid):
        vm = vm_row(portal.hosts[lab_host["name"]], domain_uuid)
        with portal.held_at("managed-saved") as horse_at:
            job = services.managed_save_request(vm=vm, actor=SYSTEM)
            t0 = kill(horse_at())
        audit, took = outcome_audited(portal, job.pk, "guest.managed_save", "kill -9 / after libvirt's managed save", t0)
        assert audit.result == "ok" and "The managed save happened" in audit.message, audit.message
        assert audit.parameters["settled"]["managed_save"] is True
        vm.refresh_from_db()
        assert (vm.state, vm.managed_save) == ("shutoff", True)
        with lv.open_connection(lab_host["libvirt_uri"]) as conn:
            assert lv.saved_state(conn, domain_uuid).managed_save
            lv.start_domain(conn, domain_uuid)  # resumes from the managed save
        assert where(lab["hosts"], domain_uuid) == {lab_host["name"]: "running"}
        assert_released(domain_uuid)
        assert took < SETTLE_S

        state = request_save(portal, lab_host, domain_uuid, "to be deleted")
        wait_until(lambda: SavedState.objects.filter(pk=state.pk, status=SS.SAVED).exists(), timeout=60,
                   interval=0.1, what="the save")
        state.refresh_from_db()
        with portal.held_at("state-deleted") as horse_at:
            job = services.state_delete_request(state=state, confirmed=True, actor=SYSTEM)
            t0 = kill(horse_at())
        audit, took = outcome_audited(portal, job.pk, "guest.state_delete", "kill -9 / after the file was removed", t0)
        state.refresh_from_db()
        assert (audit.result, state.status) == ("ok", SS.DELETED), audit.message
        assert file_sha256(lab_host, state.path) is None
        assert took < SETTLE_S
