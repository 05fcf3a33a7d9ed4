"""The runner's fast path and its early Succeeded: fresh facts are re-checked where they can change,
and the record says Succeeded before the heartbeat figures and the inventory refresh follow."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest

from core.actors import Actor
from core.models import Job
from hosts.adapters.errors import HostAuthError
from hosts.adapters.migration import GuestNow, HostNow
from hosts.choices import HostJobKindChoices
from migrations_app import recheck
from migrations_app.choices import FollowUpStatusChoices as F, MigrationStatusChoices as S
from migrations_app.gather import gather_pair
from migrations_app.models import Migration, PreflightFacts
from migrations_app.options import MigrationOptions
from migrations_app.services import live
from migrations_app.services.events import migration_settled
from tests.fakes.fleet import make_domain

NOW = datetime(2026, 12, 1, 18, 0, 0, tzinfo=dt_timezone.utc)


# --- the freshness decision (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("gathered", "both_answered", "fresh", "said"),
    [
        (None, True, False, "no full check"),
        (NOW, True, True, "0 s old"),
        (NOW - timedelta(seconds=12), True, True, "12 s old"),
        (NOW - timedelta(seconds=60), True, True, "60 s old"),
        (NOW - timedelta(seconds=61), True, False, "61 s old (more than 60 s)"),
        (NOW - timedelta(hours=3), True, False, "more than 60 s"),
        (NOW + timedelta(seconds=2), True, True, "0 s old"),  # clocks a little apart
        (NOW + timedelta(seconds=30), True, False, "in the future"),
        (NOW - timedelta(seconds=5), False, False, "did not answer"),
    ],
)
def test_facts_freshness(gathered, both_answered, fresh, said):
    decision = recheck.facts_freshness(gathered=gathered, now=NOW, both_answered=both_answered)
    assert decision.fresh is fresh
    assert said in decision.reason


@pytest.mark.parametrize(
    ("age_s", "until_in_s", "fresh", "said"),
    [
        (30, None, True, "30 s old"),  # young facts need no run
        (30, -100, True, "30 s old"),
        (300, 600, True, "full check of this run is 300 s old"),  # kept for the run
        (300, 0, True, "kept for the run until"),  # the last second of it
        (300, -1, False, "300 s old (more than 60 s)"),  # the run's window is over
        (300, None, False, "more than 60 s"),
    ],
)
def test_facts_kept_for_a_run(age_s, until_in_s, fresh, said):
    until = None if until_in_s is None else NOW + timedelta(seconds=until_in_s)
    decision = recheck.facts_freshness(gathered=NOW - timedelta(seconds=age_s), now=NOW, fresh_until=until)
    assert decision.fresh is fresh
    assert said in decision.reason


def test_a_run_does_not_make_facts_fresh_that_a_host_did_not_answer_or_that_are_from_the_future():
    until = NOW + timedelta(hours=1)
    assert not recheck.facts_freshness(gathered=NOW - timedelta(seconds=300), now=NOW, fresh_until=until,
                                       both_answered=False).fresh
    assert not recheck.facts_freshness(gathered=NOW + timedelta(seconds=60), now=NOW, fresh_until=until).fresh


@pytest.mark.parametrize(
    ("estimated_s", "fresh_for_s"),
    [(None, 1800), (0, 1800), (10, 600), (150, 600), (600, 1500), (1800, 3600), (100000, 3600)],
)
def test_run_fresh_for_s(estimated_s, fresh_for_s):
    assert recheck.run_fresh_for_s(estimated_s) == fresh_for_s


def test_freshness_limit_is_a_parameter():
    assert not recheck.facts_freshness(gathered=NOW - timedelta(seconds=11), now=NOW, max_age_s=10).fresh
    assert recheck.facts_freshness(gathered=NOW - timedelta(seconds=9), now=NOW, max_age_s=10).fresh


# --- fresh facts with what changed (pure, over facts a real gather made) -------------------


@pytest.fixture
def gathered(two_hosts):
    src, dst, vm = two_hosts
    pair, guest = gather_pair(source=src, destination=dst, guest_uuid=str(vm.uuid), options=MigrationOptions())
    return pair, guest


def test_refreshed_replaces_only_what_can_change(gathered):
    pair, guest = gathered
    now_pair, now_guest = recheck.refreshed(
        pair, guest,
        source_guest=GuestNow(exists=True, state="paused", active_operation="backup"),
        destination=HostNow(memory_free_kib=1234, domain_names=frozenset({guest.name}),
                            domain_uuids=frozenset({guest.uuid.upper().lower()}), running_vcpus=7),
        source_in_maintenance=True, destination_in_maintenance=False,
    )
    assert (now_guest.state, now_guest.active_operation) == ("paused", "backup")
    assert now_pair.destination.memory_free_kib == 1234 and now_pair.destination.running_vcpus == 7
    assert now_pair.destination_has_domain_name and now_pair.destination_has_domain_uuid
    assert now_pair.source.in_maintenance and not now_pair.destination.in_maintenance
    # Everything proven by the full gather is kept as it was.
    assert replace(now_guest, state=guest.state, active_operation=guest.active_operation) == guest
    assert now_pair.cpu_compare == pair.cpu_compare and now_pair.ports_reachable == pair.ports_reachable
    assert replace(now_pair.destination, memory_free_kib=pair.destination.memory_free_kib,
                   running_vcpus=pair.destination.running_vcpus) == pair.destination


def test_refreshed_refuses_a_guest_gone_from_the_source(gathered):
    pair, guest = gathered
    with pytest.raises(ValueError, match="no longer on kvm-a"):
        recheck.refreshed(pair, guest, source_guest=GuestNow(exists=False, state=None, active_operation=None),
                          destination=HostNow(0, frozenset(), frozenset(), 0),
                          source_in_maintenance=False, destination_in_maintenance=False)


# --- the runner -----------------------------------------------------------------------------


@pytest.fixture
def migrate(two_hosts, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts

    def run(options: MigrationOptions = MigrationOptions()) -> Migration:
        with django_capture_on_commit_callbacks(execute=True):
            migration = live.migration_request(vm=vm, destination=dst, options=options, actor=Actor.system())
        migration.refresh_from_db()
        return migration

    return run


def test_fresh_facts_are_rechecked_on_libvirt_only(two_hosts, world, gathered, migrate):
    connections_before = len(world.connections)
    migration = migrate()
    assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
    assert migration.summary["check"]["mode"] == "re-check"
    assert "s old" in migration.summary["check"]["why"]
    # No SSH for the migration itself: the only logins are the two inventory refreshes after it.
    opened = world.connections[connections_before:]
    assert sorted(c for c in opened if c[0] == "ssh") == [("ssh", "kvm-a"), ("ssh", "kvm-b")]
    assert migration.libvirt_called is not None and migration.libvirt_called >= migration.created
    assert migration.summary["request_to_libvirt_ms"] >= 0


def test_fresh_facts_are_only_used_for_their_own_guest_and_pair(two_hosts, world, migrate):
    src, dst, vm = two_hosts
    migration = migrate()  # nothing gathered before: a full check
    assert migration.summary["check"]["mode"] == "full"
    assert "no full check" in migration.summary["check"]["why"]
    # ... which is kept in its turn, as gathered.
    assert PreflightFacts.objects.filter(vm_uuid=vm.uuid, source=src, destination=dst).exists()


def test_stale_facts_mean_a_full_check(two_hosts, world, gathered, migrate):
    PreflightFacts.objects.update(gathered=datetime.now(dt_timezone.utc) - timedelta(seconds=61))
    migration = migrate()
    assert migration.status == S.SUCCEEDED
    assert migration.summary["check"]["mode"] == "full"
    assert "more than 60 s" in migration.summary["check"]["why"]


def test_the_recheck_sees_a_conflict_that_appeared_since_the_gather(two_hosts, world, gathered, migrate):
    src, dst, vm = two_hosts
    intruder = make_domain(vm.name, state="shutoff")
    world["kvm-b"].domains[intruder.uuid] = intruder
    migration = migrate()
    assert migration.status == S.FAILED and migration.summary == {}
    assert "domain" in migration.error.lower() and "Nothing was started" in migration.outcome
    assert world.where(str(vm.uuid)) == {"kvm-a": "running"}


def test_the_recheck_sees_memory_taken_since_the_gather(two_hosts, world, gathered, migrate):
    src, dst, vm = two_hosts
    world["kvm-b"].facts = replace(world["kvm-b"].facts, memory_free_kib=1024)
    migration = migrate()
    assert migration.status == S.FAILED
    assert "free" in migration.error and world.where(str(vm.uuid)) == {"kvm-a": "running"}


def test_a_guest_gone_from_the_source_falls_back_to_the_full_check(two_hosts, world, gathered, migrate):
    src, dst, vm = two_hosts
    del world["kvm-a"].domains[str(vm.uuid)]
    migration = migrate()
    assert migration.status == S.FAILED and "has no guest" in migration.error


# --- Succeeded first, figures after ---------------------------------------------------------


@pytest.fixture
def heartbeat_probe(settings, monkeypatch):
    """A guest heartbeat probe that notes what the record said when it was asked."""
    import migrations_app.heartbeat as heartbeat_module

    seen = []

    def probe(name, since):
        m = Migration.objects.get(vm_name=name)
        seen.append({"status": m.status, "follow_up": m.follow_up, "ended": m.ended,
                     "refreshes": Job.objects.filter(kind=HostJobKindChoices.REFRESH).count()})
        return {"max_gap_s": 0.3, "continuous": True, "beats": 40}

    heartbeat_module._load.cache_clear()
    monkeypatch.setattr(heartbeat_module, "import_string", lambda path: probe)
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "tests.fake:probe"
    yield seen
    heartbeat_module._load.cache_clear()


def test_succeeded_is_recorded_before_the_figures_and_the_refresh(transactional_db, two_hosts, world,
                                                                   heartbeat_probe):
    """Real commits (a transactional test): listeners hear of the end when the runner commits it."""
    src, dst, vm = two_hosts
    settled = []

    def on_settled(sender, *, migration_id, status, **kwargs):
        m = Migration.objects.get(pk=migration_id)
        settled.append((status, m.follow_up, m.heartbeat_gap_s,
                        Job.objects.filter(kind=HostJobKindChoices.REFRESH).count()))

    migration_settled.connect(on_settled, dispatch_uid="test.settled")
    try:
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    finally:
        migration_settled.disconnect(dispatch_uid="test.settled")
    migration.refresh_from_db()
    # The queue heard of the success before any figure or refresh was there.
    assert settled == [("succeeded", F.RUNNING, None, 0)]
    # The heartbeat was read with the record already succeeded, after both refreshes.
    assert heartbeat_probe == [{"status": "succeeded", "follow_up": F.RUNNING, "ended": migration.ended,
                                "refreshes": 2}]
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.DONE and not migration.follow_up_note
    assert migration.heartbeat_gap_s == pytest.approx(0.3) and migration.heartbeat_beats == 40
    refreshes = Job.objects.filter(kind=HostJobKindChoices.REFRESH)
    assert refreshes.count() == 2 and all(j.created >= migration.ended for j in refreshes)


def test_a_failed_follow_up_is_said_without_unsucceeding(two_hosts, world, gathered, migrate):
    # The fast path needs no SSH; the inventory refresh afterwards does, and kvm-b's is refused.
    world["kvm-b"].ssh_error = HostAuthError("kvm-b refused the login as root")
    migration = migrate()
    assert migration.status == S.SUCCEEDED and world.where(migration.vm_uuid.hex and str(migration.vm_uuid)) == {
        "kvm-b": "running"}
    assert migration.follow_up == F.FAILED
    assert "inventory of kvm-b could not be refreshed" in migration.follow_up_note
    assert migration.job.status == "succeeded"


def test_the_page_waits_for_the_figures_then_shows_what_failed(two_hosts, world, gathered, migrate, client,
                                                               admin_user):
    migration = migrate()
    client.force_login(admin_user)
    Migration.objects.filter(pk=migration.pk).update(follow_up=F.RUNNING, heartbeat_gap_s=None)
    page = client.get(migration.get_absolute_url()).content.decode()
    assert 'id="heartbeat-pending"' in page and "being measured" in page
    Migration.objects.filter(pk=migration.pk).update(follow_up=F.FAILED, follow_up_note="The inventory of kvm-b "
                                                     "could not be refreshed.")
    page = client.get(migration.get_absolute_url()).content.decode()
    assert "The inventory of kvm-b could not be refreshed." in page and "Done." in page


# --- the figures are a job of their own: the migration's job ends at its outcome ----------------


class QueueRecorder:
    """RQ's queues as the portal enqueues on them (core.jobs._submit), nothing run: (queue, kind, job id)."""

    def __init__(self):
        self.calls: list[tuple[str, str, int, str, tuple]] = []

    def get_queue(self, name):
        recorder = self

        class Queue:
            def enqueue_call(self, *, func, args, **kwargs):
                job = Job.objects.get(pk=args[0])
                recorder.calls.append((name, job.kind, job.pk, func, tuple(args)))

        return Queue()

    def kinds(self) -> list[str]:
        return [kind for _queue, kind, *_rest in self.calls]

    def run(self, kind: str) -> None:
        """Run the oldest enqueued job of ``kind`` as a worker would, and forget it."""
        from core.jobs import job_function

        call = next(c for c in self.calls if c[1] == kind)
        self.calls.remove(call)
        job_function(call[3])(*call[4])


