"""Migrations through the portal (service → runner → libvirt) against the real lab hosts.

Jobs run in-process right after each commit (test settings), as a worker would run them.
Every test makes its own guests (unique "vmp-" names, removed afterwards wherever they
ended up, disks included) and undoes every knob; other engineers use the same lab. Their
knob-heavy tests mostly break labh2 (ports blocked, libvirtd restarted, cloned UUID) while
migrating labh1 → labh2, so these migrate the third host's guests to the first and back.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.choices import JobStatusChoices
from core.jobs import job_enqueue, run_job
from core.models import AuditEvent, Job
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.choices import HostJobKindChoices
from hosts.models import VirtualMachine
from lab.heartbeat import report
from lab_support import SYSTEM, heartbeat_guest, knob, unique, vm_row, wait_counter, where
from lab_support import onboarded  # noqa: F401 - fixture used by name
from migrations_app import reconciler, runner
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.heartbeat import NO_CHANNEL
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions, from_dict, libvirt_flags
from migrations_app.services import live, plans, slots
from migrations_app.services.events import migration_settled

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]



# --- lab helpers ------------------------------------------------------------------------


def figures(migration: Migration) -> str:
    return (f"#{migration.pk} {migration.status}: total {migration.total_time_ms} ms, downtime {migration.downtime_ms} ms, "
            f"setup {migration.setup_time_ms} ms, data {migration.data_transferred_bytes} B, "
            f"{migration.samples.count()} samples, heartbeat gap {migration.heartbeat_gap_s} s "
            f"({migration.heartbeat_beats} beats, continuous={migration.heartbeat_continuous})")


@pytest.fixture
def portal(lab, onboarded, settings):
    """Every lab host in the inventory; the guest heartbeat probe of the lab switched on."""
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "lab.heartbeat:probe"
    src, dst = lab["hosts"][2], lab["hosts"][0]
    return {"rows": onboarded, "lab": lab["hosts"], "pair": (src, dst)}


# --- tests ---------------------------------------------------------------------------------


def test_live_migration_through_the_portal_and_back(portal):
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    with heartbeat_guest(src_lab) as (name, domain_uuid):
        vm = vm_row(src, domain_uuid)
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM)
        migration.refresh_from_db()
        print("\nthere:", figures(migration))
        assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome, migration.job.log)
        assert where(portal["lab"], domain_uuid) == {dst_lab["name"]: "running"}
        # libvirt's own figures, the samples, and the guest's own view of the switch-over.
        assert migration.downtime_ms is not None and 0 < migration.downtime_ms < 1000
        assert migration.total_time_ms and migration.setup_time_ms is not None
        assert migration.data_transferred_bytes and migration.data_transferred_bytes > 0  # zero pages are not sent
        assert migration.samples.exists()
        assert migration.heartbeat_continuous is True, figures(migration)
        assert migration.heartbeat_gap_s is not None and migration.heartbeat_gap_s < 1.0, figures(migration)
        assert migration.heartbeat_beats >= 10
        # A guest without an agent channel: the guest-seen pause is not measured, and the record says why.
        assert migration.summary["guest_agent"] == {"measured": False, "why": NO_CHANNEL}
        # The destination's other running guests (as libvirt lists them), each with its CPU use and
        # steal while the guest arrived; the moved guest is not among them.
        seen = migration.summary["neighbours"]
        with lv.open_connection(dst_lab["libvirt_uri"]) as conn:
            others = {d.name() for d in conn.listAllDomains(16)} - {name}  # VIR_CONNECT_LIST_DOMAINS_RUNNING
        print("neighbours:", seen)
        assert seen["measured"] is True and {g["name"] for g in seen["guests"]} == others, (seen, others)
        assert all(g["cpu_during_pct"] is not None and g["steal_during_pct"] is not None for g in seen["guests"])
        assert seen["before_s"] is not None  # the inventory's refresh of the destination came shortly before
        # The inventory follows the guest: same row, now on the destination.
        moved = VirtualMachine.objects.get(uuid=domain_uuid)
        assert moved.pk == vm.pk and moved.host_id == dst.pk and moved.state == "running"
        assert [v["status"] for v in migration.verdicts if v["status"] == "fail"] == []
        actions = list(AuditEvent.objects.filter(target_type="migration", target_id=str(migration.pk))
                       .order_by("pk").values_list("action", flat=True))
        assert actions == ["migration.request", "migration.start", "migration.outcome"]

        back = live.migration_request(
            vm=moved, destination=src, options=from_dict(migration.options), actor=SYSTEM, reverses=migration
        )
        back.refresh_from_db()
        print("back: ", figures(back))
        assert back.status == S.SUCCEEDED, (back.error, back.outcome)
        assert where(portal["lab"], domain_uuid) == {src_lab["name"]: "running"}
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == src.pk
        assert back.heartbeat_continuous and back.heartbeat_gap_s < 1.0
        rep = report(name, since=time.time() - 2)
        assert rep.beats >= 5  # still beating after both trips


def test_the_guest_agent_probe_sees_the_pause_the_serial_heartbeat_sees(portal):
    """The Linux guest answers the guest agent's protocol: pinged at 20 Hz on both hosts while it
    moves, its longest unanswered gap lies between libvirt's downtime and its serial heartbeat's gap."""
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    name = unique("agent")
    with knob("linux-guest", src_lab, guest=name, disk="shared") as made:
        wait_counter(name, at_least=5)
        vm = vm_row(src, made["uuid"])
        for destination in (dst, src):
            migration = live.migration_request(vm=vm, destination=destination, options=MigrationOptions(),
                                               actor=SYSTEM)
            migration.refresh_from_db()
            agent = migration.summary["guest_agent"]
            print(f"\nto {destination.name}:", figures(migration), f"agent {agent}")
            assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
            assert where(portal["lab"], made["uuid"]) == {destination.name: "running"}
            assert agent["measured"], agent
            assert agent["answers"]["source"] >= 1 and agent["answers"]["destination"] >= 1, agent
            assert migration.heartbeat_gap_s is not None and migration.heartbeat_continuous, figures(migration)
            # The guest cannot answer while it is paused for the switch-over (libvirt's downtime), and the
            # agent (event-driven) sees about what the serial heartbeat sees, or less: a TCG guest runs its
            # timer-driven heartbeat loop slowly for a moment after the move (beats 150-200 ms apart instead
            # of 110). On a loaded machine the probe's threads are late too: 300 ms of slack.
            gap_s = agent["max_gap_ms"] / 1000
            assert migration.downtime_ms / 1000 <= gap_s + 0.02, (agent, migration.downtime_ms)
            assert gap_s <= migration.heartbeat_gap_s + 0.3, (agent, migration.heartbeat_gap_s)
            vm = VirtualMachine.objects.get(uuid=made["uuid"])


def test_a_fresh_preflight_is_rechecked_and_succeeded_comes_before_the_figures(portal):
    """The wizard's way: its preflight, then the confirm; the runner re-reads only what can change,
    and the record says Succeeded (heard by listeners) before the heartbeat and the refreshes."""
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    with heartbeat_guest(src_lab) as (name, domain_uuid):
        vm = vm_row(src, domain_uuid)
        plan = plans.migration_plan_create(vm=vm, options=MigrationOptions(), actor=SYSTEM, destinations=[dst])
        assert plan.runs.get().overall in ("pass", "warn"), plan.runs.get().verdicts
        seen = []

        def on_settled(sender, *, migration_id, status, **kwargs):
            m = Migration.objects.get(pk=migration_id)
            seen.append({"status": status, "follow_up": m.follow_up, "heartbeat": m.heartbeat_gap_s,
                         "refreshes": Job.objects.filter(kind=HostJobKindChoices.REFRESH, created__gte=m.ended).count(),
                         "where": where(portal["lab"], domain_uuid)})

        migration_settled.connect(on_settled, dispatch_uid="lab.fast-path")
        try:
            migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM,
                                               plan=plan)
        finally:
            migration_settled.disconnect(dispatch_uid="lab.fast-path")
        migration.refresh_from_db()
        print("\nfast path:", figures(migration), migration.summary.get("check"),
              f"request -> libvirt {migration.summary.get('request_to_libvirt_ms')} ms")
        assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome, migration.job.log)
        assert migration.summary["check"]["mode"] == "re-check", migration.summary["check"]
        # Settled while libvirt already showed the guest on the destination alone, before any figure came.
        assert seen == [{"status": "succeeded", "follow_up": "running", "heartbeat": None, "refreshes": 0,
                         "where": {dst_lab["name"]: "running"}}], seen
        # ... and the figures followed, on the same record.
        assert migration.follow_up == "done", migration.follow_up_note
        assert migration.heartbeat_continuous is True and migration.heartbeat_gap_s < 1.0, figures(migration)
        assert Job.objects.filter(kind=HostJobKindChoices.REFRESH, created__gte=migration.ended).count() == 2
        assert migration.migration_started <= migration.libvirt_called <= migration.ended
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == dst.pk

        # Back without a preflight of that pair: the runner checks both hosts in full.
        back = live.migration_request(vm=VirtualMachine.objects.get(uuid=domain_uuid), destination=src,
                                      options=MigrationOptions(), actor=SYSTEM, reverses=migration)
        back.refresh_from_db()
        assert back.status == S.SUCCEEDED and back.summary["check"]["mode"] == "full", back.summary.get("check")
        assert where(portal["lab"], domain_uuid) == {src_lab["name"]: "running"}


def test_preflight_failure_starts_nothing(portal):
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    with heartbeat_guest(src_lab) as (name, domain_uuid), knob("duplicate-name", dst_lab, guest=name):
        vm = vm_row(src, domain_uuid)
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=SYSTEM)
        migration.refresh_from_db()
        assert migration.status == S.FAILED
        assert "domain-conflict" in migration.error and f"already has a guest named '{name}'" in migration.error
        assert "virsh undefine" in migration.error_hint
        assert migration.migration_started is None and not migration.samples.exists()
        assert not AuditEvent.objects.filter(action="migration.start").exists()
        assert where(portal["lab"], domain_uuid) == {src_lab["name"]: "running"}
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == src.pk


def test_abort_of_a_migration_that_does_not_converge(portal):
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    name = unique("dirty")
    with knob("dirty-guest", src_lab, guest=name) as made, knob("throttle", src_lab, rate="200mbit"):
        vm = vm_row(src, made["uuid"])
        # Plain pre-copy (adaptive convergence off): it must not converge here.
        migration = live.migration_request(
            vm=vm, destination=dst, options=MigrationOptions(adaptive=False), actor=SYSTEM, run_by_worker=False
        )
        job = slots.migration_claim_for_caller(migration=migration)
        seen = []

        def abort_once_it_iterates(sample):
            # Called in the job's thread with each sample, like an operator watching the page.
            seen.append(sample)
            if (sample.get("iteration") or 0) >= 3 and not migration.abort_requested:
                live.migration_abort(migration=migration, actor=SYSTEM)
                migration.refresh_from_db()

        started = time.time()
        run_job(job.pk, lambda ctx: runner.run_migration(migration_id=migration.pk, ctx=ctx,
                                                         on_progress=abort_once_it_iterates))
        migration.refresh_from_db()
        print("\nabort:", figures(migration), f"after {time.time() - started:.1f} s")
        assert migration.status == S.ABORTED, (migration.error, migration.outcome)
        assert migration.abort_requested is not None
        assert f"stayed on {src_lab['name']}" in migration.outcome
        assert "abort" in migration.error.lower()
        assert where(portal["lab"], made["uuid"]) == {src_lab["name"]: "running"}
        assert VirtualMachine.objects.get(uuid=made["uuid"]).host_id == src.pk
        # The record shows why: every pass starts with most of the working set dirty again.
        assert max(s["iteration"] for s in seen) >= 3
        assert migration.samples.count() >= 4
        start_of_pass = {}
        for s in seen:
            if s["iteration"] and s["iteration"] >= 2 and s["data_remaining"] is not None:
                start_of_pass[s["iteration"]] = max(start_of_pass.get(s["iteration"], 0), s["data_remaining"])
        assert start_of_pass and min(start_of_pass.values()) > 32 * 1024 * 1024, start_of_pass
        # An aborted job never switched over: libvirt's downtime is only its estimate, not recorded as downtime.
        assert migration.downtime_ms is None and "expected_downtime_ms" in migration.summary
        assert report(name, since=time.time() - 2).beats >= 1  # the guest never stopped
        actions = list(AuditEvent.objects.filter(target_type="migration", target_id=str(migration.pk))
                       .order_by("pk").values_list("action", flat=True))
        assert actions == ["migration.request", "migration.start", "migration.abort", "migration.outcome"]


def test_a_dirty_guest_on_a_throttled_link_finishes_with_default_options(portal):
    """Adaptive convergence: auto-converge armed from the start finishes it there; post-copy, where allowed, back."""
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    name = unique("dirty")
    with knob("dirty-guest", src_lab, guest=name) as made:
        domain_uuid = made["uuid"]
        legs = []
        # Back on a slower link: there, raising the pause to the budget alone cannot finish it (a
        # busy machine slows the guest's writes, and at 400 Mbit/s it sometimes then converges).
        for options, source, destination, rate in ((MigrationOptions(), src_lab, dst, "400mbit"), (
                MigrationOptions(allow_postcopy=True), dst_lab, src, "100mbit")):
            with knob("throttle", source, rate=rate):
                vm = vm_row(src, domain_uuid) if not legs else VirtualMachine.objects.get(uuid=domain_uuid)
                started = time.time()
                migration = live.migration_request(vm=vm, destination=destination, options=options, actor=SYSTEM)
                migration.refresh_from_db()
                print(f"\n{source['name']} -> {destination.name} ({'post-copy allowed' if options.allow_postcopy else 'default'}):",
                      figures(migration), f"in {time.time() - started:.1f} s; steps {migration.summary.get('adaptive_steps')}")
                assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
                assert where(portal["lab"], domain_uuid) == {destination.name: "running"}
                assert libvirt_flags(options) & 8192  # VIR_MIGRATE_AUTO_CONVERGE, armed from the start
                legs.append(migration)
        there, back = legs
        steps = [list(AuditEvent.objects.filter(action="migration.adaptive", target_id=str(m.pk)).order_by("pk")
                      .values_list("parameters", flat=True)) for m in legs]
        # There: the guest is slowed by auto-converge (QEMU's); the policy may have raised the downtime to the budget.
        assert all(p["action"] == "raise_downtime" for p in steps[0])
        assert there.downtime_ms is not None and there.downtime_ms < 1000
        # Back, with post-copy allowed: once it did not converge, the policy switched to post-copy.
        assert [p["action"] for p in steps[1]] == ["raise_downtime", "postcopy"], steps[1]


def test_worker_death_is_reconciled_from_where_the_guest_runs(portal):
    src_lab, dst_lab = portal["pair"]
    src, dst = portal["rows"][src_lab["name"]], portal["rows"][dst_lab["name"]]
    with heartbeat_guest(src_lab) as (name, domain_uuid):
        vm = vm_row(src, domain_uuid)
        # A worker asked libvirt to migrate, then died before recording anything.
        options = MigrationOptions()
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            mg.migrate(conn, domain_uuid=domain_uuid, dest_uri=dst_lab["libvirt_uri"], flags=libvirt_flags(options),
                       params={})
        migration = live.migration_request(
            vm=vm, destination=dst, options=options, actor=SYSTEM, run_by_worker=False
        )
        job = job_enqueue(kind="migration.run", func=lambda *a: None, target=migration, timeout_s=600, actor=SYSTEM,
                          enqueue=False)
        job.rq_job_id = "vmportal-job-dead"
        job.status = JobStatusChoices.RUNNING
        job.save()
        long_ago = timezone.now() - timedelta(minutes=10)
        Migration.objects.filter(pk=migration.pk).update(
            status=S.MIGRATING, job=job, started=long_ago, migration_started=long_ago, heartbeat=long_ago,
        )
        found = reconciler.migrations_reconcile()
        assert found["reconciling"] == 1
        migration.refresh_from_db()
        print("\nreconciled:", figures(migration), migration.outcome)
        assert migration.status == S.SUCCEEDED, (migration.outcome, migration.repair)
        assert f"runs on {dst_lab['name']}" in migration.outcome
        assert "no sign of life" in migration.error
        assert migration.downtime_ms is not None  # the destination kept libvirt's figures
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == dst.pk
        assert AuditEvent.objects.filter(action="migration.reconciled", target_id=str(migration.pk)).exists()
        assert where(portal["lab"], domain_uuid) == {dst_lab["name"]: "running"}
