"""Load history: the pure deltas, buckets, downsampling and retention, and what a refresh records."""

from datetime import datetime, timedelta, timezone

import pytest

from core.actors import Actor
from hosts import load, services
from hosts.adapters.stats import cpu_use_percent, vcpu_use_percent
from hosts.models import GuestLoad, HostLoad, LoadCounters

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("before_busy, before_total, after_busy, after_total, expected", [
    (0, 0, 50, 100, 50.0),
    (100, 1000, 100, 2000, 0.0),
    (0, 0, 300, 200, 100.0),  # bounded
    (100, 1000, 50, 2000, None),  # counters reset (host rebooted)
    (100, 1000, 200, 1000, None),  # no time passed
])
def test_cpu_use_from_deltas(before_busy, before_total, after_busy, after_total, expected):
    assert cpu_use_percent(before_busy, before_total, after_busy, after_total) == expected


@pytest.mark.parametrize("before, after, elapsed, vcpus, expected", [
    (0, 30 * 10**9, 60, 1, 50.0),
    (0, 60 * 10**9, 60, 2, 50.0),
    (10**9, 0, 60, 1, None),  # the guest restarted
    (0, 10**9, 0, 1, None),
    (0, 10**9, 60, 0, None),
])
def test_vcpu_use_from_deltas(before, after, elapsed, vcpus, expected):
    assert vcpu_use_percent(before, after, elapsed, vcpus) == expected


@pytest.mark.parametrize("at, step, expected", [
    (T0 + timedelta(minutes=7, seconds=3), 300, T0 + timedelta(minutes=5)),
    (T0 + timedelta(minutes=59), 3600, T0),
    (T0, 300, T0),
])
def test_bucket_start(at, step, expected):
    assert load.bucket_start(at, step) == expected


def P(minutes, samples=1, **values):
    return load.Point(at=T0 + timedelta(minutes=minutes), samples=samples, values=values)


@pytest.mark.parametrize("points, step, expected", [
    # one hour of 5-minute points → one hourly point, averaged
    ([P(0, cpu=10.0), P(5, cpu=30.0)], 3600, [(T0, 2, {"cpu": 20.0})]),
    # weighted by samples; unknown values ignored
    ([P(0, 3, cpu=10.0), P(5, 1, cpu=50.0), P(10, cpu=None)], 3600, [(T0, 5, {"cpu": 20.0})]),
    # all unknown stays unknown
    ([P(0, cpu=None)], 3600, [(T0, 1, {"cpu": None})]),
    # two hours → two points, oldest first, whatever the input order
    ([P(65, cpu=4.0), P(0, cpu=2.0)], 3600, [(T0, 1, {"cpu": 2.0}), (T0 + timedelta(hours=1), 1, {"cpu": 4.0})]),
])
def test_downsample(points, step, expected):
    got = load.downsample(points, step)
    assert [(p.at, p.samples, dict(p.values)) for p in got] == expected


def test_retention_steps_align_fine_cut_on_hours():
    now = T0 + timedelta(minutes=42)
    fine, coarse = load.retention_steps(now)
    assert (fine.step_s, fine.into_step_s, fine.roll_before) == (300, 3600, T0 - timedelta(days=7))
    assert (coarse.step_s, coarse.into_step_s, coarse.roll_before) == (3600, None, now - timedelta(days=90))


# --- Recorded by the refresh, over the fake fleet ------------------------------------------



def _refresh(host, capture):
    with capture(execute=True):
        services.host_refresh_request(host=host, actor=Actor.system())


@pytest.mark.django_db
def test_refresh_records_host_and_guest_points_with_deltas(trusted_host, fleet, django_capture_on_commit_callbacks):
    fake = fleet[trusted_host.address]
    running = [u for u, d in fake.domains.items() if d.state == "running"]
    HostLoad.objects.all().delete()  # the fixture's own refresh
    GuestLoad.objects.all().delete()
    LoadCounters.objects.all().delete()
    _refresh(trusted_host, django_capture_on_commit_callbacks)
    first = HostLoad.objects.get(host=trusted_host)
    assert first.cpu_pct is None and first.memory_used_kib + first.memory_free_kib == 8 * 1024 * 1024
    assert GuestLoad.objects.filter(host=trusted_host).count() == len(running)
    fake.cpu_times = {"kernel": 10**9, "user": 10**9, "idle": 2 * 10**9, "iowait": 0}
    _refresh(trusted_host, django_capture_on_commit_callbacks)
    point = HostLoad.objects.get(host=trusted_host)  # same 5-minute bucket: one point, two samples
    assert point.samples == 2 and point.cpu_pct == 50.0


