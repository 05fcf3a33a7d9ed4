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
