"""Cold migration through the portal against the real lab hosts.

A Linux guest whose heartbeat counter lives on its own local qcow2 disk is shut off, moved
onto an NFS share the wizard set up (Ganesha on labh3, mounted on labh1 and labh2) and onto
labh2, where it boots and counts on from what its disk says; then it live-migrates back over
the share. A second test stops the destination's libvirtd in the middle of the copy: the
guest must stay defined on its source with its original disk, and no copy may be left.

Guests get unique "vmp-cold-" names and are removed afterwards wherever they are.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid

import pytest

from core.choices import JobStatusChoices
from core.models import AuditEvent
from hosts.adapters import libvirt as lv
from hosts.models import VirtualMachine
from lab import hosts as lab_hosts
from lab.heartbeat import report
from lab_support import SYSTEM, disk_of, refresh, run_knob, unique, vm_row, where
from lab_support import lab_share, onboarded, ready_share, sh  # noqa: F401 - fixtures used by name
from migrations_app.choices import ColdMigrationStatusChoices as C
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.cold_runner import reconcile_cold_migration, run_cold_migration
from migrations_app.models import ColdMigration
from migrations_app.options import MigrationOptions
from migrations_app.services import cold as cold_services, live

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]



@contextlib.contextmanager
def linux_guest_shut_off(host: dict, *, min_counter: int = 12):
    """A Linux guest on ``host`` with a local qcow2 disk, run until its counter is on disk, then off."""
    name = unique("cold")
    try:
        made = run_knob("linux-guest", host["name"], guest=name, disk="local")
        deadline = time.time() + 60
        while time.time() < deadline and (report(name).last_counter or 0) < min_counter:
            time.sleep(0.5)
        last = report(name).last_counter
        assert last and last >= min_counter, report(name)
        with lv.open_connection(host["libvirt_uri"]) as conn:
            lv.destroy_domain(conn, made["uuid"])
        yield name, made["uuid"], last
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)


def sha256_on(host: dict, path: str) -> str:
    return sh(host, ["sha256sum", path], check=True).stdout.split()[0]


def boots_counting_on(name: str, since: float, last: int) -> int:
    """Wait for the guest's first beats after ``since``; the counter must go on from its disk."""
    deadline = time.time() + 60
    while time.time() < deadline and report(name, since=since).beats < 3:
        time.sleep(0.3)
    rep = report(name, since=since)
    assert rep.beats >= 3, rep
    # Written to disk every 10 beats: after a power-off it resumes within 10 of where it was.
    assert last - 10 <= rep.first_counter <= last + 1, (rep.first_counter, last)
    return rep.first_counter


def test_cold_migration_onto_the_share_and_another_host_then_live_back(lab, lab_share, settings, record_property):
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "lab.heartbeat:probe"
    src_lab, dst_lab = lab_share["clients"][0], lab_share["clients"][1]
    share = ready_share(lab_share)
    rows = lab_share["hosts"]
    src, dst = rows[src_lab["name"]], rows[dst_lab["name"]]

    with linux_guest_shut_off(src_lab) as (name, domain_uuid, last):
        original_disk = disk_of(src_lab, domain_uuid)
        original_sum = sha256_on(src_lab, original_disk)
        vm = vm_row(src, domain_uuid)
        assert vm.state == "shutoff"
        t0 = time.time()
        cold = cold_services.cold_migration_request(vm=vm, destination=dst, share=share, start=True, actor=SYSTEM)
        cold.refresh_from_db()
        print(f"\ncold: #{cold.pk} {cold.status} {cold.bytes_total} B copied in {cold.copy_seconds} s, "
              f"total {cold.total_seconds} s; {cold.outcome}")
        record_property("cold_total_s", cold.total_seconds)
        assert cold.status == C.SUCCEEDED, (cold.error, cold.error_hint, cold.outcome, cold.job.log)
        assert where(lab["hosts"], domain_uuid) == {dst_lab["name"]: "running"}
        moved_disk = disk_of(dst_lab, domain_uuid)
        assert moved_disk.startswith(lab_share["mount"] + "/"), moved_disk
        # The copy was verified against the original before anything else changed.
        assert cold.files[0]["verified"] is True and cold.files[0]["sha256"] == original_sum
        assert sh(src_lab, ["test", "-e", original_disk]).returncode != 0  # original removed after success
        # The guest boots from the copy: its counter goes on from the disk.
        first = boots_counting_on(name, t0, last)
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == dst.pk
        actions = list(AuditEvent.objects.filter(target_type="coldmigration", target_id=str(cold.pk))
                       .order_by("pk").values_list("action", flat=True))
        assert actions == ["migration.cold.request", "migration.cold.outcome"], actions

        # Now on shared storage: it can live-migrate back to where it came from.
        back = live.migration_request(vm=VirtualMachine.objects.get(uuid=domain_uuid), destination=src,
                                          options=MigrationOptions(), actor=SYSTEM)
        back.refresh_from_db()
        print(f"live back: #{back.pk} {back.status} downtime {back.downtime_ms} ms, gap {back.heartbeat_gap_s} s")
        assert back.status == S.SUCCEEDED, (back.error, back.outcome)
        assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "running"}
        assert back.heartbeat_continuous is True
        after = report(name, since=time.time() - 2)
        assert after.beats >= 1 and after.last_counter > first