@pytest.mark.django_db
def test_retention_sweep_rolls_and_drops(trusted_host):
    HostLoad.objects.all().delete()  # the fixture's own refresh
    now = T0
    old = now - timedelta(days=8)
    for minutes, cpu in ((0, 10.0), (5, 30.0)):
        HostLoad.objects.create(host=trusted_host, step_s=300, at=load.bucket_start(old, 3600) + timedelta(minutes=minutes),
                                memory_used_kib=100, memory_free_kib=200, cpu_pct=cpu)
    HostLoad.objects.create(host=trusted_host, step_s=3600, at=now - timedelta(days=91),
                            memory_used_kib=1, memory_free_kib=1)
    HostLoad.objects.create(host=trusted_host, step_s=300, at=now - timedelta(hours=1),
                            memory_used_kib=1, memory_free_kib=1)
    services.load_retention_sweep(now=now)
    rows = list(HostLoad.objects.values_list("step_s", "samples", "cpu_pct"))
    assert sorted(rows, key=str) == sorted([(3600, 2, 20.0), (300, 1, None)], key=str)


# --- The set-based writes agree with the pure rules (run on PostgreSQL too: names hold "services") ---

from hosts import load_store  # noqa: E402
from hosts.adapters.stats import DomainStats, HostStats, NodeStats  # noqa: E402

_HOST_KEY = ("host_id", "step_s", "at")
_HOST_FIELDS = ("memory_used_kib", "memory_free_kib", "cpu_pct")


@pytest.mark.django_db
@pytest.mark.parametrize("kept, incoming", [
    ((3, (100, 900, 10.0)), (1, (200, 800, 50.0))),  # weighted by samples
    ((1, (100, 900, None)), (1, (300, 700, 40.0))),  # the kept point knew no CPU: the new one's
    ((2, (100, 900, 30.0)), (1, (101, 899, None))),  # the new sample knows none: the kept one's
    ((1, (1, 2, None)), (1, (2, 3, None))),  # both unknown stay unknown; KiB rounded to whole numbers
    (None, (1, (5, 6, 7.5))),  # no point yet: inserted as it is
])
def test_load_services_upsert_merges_as_the_pure_merge(trusted_host, kept, incoming):
    HostLoad.objects.all().delete()
    fields = _HOST_FIELDS
    if kept:
        HostLoad.objects.create(host=trusted_host, step_s=300, at=T0, samples=kept[0],
                                **dict(zip(fields, kept[1], strict=True)))
    load_store.upsert_points(HostLoad, _HOST_KEY, fields, [(trusted_host.pk, 300, T0, incoming[0], *incoming[1])])
    new = load.Point(T0, incoming[0], dict(zip(fields, incoming[1], strict=True)))
    want = load.merge(load.Point(T0, kept[0], dict(zip(fields, kept[1], strict=True))), new) if kept else new
    row = HostLoad.objects.get(host=trusted_host)
    assert row.samples == want.samples
    for f in fields:
        expected = want.values[f]
        if expected is not None and f.endswith("_kib"):
            assert abs(getattr(row, f) - expected) <= 0.5 and isinstance(getattr(row, f), int)
        else:
            assert getattr(row, f) == (pytest.approx(expected) if expected is not None else None)


def _stats(guests: int, *, busy: int, vcpu_ns: int) -> HostStats:
    domains = tuple(DomainStats(uuid=f"00000000-0000-0000-0000-{i:012d}", name=f"g{i}", state="running",
                                balloon_current_kib=1024 * (i + 1), balloon_maximum_kib=1024 * (i + 1), rss_kib=0,
                                vcpus=1, vcpu_time_ns=vcpu_ns) for i in range(guests))
    node = NodeStats(cpus=4, cpu_busy_ns=busy, cpu_total_ns=4 * busy, memory_total_kib=8 << 20, memory_free_kib=4 << 20)
    return HostStats(node=node, domains=domains, monotonic_s=0.0)


@pytest.mark.django_db
@pytest.mark.parametrize("guests", [0, 3, 7])
def test_load_services_record_is_a_fixed_number_of_statements(trusted_host, guests, monkeypatch,
                                                             django_assert_num_queries):
    """However many guests, one refresh's write is the same few statements (no read of the points kept)."""
    monkeypatch.setattr(load_store, "CHUNK_ROWS", 50)
    for model in (HostLoad, GuestLoad, LoadCounters):
        model.objects.all().delete()
    services.host_load_record(host=trusted_host, stats=_stats(guests, busy=10**9, vcpu_ns=0), now=T0)
    # transaction (a savepoint in a test) begun and ended, counters read, host upsert, guests upsert
    # (none when no guest runs), counters upsert (no lazy commit: inside the test's transaction)
    with django_assert_num_queries(5 + (1 if guests else 0)):
        services.host_load_record(host=trusted_host, stats=_stats(guests, busy=2 * 10**9, vcpu_ns=30 * 10**9),
                                  now=T0 + timedelta(minutes=1))
    assert GuestLoad.objects.filter(host=trusted_host).count() == guests
    assert set(GuestLoad.objects.values_list("samples", flat=True)) <= {2}
    # second refresh knew the deltas: 30 s of one vCPU in 60 s, merged with the first's unknown
    assert all(p == 50.0 for p in GuestLoad.objects.values_list("vcpu_pct", flat=True))
    host = HostLoad.objects.get(host=trusted_host)
    assert host.samples == 2 and host.cpu_pct == 25.0