@pytest.fixture
def queues(settings, monkeypatch):
    """Jobs go to (recorded) RQ queues instead of running in-process: run them by hand, in turn."""
    import core.jobs

    recorder = QueueRecorder()
    settings.VMPORTAL_JOBS_INLINE = False
    monkeypatch.setattr(core.jobs.django_rq, "get_queue", recorder.get_queue)
    return recorder


def test_the_migration_job_ends_at_succeeded_and_the_figures_follow_in_a_job_of_their_own(
        transactional_db, two_hosts, world, queues, heartbeat_probe):
    """Fails if Succeeded (or the migration's job, or the guest's lease) waits for the figures."""
    from hosts.models import GuestLease

    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    assert queues.kinds() == ["migration.run"]
    queues.run("migration.run")
    migration.refresh_from_db()
    # Settled, its job over, the guest free — and not one figure measured nor host refreshed yet.
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.RUNNING
    assert migration.job.status == "succeeded" and migration.heartbeat_gap_s is None
    assert not GuestLease.objects.filter(guest_uuid=vm.uuid).exists()
    assert heartbeat_probe == [] and not Job.objects.filter(kind=HostJobKindChoices.REFRESH).exists()
    follow_up = Job.objects.get(kind="migration.follow_up")
    assert (follow_up.status, follow_up.target_id, follow_up.queue_name) == ("queued", str(migration.pk), "migrations")
    assert queues.calls == [("migrations", "migration.follow_up", follow_up.pk,
                             "migrations_app.jobs.migration_follow_up_job", (follow_up.pk, migration.pk))]
    # The figures' job, later, by a worker: the same record filled in, its status untouched.
    queues.run("migration.follow_up")
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.DONE and not migration.follow_up_note
    assert migration.heartbeat_gap_s == pytest.approx(0.3)
    assert heartbeat_probe[0]["status"] == "succeeded" and heartbeat_probe[0]["refreshes"] == 2
    assert Job.objects.get(pk=follow_up.pk).status == "succeeded"