def test_moving_a_guests_disk_onto_the_share_on_its_own_host(lab, lab_share):
    host_lab = lab_share["clients"][0]
    host = lab_share["hosts"][host_lab["name"]]
    share = ready_share(lab_share)
    with linux_guest_shut_off(host_lab) as (name, domain_uuid, last):
        original_disk = disk_of(host_lab, domain_uuid)
        vm = vm_row(host, domain_uuid)
        t0 = time.time()
        cold = cold_services.cold_migration_request(vm=vm, destination=host, share=share, start=True, actor=SYSTEM)
        cold.refresh_from_db()
        print(f"\nsame host: #{cold.pk} {cold.status} {cold.bytes_total} B in {cold.copy_seconds} s; {cold.outcome}")
        assert cold.status == C.SUCCEEDED, (cold.error, cold.error_hint, cold.outcome, cold.job.log)
        assert where(lab["hosts"], domain_uuid) == {host_lab["name"]: "running"}
        assert disk_of(host_lab, domain_uuid).startswith(lab_share["mount"] + "/")
        assert sh(host_lab, ["test", "-e", original_disk]).returncode != 0
        boots_counting_on(name, t0, last)
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == host.pk


def test_destination_libvirtd_stopped_mid_copy_leaves_the_guest_on_its_source(lab, onboarded):
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][2]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    with linux_guest_shut_off(src_lab) as (name, domain_uuid, _last):
        original_disk = disk_of(src_lab, domain_uuid)
        original_sum = sha256_on(src_lab, original_disk)
        vm = vm_row(src, domain_uuid)
        cold = cold_services.cold_migration_request(vm=vm, destination=dst, start=True, actor=SYSTEM,
                                               run_by_worker=False)
        stopped = []

        def on_step(record, step):
            if step == "copy-file" and not stopped:
                run_knob("libvirtd-stop", dst_lab["name"])
                stopped.append(step)

        try:
            from core.jobs import run_job

            run_job(cold.job_id, lambda ctx: run_cold_migration(cold_id=cold.pk, ctx=ctx, on_step=on_step))
        finally:
            run_knob("libvirtd-stop", dst_lab["name"], undo=True)
        cold = ColdMigration.objects.get(pk=cold.pk)
        print(f"\nfailed as expected: {cold.status}: {cold.error} | {cold.outcome} | {cold.rollback}")
        assert stopped
        assert cold.status == C.FAILED, (cold.status, cold.error, cold.outcome, cold.rollback)
        assert cold.job.status == JobStatusChoices.FAILED and "original disks, unchanged" in cold.job.error
        assert dst_lab["name"] in cold.error or "libvirt" in cold.error.lower(), cold.error
        # Exactly where it was: defined (shut off) on the source only, with its original disk, unchanged.
        assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "shutoff"}
        assert disk_of(src_lab, domain_uuid) == original_disk
        assert sha256_on(src_lab, original_disk) == original_sum
        # The copy made on the destination was removed by the undo.
        copy = cold.files[0]["write_path"]
        assert sh(dst_lab, ["test", "-e", copy]).returncode != 0, copy
        assert any(step["ok"] and "remove the copy" in step["step"] for step in cold.rollback), cold.rollback
        assert "original disks, unchanged" in cold.outcome
        # It can still start where it is.
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            lv.start_domain(conn, domain_uuid)
        assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "running"}


class WorkerKilled(BaseException):
    """Stands for the worker process dying: not an Exception, so the runner's own undo does not run."""