@pytest.mark.django_db
def test_load_services_record_chunks_many_guests(trusted_host, monkeypatch):
    monkeypatch.setattr(load_store, "CHUNK_ROWS", 3)
    GuestLoad.objects.all().delete()
    services.host_load_record(host=trusted_host, stats=_stats(8, busy=10**9, vcpu_ns=0), now=T0)
    services.host_load_record(host=trusted_host, stats=_stats(8, busy=2 * 10**9, vcpu_ns=0), now=T0 + timedelta(minutes=1))
    rows = sorted(GuestLoad.objects.values_list("memory_kib", "samples"))
    assert rows == [(1024 * (i + 1), 2) for i in range(8)]


@pytest.mark.django_db
def test_load_services_sweep_rolls_like_downsample(trusted_host):
    """The set-based roll-up gives what the pure downsample and merge give, per series, unknowns included."""
    for model in (HostLoad, GuestLoad):
        model.objects.all().delete()
    now = T0
    hour = load.bucket_start(now - timedelta(days=8), 3600)
    uuid_a, uuid_b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    fine = {  # (vm, minutes after the hour, samples, memory, vcpu %)
        uuid_a: [(0, 2, 1000, 10.0), (5, 1, 2000, None), (65, 1, 500, 80.0)],
        uuid_b: [(10, 1, 300, None), (15, 3, 301, None)],
    }
    for uuid, points in fine.items():
        for minutes, samples, mem, vcpu in points:
            GuestLoad.objects.create(host=trusted_host, vm_uuid=uuid, step_s=300, at=hour + timedelta(minutes=minutes),
                                     samples=samples, memory_kib=mem, vcpu_pct=vcpu)
    # an hourly point already kept for a's first hour: merged, not replaced
    GuestLoad.objects.create(host=trusted_host, vm_uuid=uuid_a, step_s=3600, at=hour, samples=4, memory_kib=4000,
                             vcpu_pct=40.0)
    GuestLoad.objects.create(host=trusted_host, vm_uuid=uuid_a, step_s=3600, at=now - timedelta(days=91), samples=1,
                             memory_kib=1, vcpu_pct=None)  # past 90 days: dropped
    recent = GuestLoad.objects.create(host=trusted_host, vm_uuid=uuid_b, step_s=300, at=now - timedelta(hours=2),
                                      samples=1, memory_kib=7, vcpu_pct=1.0)
    services.load_retention_sweep(now=now)

    expected = {}
    for uuid, points in fine.items():
        pts = [load.Point(hour + timedelta(minutes=m), s, {"memory_kib": mem, "vcpu_pct": v}) for m, s, mem, v in points]
        for p in load.downsample(pts, 3600):
            expected[(uuid, p.at)] = p
    kept = load.Point(hour, 4, {"memory_kib": 4000, "vcpu_pct": 40.0})
    expected[(uuid_a, hour)] = load.merge(kept, expected[(uuid_a, hour)])
    got = {(str(r.vm_uuid), r.at): r for r in GuestLoad.objects.filter(step_s=3600)}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row.samples == want.samples, key
        assert abs(row.memory_kib - want.values["memory_kib"]) <= 0.5, key
        assert row.vcpu_pct == (pytest.approx(want.values["vcpu_pct"]) if want.values["vcpu_pct"] is not None
                                else None), key
    assert list(GuestLoad.objects.filter(step_s=300).values_list("pk", flat=True)) == [recent.pk]


def test_roll_up_refuses_an_unknown_bucket():
    with pytest.raises(ValueError, match="Cannot roll"):
        load_store.roll_up(HostLoad, ("host_id",), _HOST_FIELDS, step_s=300, before=T0, into_step_s=900)


@pytest.mark.django_db(transaction=True)
def test_load_services_commit_lazily_only_in_a_transaction_of_its_own():
    """PostgreSQL: SET LOCAL synchronous_commit in the outermost transaction only; SQLite: nothing to do."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    postgres = connection.vendor == "postgresql"
    with transaction.atomic():
        with CaptureQueriesContext(connection) as own:
            load_store.commit_lazily()
        with transaction.atomic(), CaptureQueriesContext(connection) as nested:
            load_store.commit_lazily()
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                assert cursor.fetchone()[0] == "off"
    assert [q["sql"] for q in own.captured_queries] == (["SET LOCAL synchronous_commit TO OFF"] if postgres else [])
    assert nested.captured_queries == []
    if postgres:  # LOCAL: gone with the transaction
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
