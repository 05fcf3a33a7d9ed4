"""The migration runner end to end over a fake libvirt world: request → dispatch → job → settled record."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from core.actors import Actor
from core.choices import JobStatusChoices
from core.models import AuditEvent, Job
from hosts.adapters.errors import DomainNotFound
from hosts.choices import HostJobKindChoices
from hosts.models import VirtualMachine
from migrations_app import policy
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration, MigrationSlot
from migrations_app.options import MigrateFlag, MigrationOptions
from migrations_app.services import live, refusals, slots
from tests.fakes.fleet import MIB, make_domain, migration_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def migrate(two_hosts, django_capture_on_commit_callbacks):
    """Request a migration of web-1 to kvm-b and run it (jobs run in-process, as a worker would)."""
    src, dst, vm = two_hosts

    def run(options: MigrationOptions = MigrationOptions(), **kwargs) -> Migration:
        with django_capture_on_commit_callbacks(execute=True):
            migration = live.migration_request(vm=vm, destination=dst, options=options, actor=Actor.system(), **kwargs)
        migration.refresh_from_db()
        return migration

    return run


def audit_actions(migration: Migration) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="migration", target_id=str(migration.pk)).order_by("pk").values_list("action", flat=True)
    )


def test_live_migration_succeeds_records_figures_and_the_inventory_follows(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    migration = migrate()
    assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
    assert world.where(str(vm.uuid)) == {"kvm-b": "running"}
    # Figures from the completed job's statistics (the destination's), samples from the run.
    assert migration.downtime_ms == 42 and migration.setup_time_ms == 7
    assert migration.total_time_ms == 1234 and migration.data_transferred_bytes == 80 * MIB
    assert migration.samples.count() >= 3
    first = migration.samples.first()
    assert first.stats["memory_total"] == 64 * MIB and first.stats["type"] == 2
    kinds = list(migration.samples.order_by("pk").values_list("stats__type", flat=True))
    assert set(kinds[:-1]) == {2} and kinds[-1] == 3  # the ticks' samples, then the completed job's figures
    assert "gone from kvm-a" in migration.outcome
    assert [v["check"] for v in migration.verdicts][0] == "reachability"
    # Flags as chosen (live, p2p, persist, undefine source), sent to the destination's URI.
    call = next(c for c in world.jobs.calls if c[0] == "migrate")
    assert call[2] == "qemu+tcp://kvm-b/system"
    assert call[3] == int(MigrateFlag.LIVE | MigrateFlag.PEER2PEER | MigrateFlag.PERSIST_DEST | MigrateFlag.UNDEFINE_SOURCE
                          | MigrateFlag.AUTO_CONVERGE)  # adaptive convergence arms it
    assert call[5] is False  # peer-to-peer: no destination connection of ours
    # The guest's row moved with it (same row), both hosts refreshed, slots freed, job succeeded.
    moved = VirtualMachine.objects.get(uuid=vm.uuid)
    assert moved.pk == vm.pk and moved.host_id == dst.pk
    refreshed = Job.objects.filter(kind=HostJobKindChoices.REFRESH, status=JobStatusChoices.SUCCEEDED)
    assert sorted(refreshed.values_list("target_id", flat=True)) == sorted([str(src.pk), str(dst.pk)])
    assert not MigrationSlot.objects.exists()
    assert migration.job.status == JobStatusChoices.SUCCEEDED and migration.job.queue_name == "migrations"
    assert audit_actions(migration) == ["migration.request", "migration.start", "migration.outcome"]
    assert migration.started and migration.migration_started and migration.ended


def test_the_completed_jobs_figures_are_the_last_sample_even_of_a_job_no_tick_saw(world, migrate):
    """A job shorter than one sampling interval (the lab's small guests on a quiet machine) is seen
    active by no tick: the chart still gets libvirt's figures of the finished job."""
    world.jobs.steps = 0
    migration = migrate()
    assert migration.status == S.SUCCEEDED
    assert list(migration.samples.values_list("stats__type", "stats__data_processed")) == [(3, 80 * MIB)]
    assert migration.summary["samples"] == 1


def test_the_destinations_other_guests_are_measured_while_the_guest_arrives(two_hosts, world, migrate):
    from datetime import timedelta

    from django.utils import timezone

    from hosts.models import LoadCounters

    src, dst, vm = two_hosts
    ns = 1_000_000_000
    other = make_domain("db-2")
    kvm_b = world["kvm-b"]
    kvm_b.domains[other.uuid] = other
    kvm_b.vcpu_times[other.uuid], kvm_b.vcpu_delays[other.uuid] = 30 * ns, 0
    # Its last refresh, 30 s ago: 3 s of CPU since (10 %), no steal.
    LoadCounters.objects.create(host=dst, at=timezone.now() - timedelta(seconds=30), cpu_busy_ns=0, cpu_total_ns=0,
                                vcpu_ns={other.uuid: 27 * ns}, vcpu_delay_ns={other.uuid: 0})
    world.jobs.steps = 20

    def arriving(step: int) -> None:  # while the guest arrives, db-2 waits for a host CPU all the time
        kvm_b.vcpu_delays[other.uuid] += int(world.jobs.step_s * ns)

    world.jobs.on_step = arriving
    migration = migrate()
    assert migration.status == S.SUCCEEDED
    seen = migration.summary["neighbours"]
    assert seen["measured"] is True and [g["name"] for g in seen["guests"]] == ["db-2"]  # not web-1 itself
    db = seen["guests"][0]
    assert db["cpu_before_pct"] == pytest.approx(10.0, abs=0.5) and db["steal_before_pct"] < 1  # the first step may count
    assert db["cpu_during_pct"] == 0.0 and db["steal_during_pct"] > 50 and db["slowed"] is True
    assert "1 of 1 other guest(s) on kvm-b were slowed" in seen["verdict"]
    assert seen["verdict"] in [line["msg"] for line in migration.job.log]


def test_a_destination_whose_guests_cannot_be_read_does_not_stop_the_migration(two_hosts, world, migrate,
                                                                              monkeypatch):
    from hosts.adapters import stats
    from hosts.adapters.errors import AdapterError

    def broken(conn):
        raise AdapterError("reading the guests' CPU counters: this libvirt cannot")

    monkeypatch.setattr(stats, "running_guests_cpu", broken)
    migration = migrate()
    assert migration.status == S.SUCCEEDED
    assert migration.summary["neighbours"] == {
        "measured": False, "why": "The destination's guests could not be read: reading the guests' CPU counters: "
                                  "this libvirt cannot"}


def test_job_timeout_is_longer_than_the_migration(migrate):
    migration = migrate(MigrationOptions(completion_timeout_s=120, timeout_action="force-complete", allow_postcopy=True))
    assert migration.job.timeout_s == 120 + policy.FORCE_COMPLETE_GRACE_S + policy.MIGRATION_JOB_MARGIN_S
    unbounded = policy.migration_job_timeout_s(MigrationOptions(), max_seconds=django_settings.VMPORTAL_MIGRATION_MAX_SECONDS)
    assert unbounded > 4 * 3600


def test_managed_mode_opens_a_destination_connection(world, migrate):
    migration = migrate(MigrationOptions(peer_to_peer=False))
    assert migration.status == S.SUCCEEDED
    call = next(c for c in world.jobs.calls if c[0] == "migrate")
    assert call[5] is True and not call[3] & MigrateFlag.PEER2PEER


def test_preflight_failure_starts_nothing(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world["kvm-b"].domains = {d.uuid: d for d in [make_domain("web-1", state="shutoff")]}  # a guest of that name
    migration = migrate()
    assert migration.status == S.FAILED
    assert "Preflight failed" in migration.error and "domain-conflict" in migration.error
    assert "virsh undefine" in migration.error_hint
    assert not any(c[0] == "migrate" for c in world.jobs.calls)
    assert world.where(str(vm.uuid)) == {"kvm-a": "running"}
    assert "Nothing was started" in migration.outcome
    assert migration.job.status == JobStatusChoices.FAILED and "Preflight failed" in migration.job.error
    assert audit_actions(migration) == ["migration.request", "migration.outcome"]
    assert not MigrationSlot.objects.exists()


def test_gather_error_fails_with_the_adapters_message(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    del world["kvm-a"].domains[str(vm.uuid)]  # gone from the source since the inventory last looked
    migration = migrate()
    assert migration.status == S.FAILED
    assert migration.error == f"Could not check the hosts: kvm-a has no guest with UUID {vm.uuid}."
    assert migration.error_hint == DomainNotFound.default_hint


def test_libvirt_error_leaves_the_guest_on_the_source_and_says_so(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world.jobs.fail_with = migration_error("internal error: unable to execute QEMU command 'migrate': Connection refused")
    migration = migrate()
    assert migration.status == S.FAILED
    assert "Connection refused" in migration.error
    assert "stayed on kvm-a" in migration.outcome
    assert VirtualMachine.objects.get(uuid=vm.uuid).host_id == src.pk
    assert migration.samples.exists()


def test_p2p_over_ssh_errors_explain_the_hosts_own_trust(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    dst.libvirt_uri = ""  # default qemu+ssh://root@address:22/system
    dst.save()
    world.jobs.fail_with = migration_error("Cannot recv data: Host key verification failed.: Connection reset by peer")
    migration = migrate()
    assert migration.status == S.FAILED
    assert "source host's own libvirtd" in migration.error_hint and "managed mode" in migration.error_hint


def test_abort_during_the_migration_keeps_the_guest_on_the_source(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world.jobs.dirty = True  # never converges on its own

    world.jobs.when(3, lambda: live.migration_abort(migration=Migration.objects.get(vm_uuid=vm.uuid), actor=Actor.system()))
    migration = migrate()
    assert migration.status == S.ABORTED
    assert ("abort_job", "kvm-a") in world.jobs.calls
    assert world.where(str(vm.uuid)) == {"kvm-a": "running"}
    assert "stayed on kvm-a" in migration.outcome
    assert "aborted" in migration.error.lower()
    assert migration.abort_requested is not None
    assert audit_actions(migration) == ["migration.request", "migration.start", "migration.abort", "migration.outcome"]
    assert migration.job.status == JobStatusChoices.FAILED  # the guest did not move


def test_completion_timeout_abort(two_hosts, world, migrate, monkeypatch):
    src, dst, vm = two_hosts
    world.jobs.dirty = True
    clock = {"offset": 0.0}
    import migrations_app.runner as runner_module

    real = runner_module.time.monotonic
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: real() + clock["offset"])
    world.jobs.when(2, lambda: clock.__setitem__("offset", 100.0))
    migration = migrate(MigrationOptions(completion_timeout_s=30))
    assert migration.status == S.ABORTED
    assert "completion timeout" in migration.error.lower()
    assert "migration.timeout" in audit_actions(migration)
    assert world.where(str(vm.uuid)) == {"kvm-a": "running"}


def test_force_complete_switches_to_postcopy_when_allowed(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world.jobs.dirty = True

    world.jobs.when(2, lambda: live.migration_force_complete(
        migration=Migration.objects.get(vm_uuid=vm.uuid), actor=Actor.system()))
    migration = migrate(MigrationOptions(allow_postcopy=True))
    assert ("start_postcopy",) in world.jobs.calls
    assert migration.status == S.SUCCEEDED
    assert "migration.force_complete" in audit_actions(migration)


def test_adaptive_convergence_finishes_a_guest_that_never_converges_without_the_admin(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world.jobs.dirty = True  # never converges on its own: only post-copy ends it here
    migration = migrate(MigrationOptions(allow_postcopy=True))  # no timeout, nobody presses anything
    assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
    assert world.where(str(vm.uuid)) == {"kvm-b": "running"}
    assert [step.split(": ")[1] for step in migration.summary["adaptive_steps"]] == ["raise_downtime", "postcopy"]
    assert ("start_postcopy",) in world.jobs.calls
    adaptive = AuditEvent.objects.filter(action="migration.adaptive", target_id=str(migration.pk)).order_by("pk")
    assert [e.parameters["action"] for e in adaptive] == ["raise_downtime", "postcopy"]
    assert "budget of 300 ms" in adaptive[0].message and "switching to post-copy" in adaptive[1].message
    log = " ".join(line["msg"] for line in migration.job.log)
    assert "Adaptive convergence: not converging after" in log
    # The chart marks both steps where they were taken, from the stored samples too.
    from migrations_app.payloads import chart_samples

    charted = chart_samples(migration.samples.values_list("elapsed_ms", "stats"))
    assert [s["step"] for s in charted if s["step"]] == ["downtime raised", "post-copy"]


def test_force_complete_raises_the_downtime_step_by_step_without_postcopy(two_hosts, world, migrate, monkeypatch):
    import migrations_app.runner as runner_module

    monkeypatch.setattr(runner_module, "FORCE_COMPLETE_STEP_S", 0.0)
    src, dst, vm = two_hosts
    world.jobs.steps = 30

    world.jobs.when(2, lambda: live.migration_force_complete(
        migration=Migration.objects.get(vm_uuid=vm.uuid), actor=Actor.system()))
    migration = migrate(MigrationOptions(max_downtime_ms=300))
    downtimes = [c[1] for c in world.jobs.calls if c[0] == "set_max_downtime"]
    assert downtimes[0] == 300  # the chosen maximum, set once the job runs
    assert len(downtimes) >= 3 and downtimes[1:] == sorted(downtimes[1:]) and downtimes[1] > 300
    assert max(downtimes) <= runner_module.FORCE_COMPLETE_MAX_DOWNTIME_MS
    assert migration.status == S.SUCCEEDED


def test_unreachable_destination_after_libvirt_returns_needs_attention(two_hosts, world, migrate, monkeypatch):
    from migrations_app import whereabouts

    monkeypatch.setattr(whereabouts, "UNREACHABLE_WAIT_S", 0.0)  # it stays silent: no point waiting here
    src, dst, vm = two_hosts

    def vanish(step):
        if step == world.jobs.steps - 1:
            world["kvm-b"].reachable = False

    world.jobs.on_step = vanish
    world.jobs.fail_with = migration_error("Unable to read from monitor: Connection reset by peer")
    migration = migrate()
    assert migration.status == S.NEEDS_ATTENTION
    assert "kvm-b did not answer" in migration.outcome
    assert "reconcile again" in migration.repair
    # Needs attention blocks the next migration until reconciled.
    world["kvm-b"].reachable = True
    with pytest.raises(refusals.ServiceRefused, match="needs attention"):
        live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())


def test_a_destination_whose_libvirtd_answers_again_is_asked_again_not_given_up_on(two_hosts, world, migrate,
                                                                                    monkeypatch):
    """Its libvirtd restarted as libvirt returned: asked again a moment later, it tells the truth."""
    from migrations_app import whereabouts

    src, dst, vm = two_hosts
    asked_again = []

    def vanish(step):
        if step == world.jobs.steps - 1:
            world["kvm-b"].libvirt_up = False

    def restarted(_seconds):  # the pause between two questions: the daemon is back meanwhile
        asked_again.append(True)
        world["kvm-b"].libvirt_up = True

    world.jobs.on_step = vanish
    world.jobs.fail_with = migration_error("Lost connection to destination host")
    monkeypatch.setattr(whereabouts.time, "sleep", restarted)
    migration = migrate()
    assert asked_again
    assert migration.status == S.FAILED, migration.outcome
    assert "stayed on kvm-a" in migration.outcome


def test_a_crash_in_the_runner_is_settled_not_left_active(two_hosts, world, migrate, monkeypatch):
    import migrations_app.runner as runner_module

    def boom(*args, **kwargs):
        raise RuntimeError("bug in the summary")

    monkeypatch.setattr(runner_module.policy, "summarize", boom)
    migration = migrate()
    # The guest did move; the record says so, with the error.
    assert migration.status == S.SUCCEEDED
    assert "bug in the summary" in migration.error
    assert migration.job.status == JobStatusChoices.FAILED


def test_guest_heartbeat_probe_is_recorded(world, migrate, settings, monkeypatch):
    calls = []

    def probe(name, since):
        calls.append((name, since))
        return {"max_gap_s": 0.21, "continuous": True, "beats": 57}

    import migrations_app.heartbeat as heartbeat_module

    heartbeat_module._load.cache_clear()
    monkeypatch.setattr(heartbeat_module, "import_string", lambda path: probe)
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "tests.fake:probe"
    migration = migrate()
    heartbeat_module._load.cache_clear()
    assert migration.heartbeat_gap_s == pytest.approx(0.21)
    assert migration.heartbeat_continuous is True and migration.heartbeat_beats == 57
    assert calls and calls[0][0] == "web-1"


def test_an_aborted_queued_migration_is_not_run(two_hosts, world, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    live.migration_abort(migration=migration, actor=Actor.system())
    migration.refresh_from_db()
    assert migration.status == S.ABORTED and "Aborted before it started" in migration.outcome
    with django_capture_on_commit_callbacks(execute=True):
        slots.migrations_dispatch()
    assert world.connections == [] and world.jobs.calls == []  # no host was even contacted


def test_offline_migration_of_a_shut_off_guest(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    world["kvm-a"].set_state(str(vm.uuid), "shutoff", "shutdown")
    migration = migrate(MigrationOptions(live=False))
    assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
    assert world.where(str(vm.uuid)) == {"kvm-b": "shutoff"}
    assert f"is defined on kvm-b" in migration.outcome
    call = next(c for c in world.jobs.calls if c[0] == "migrate")
    assert call[3] & MigrateFlag.OFFLINE and not call[3] & MigrateFlag.LIVE
    assert migration.heartbeat_gap_s is None  # nothing ran, nothing to measure


def test_offline_migration_of_a_running_guest_fails_its_preflight(two_hosts, world, migrate):
    migration = migrate(MigrationOptions(live=False))
    assert migration.status == S.FAILED and "guest-state" in migration.error
    assert not any(c[0] == "migrate" for c in world.jobs.calls)


def test_live_samples_say_when_the_migration_will_finish_or_what_is_done_about_it(two_hosts, world, migrate,
                                                                                   monkeypatch):
    from core import broadcast

    sent = []
    monkeypatch.setattr(broadcast, "migration_progress", lambda migration_id, sample: sent.append(sample))
    src, dst, vm = two_hosts
    world.jobs.dirty = True
    migration = migrate(MigrationOptions(allow_postcopy=True))
    assert migration.status == S.SUCCEEDED
    forecasts = [s["forecast"] for s in sent if s.get("forecast")]
    assert any(f.startswith("Will not converge without help: auto-converge") for f in forecasts), forecasts
    assert forecasts[-1].startswith("In post-copy"), forecasts