@pytest.mark.parametrize("killed_after,expected,where_after", [
    ("defined", C.FAILED, "source"),  # defined at the destination, still on the source: undone
    ("undefined", C.SUCCEEDED, "destination"),  # only at the destination: the move stands
])
def test_a_dead_worker_is_settled_from_where_the_guest_is_defined(lab, onboarded, killed_after, expected, where_after):
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    with linux_guest_shut_off(src_lab, min_counter=1) as (name, domain_uuid, _last):
        original_disk = disk_of(src_lab, domain_uuid)
        vm = vm_row(src, domain_uuid)
        record = cold_services.cold_migration_request(vm=vm, destination=dst, actor=SYSTEM, run_by_worker=False)

        def on_step(cold_record, step):
            if step == killed_after:
                raise WorkerKilled(step)

        from core.jobs import run_job

        with pytest.raises(WorkerKilled):
            run_job(record.job_id, lambda ctx: run_cold_migration(cold_id=record.pk, ctx=ctx, on_step=on_step))
        record.refresh_from_db()
        assert record.is_active  # nobody recorded an end: the worker "died"
        reconcile_cold_migration(cold_id=record.pk, reason="test: worker killed", ctx=None)
        record.refresh_from_db()
        print(f"\nafter {killed_after}: {record.status}: {record.outcome} {record.rollback}")
        assert record.status == expected, (record.status, record.outcome, record.rollback)
        copy = record.files[0]["write_path"]
        if where_after == "source":
            assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "shutoff"}
            assert disk_of(src_lab, domain_uuid) == original_disk
            assert sh(dst_lab, ["test", "-e", copy]).returncode != 0  # the copy was removed
        else:
            assert where(lab["hosts"], domain_uuid) == {dst_lab["name"]: "shutoff"}
            assert disk_of(dst_lab, domain_uuid) == copy
            assert sh(src_lab, ["test", "-e", original_disk]).returncode == 0  # originals kept, said so
            assert "kept" in record.outcome
        assert AuditEvent.objects.filter(action="migration.cold.reconciled", target_id=str(record.pk)).exists()


HOSTILE_NAME = "vmp-cold $(touch pwned);'q'\"`id`"


def test_a_hostile_guest_name_and_disk_path_stay_literal_through_a_cold_migration(lab, onboarded, tmp_path,
                                                                                   monkeypatch):
    """The name comes from libvirt, the disk path from its XML: both reach the hosts as literal arguments."""
    from django.core.management import call_command

    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    name = f"{HOSTILE_NAME}-{uuid.uuid4().hex[:4]}"
    monkeypatch.chdir(tmp_path)
    try:
        made = run_knob("linux-guest", src_lab["name"], guest=name, disk="local")
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            lv.destroy_domain(conn, made["uuid"])
        original_disk = disk_of(src_lab, made["uuid"])
        assert "$(touch pwned)" in original_disk
        refresh(src)
        call_command("vm_cold_migrate", made["uuid"], "--to", dst.name, "--start", "--wait")
        record = ColdMigration.objects.get(vm_uuid=made["uuid"])
        assert record.status == C.SUCCEEDED, (record.error, record.outcome)
        assert where(lab["hosts"], made["uuid"]) == {dst_lab["name"]: "running"}
        assert disk_of(dst_lab, made["uuid"]) == original_disk  # same path, literally, on the other host
        for host in (src_lab, dst_lab):  # a shell that ran the name would have made "pwned" in its cwd
            for directory in ("/", "/root", "/var/lib/libvirt/images", "/var/lib/libvirt"):
                assert sh(host, ["test", "-e", f"{directory.rstrip('/')}/pwned"]).returncode != 0
        assert not any(tmp_path.iterdir())
    finally:
        lab_hosts.remove_guest(name, delete_disks=True)


# --------------------------------------------------------------------------- host to host with a one-time key


def key_lines(host: dict, keys_file: str, tag: str) -> list[str]:
    found = sh(host, ["grep", "-F", "--", tag, keys_file])
    return found.stdout.splitlines()


def ssh_with_the_key(src_lab: dict, dst_lab: dict, grant: dict, request: str) -> subprocess.CompletedProcess:
    """What anyone on the source holding the one-time key could do with it."""
    d = grant["source_dir"]
    return sh(src_lab, ["ssh", "-F", "/dev/null", "-i", f"{d}/key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                        "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "HostKeyAlias=vmportal-destination",
                        "-o", "StrictHostKeyChecking=yes", "root@" + dst_lab["address"], request])