def test_the_next_migration_is_queued_before_the_figures_of_the_one_that_freed_its_slot(
        transactional_db, two_hosts, world, queues, settings):
    """One outgoing slot: the second guest waits for it; the first's end hands it over, and only
    then are the first's figures put on the same queue (a free worker takes the migration first)."""
    from tests.fakes.fleet import make_vm

    settings.VMPORTAL_MAX_OUTGOING = 1
    src, dst, vm = two_hosts
    other = make_vm(src, "web-2")
    world["kvm-a"].domains[str(other.uuid)] = world.guest_of(other)
    first = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    second = live.migration_request(vm=other, destination=dst, options=MigrationOptions(), actor=Actor.system())
    assert queues.kinds() == ["migration.run"]
    queues.run("migration.run")
    assert [(kind, queue) for queue, kind, *_ in queues.calls] == [
        ("migration.run", "migrations"), ("migration.follow_up", "migrations")]
    assert queues.calls[0][4] == (Migration.objects.get(pk=second.pk).job_id, second.pk)
    assert Migration.objects.get(pk=first.pk).status == S.SUCCEEDED


def test_a_follow_up_that_never_reached_the_queue_says_so(transactional_db, two_hosts, world, queues, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    src, dst, vm = two_hosts
    live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())

    def redis_gone(name):
        class Queue:
            def enqueue_call(self, **kwargs):
                raise RedisConnectionError("Connection refused")
        return Queue()

    call = queues.calls.pop()
    import core.jobs

    monkeypatch.setattr(core.jobs.django_rq, "get_queue", redis_gone)
    from core.jobs import job_function

    job_function(call[3])(*call[4])
    migration = Migration.objects.get()
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.FAILED
    assert "Could not put the job on the queue" in migration.follow_up_note and migration.heartbeat_gap_s is None