def audit_actions(record: ColdMigration) -> list[tuple[str, str]]:
    return [(e.action, e.result) for e in AuditEvent.objects.filter(target_id=str(record.pk)).order_by("pk")
            if e.action.startswith("image.copy_key")]


def test_a_cold_move_streams_host_to_host_with_a_key_that_can_only_write_its_copies(lab, onboarded):
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    with linux_guest_shut_off(src_lab, min_counter=1) as (name, domain_uuid, _last):
        original_sum = sha256_on(src_lab, disk_of(src_lab, domain_uuid))
        record = cold_services.cold_migration_request(vm=vm_row(src, domain_uuid), destination=dst, actor=SYSTEM,
                                                      run_by_worker=False)
        seen = {}

        def on_step(cold_record, step):
            if step == "copy-file" and not seen:
                grant = ColdMigration.objects.get(pk=cold_record.pk).copy_grant
                seen["grant"] = grant
                seen["lines"] = key_lines(dst_lab, grant["keys_file"], grant["tag"])
                # The key opens nothing but "write N": no shell, no other file, nothing from elsewhere.
                seen["shell"] = ssh_with_the_key(src_lab, dst_lab, grant, "cat /etc/shadow")
                seen["other"] = ssh_with_the_key(src_lab, dst_lab, grant, "write 1")

        from core.jobs import run_job

        run_job(record.job_id, lambda ctx: run_cold_migration(cold_id=record.pk, ctx=ctx, on_step=on_step))
        record.refresh_from_db()
        assert record.status == C.SUCCEEDED, (record.error, record.outcome)
        grant = seen["grant"]
        line, = seen["lines"]
        assert line.startswith(f'restrict,from="{src_lab["address"]}",expiry-time="{grant["expires"]}",command="sh ')
        for attempt in (seen["shell"], seen["other"]):
            assert attempt.returncode == 126 and "only writes the copies of one migration" in attempt.stderr, attempt
            assert "root:" not in attempt.stdout
        # Every copied file went host to host, verified, and the key is gone from both hosts.
        copied = [f for f in record.files if f.get("copied_bytes")]
        assert copied and all(f["via"] == "direct" and f["verified"] for f in copied), record.files
        assert record.summary["copied_via"] == ["direct"]
        assert sha256_on(dst_lab, copied[0]["write_path"]) == original_sum
        assert key_lines(dst_lab, grant["keys_file"], grant["tag"]) == []
        assert sh(dst_lab, ["test", "-e", grant["work_dir"]]).returncode != 0
        assert sh(src_lab, ["test", "-e", grant["source_dir"]]).returncode != 0
        assert record.copy_grant == {}
        assert audit_actions(record) == [("image.copy_key.authorized", "ok"), ("image.copy_key.removed", "ok")]
        assert where(lab["hosts"], domain_uuid) == {dst_lab["name"]: "shutoff"}


@pytest.mark.parametrize("how", ["setting off", "key refused"])
def test_a_cold_move_relays_through_the_portal_when_it_cannot_go_host_to_host(lab, onboarded, settings, monkeypatch,
                                                                              how):
    from hosts.adapters import direct_copy

    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    if how == "setting off":
        settings.VMPORTAL_COLD_COPY_DIRECT = False
    else:  # the source's ssh fails before the destination runs anything (as a refused key does)
        monkeypatch.setattr(direct_copy, "CIPHERS", "no-such-cipher")
    with linux_guest_shut_off(src_lab, min_counter=1) as (name, domain_uuid, _last):
        record = cold_services.cold_migration_request(vm=vm_row(src, domain_uuid), destination=dst, actor=SYSTEM,
                                                      run_by_worker=False)
        from core.jobs import run_job

        run_job(record.job_id, lambda ctx: run_cold_migration(cold_id=record.pk, ctx=ctx))
        record.refresh_from_db()
        assert record.status == C.SUCCEEDED, (record.error, record.outcome)
        copied = [f for f in record.files if f.get("copied_bytes")]
        assert copied and all(f["via"] == "relay" and f["verified"] for f in copied), record.files
        assert record.copy_grant == {}
        if how == "setting off":
            assert audit_actions(record) == []
        else:
            assert audit_actions(record) == [("image.copy_key.authorized", "ok"), ("image.copy_key.removed", "ok")]
            tag = AuditEvent.objects.get(action="image.copy_key.authorized", target_id=str(record.pk)).parameters
            assert key_lines(dst_lab, tag["keys_file"], tag["tag"]) == []
            log = "\n".join(entry["msg"] for entry in record.job.log)
            assert "Relaying through the portal instead" in log, log
        assert where(lab["hosts"], domain_uuid) == {dst_lab["name"]: "shutoff"}