def test_the_migration_job_ending_does_not_lose_figures_its_follow_up_job_will_record(
        transactional_db, two_hosts, world, queues):
    from migrations_app import reconciler

    src, dst, vm = two_hosts
    live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    queues.run("migration.run")
    migration = Migration.objects.get()
    assert reconciler.migrations_reconcile()["follow_ups_lost"] == 0  # the follow-up job is queued (< 60 s)
    assert reconciler.migrations_job_lost(job_id=migration.job_id, reason="its work horse died") == 0
    migration.refresh_from_db()
    assert migration.follow_up == F.RUNNING


def test_figures_whose_job_died_are_said_lost_by_the_reconciler(transactional_db, two_hosts, world, queues):
    from migrations_app import reconciler

    src, dst, vm = two_hosts
    live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    queues.run("migration.run")
    follow_up = Job.objects.get(kind="migration.follow_up")
    Job.objects.filter(pk=follow_up.pk).update(status="failed")  # ended without a word (no signal either)
    assert reconciler.migrations_reconcile()["follow_ups_lost"] == 1
    migration = Migration.objects.get()
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.FAILED
    assert f"job #{follow_up.pk} ended (failed)" in migration.follow_up_note
    assert reconciler.migrations_reconcile()["follow_ups_lost"] == 0  # said once


def test_figures_whose_work_horse_died_are_said_lost_at_once(transactional_db, two_hosts, world, queues):
    from core.jobs import job_lost

    src, dst, vm = two_hosts
    live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    queues.run("migration.run")
    follow_up = Job.objects.get(kind="migration.follow_up")
    Job.objects.filter(pk=follow_up.pk).update(status="running")
    job_lost(follow_up.pk, reason="its work horse (pid 7) died, killed by signal 9")  # as PortalWorker says it
    migration = Migration.objects.get()
    assert migration.status == S.SUCCEEDED and migration.follow_up == F.FAILED
    assert "its work horse (pid 7) died, killed by signal 9" in migration.follow_up_note
    assert migration.heartbeat_gap_s is None


def test_a_migration_settled_without_a_follow_up_job_is_still_watched_through_its_own_job(two_hosts, world, migrate):
    """Records from before follow-ups had jobs of their own: the migration's job stands for it."""
    from migrations_app import reconciler

    migration = migrate()
    Job.objects.filter(kind="migration.follow_up").delete()
    Migration.objects.filter(pk=migration.pk).update(follow_up=F.RUNNING)
    reconciler.migrations_job_lost(job_id=migration.job_id, reason="its work horse (pid 8) died")
    migration.refresh_from_db()
    assert migration.follow_up == F.FAILED and "pid 8" in migration.follow_up_note


def test_the_heartbeat_is_not_read_once_the_guest_migrated_again(transactional_db, two_hosts, world, queues,
                                                                  heartbeat_probe):
    """A late follow-up would read the next migration's pause as this one's: it says so instead."""
    src, dst, vm = two_hosts
    live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    queues.run("migration.run")
    first = Migration.objects.get()
    from hosts.models import VirtualMachine

    back = live.migration_request(vm=VirtualMachine.objects.get(uuid=vm.uuid), destination=src,
                                  options=MigrationOptions(), actor=Actor.system(), reverses=first)
    queues.run("migration.run")
    assert Migration.objects.get(pk=back.pk).status == S.SUCCEEDED
    queues.run("migration.follow_up")  # the first's, after the way back
    first.refresh_from_db()
    assert first.follow_up == F.FAILED and first.heartbeat_gap_s is None
    assert f"migrated again (#{back.pk})" in first.follow_up_note
    assert heartbeat_probe == []


# --- jobs a caller runs itself never reach RQ: the sweeps must not take them for lost ------------


def test_a_migration_vm_migrate_runs_itself_is_not_taken_for_an_orphan(two_hosts, world, settings, monkeypatch):
    """Its Job row was never put on a queue: RQ not knowing it says nothing about its worker."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    from migrations_app import reconciler
    from migrations_app.services import slots

    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system(),
                                       run_by_worker=False)
    job = slots.migration_claim_for_caller(migration=migration)
    assert job.rq_job_id == ""  # never enqueued
    Job.objects.filter(pk=job.pk).update(status="running")
    Migration.objects.filter(pk=migration.pk).update(status=S.CHECKING, heartbeat=datetime.now(dt_timezone.utc))
    settings.VMPORTAL_JOBS_INLINE = False

    def not_in_redis(*args, **kwargs):
        raise NoSuchJobError("no such job")

    monkeypatch.setattr(RQJob, "fetch", not_in_redis)
    assert reconciler.migrations_reconcile()["reconciling"] == 0
    assert Migration.objects.get(pk=migration.pk).status == S.CHECKING