def test_the_reconciler_removes_a_one_time_key_a_dead_worker_left(lab, onboarded, monkeypatch):
    from migrations_app import cold_runner

    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    # The worker dies during the copy: nothing of its own clean-up runs.
    monkeypatch.setattr(cold_runner._Run, "_close_direct", lambda self: None)
    with linux_guest_shut_off(src_lab, min_counter=1) as (name, domain_uuid, _last):
        record = cold_services.cold_migration_request(vm=vm_row(src, domain_uuid), destination=dst, actor=SYSTEM,
                                                      run_by_worker=False)

        def on_step(cold_record, step):
            if step == "copied":
                raise WorkerKilled(step)

        from core.jobs import run_job

        with pytest.raises(WorkerKilled):
            run_job(record.job_id, lambda ctx: run_cold_migration(cold_id=record.pk, ctx=ctx, on_step=on_step))
        record.refresh_from_db()
        grant = record.copy_grant
        assert grant and len(key_lines(dst_lab, grant["keys_file"], grant["tag"])) == 1
        assert sh(src_lab, ["test", "-e", f"{grant['source_dir']}/key"]).returncode == 0
        reconcile_cold_migration(cold_id=record.pk, reason="test: worker killed", ctx=None)
        record.refresh_from_db()
        assert record.status == C.FAILED, (record.status, record.outcome, record.rollback)
        assert record.copy_grant == {}
        assert key_lines(dst_lab, grant["keys_file"], grant["tag"]) == []
        assert sh(src_lab, ["test", "-e", grant["source_dir"]]).returncode != 0
        assert sh(dst_lab, ["test", "-e", grant["work_dir"]]).returncode != 0
        copy = record.files[0]["write_path"]
        assert sh(dst_lab, ["test", "-e", copy]).returncode != 0  # the streamed copy was removed too
        removed = AuditEvent.objects.get(action="image.copy_key.removed", target_id=str(record.pk))
        assert removed.result == "ok" and removed.parameters["by_reconciler"] is True
        assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "shutoff"}


def test_the_reconciler_finds_a_key_whose_worker_died_before_recording_it_as_placed(lab, onboarded, monkeypatch):
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]

    def killed(**kwargs):  # the key's line is written; the worker dies before it says so
        raise WorkerKilled("authorized")

    monkeypatch.setattr(cold_services, "cold_copy_key_authorized", killed)
    with linux_guest_shut_off(src_lab, min_counter=1) as (name, domain_uuid, _last):
        record = cold_services.cold_migration_request(vm=vm_row(src, domain_uuid), destination=dst, actor=SYSTEM,
                                                      run_by_worker=False)
        from core.jobs import run_job

        with pytest.raises(WorkerKilled):
            run_job(record.job_id, lambda ctx: run_cold_migration(cold_id=record.pk, ctx=ctx))
        record.refresh_from_db()
        grant = record.copy_grant
        assert grant["work_dir"] == "" and grant["source_dir"]  # recorded before the line, not after
        lines = key_lines(dst_lab, grant["keys_file"], grant["tag"])
        assert len(lines) == 1
        work_dir = lines[0].split('command="sh ', 1)[1].split("/run", 1)[0]
        assert sh(dst_lab, ["test", "-d", work_dir]).returncode == 0
        reconcile_cold_migration(cold_id=record.pk, reason="test: worker killed", ctx=None)
        record.refresh_from_db()
        assert record.status == C.FAILED, (record.status, record.outcome, record.rollback)
        assert record.copy_grant == {}
        assert key_lines(dst_lab, grant["keys_file"], grant["tag"]) == []
        assert sh(dst_lab, ["test", "-e", work_dir]).returncode != 0  # found from the key's own line
        assert sh(src_lab, ["test", "-e", grant["source_dir"]]).returncode != 0
        removed = AuditEvent.objects.get(action="image.copy_key.removed", target_id=str(record.pk))
        assert removed.result == "ok" and removed.parameters["by_reconciler"] is True
        assert where(lab["hosts"], domain_uuid) == {src_lab["name"]: "shutoff"}
