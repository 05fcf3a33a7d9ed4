"""The migrations list's history: pure series, histogram and per-day tables, and its JSON (bounded, narrowed to hosts one may view)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from django.urls import reverse
from django.utils import timezone as dj_timezone

from hosts.models import HostGroup, HostGroupGrant
from migrations_app import history
from migrations_app.models import Migration
from tests.fakes.fleet import make_host

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("downtimes, expected", [
    ([], [0, 0, 0, 0, 0, 0, 0, 0]),
    ([0, 49, 50, 99, 100], [2, 2, 1, 0, 0, 0, 0, 0]),
    ([4999, 5000, 90000], [0, 0, 0, 0, 0, 0, 1, 2]),
])
def test_histogram(downtimes, expected):
    found = history.histogram(downtimes)
    assert found["count"] == expected
    assert found["labels"][0] == "< 50 ms" and found["labels"][4] == "500 ms–1 s" and found["labels"][-1] == "≥ 5 s"


def test_per_day_and_series():
    rows = [
        history.Row(2, T0 + timedelta(hours=20), "succeeded", "web-2", "a", "b", 12340, 80, 0.25),
        history.Row(1, T0, "failed", "web-1", "b", "a", None, None, None),
        history.Row(3, T0 + timedelta(hours=1), "succeeded", "web-3", "a", "c", 5000, 1200, None),
    ]
    s = history.series(rows)
    assert s["id"] == [1, 3, 2] and s["total_s"] == [None, 5.0, 12.34]
    assert s["downtime_ms"] == [None, 1200, 80] and s["guest_ms"] == [None, None, 250]
    assert s["label"][0] == "#1 web-1: b → a (failed)"
    day = int(datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp())
    assert s["per_day"] == {"t": [day, day + 86400], "count": [2, 1]}
    assert s["histogram"]["count"][1] == 1 and s["histogram"]["count"][5] == 1


@pytest.mark.django_db
def test_history_json_filters_bounds_and_narrows(viewer_client, viewer):
    a, b, c = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    now = dj_timezone.now()
    for i, (src, dst, name) in enumerate(((a, b, "web-1"), (b, a, "db-1"), (c, b, "web-9"))):
        Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name=name, source=src, destination=dst, options={},
                                 status="succeeded", created=now - timedelta(days=i + 1), total_time_ms=1000 * (i + 1),
                                 downtime_ms=100)
    Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name="old", source=a, destination=b, options={},
                             status="succeeded", created=now - timedelta(days=60))
    url = reverse("migrations_app:migration_history")
    data = viewer_client.get(url).json()
    assert len(data["id"]) == 3 and data["url"].endswith("/{id}/") and not data["truncated"]
    assert len(viewer_client.get(url, {"host": c.pk}).json()["id"]) == 1
    assert [lbl.split(":")[0] for lbl in viewer_client.get(url, {"guest": "WEB"}).json()["label"]] == [
        f"#{m.pk} {m.vm_name}" for m in Migration.objects.filter(vm_name__startswith="web").order_by("created")]
    assert len(viewer_client.get(url, {"days": "90"}).json()["id"]) == 4
    for bad in ({"days": "0"}, {"days": "x"}, {"host": "1;2"}, {"guest": "g" * 300}):
        assert viewer_client.get(url, bad).status_code == 400
    # a viewer by grant on kvm-c's group only sees migrations touching kvm-c
    viewer.groups.clear()
    group = HostGroup.objects.create(name="team-c")
    group.hosts.add(c)
    HostGroupGrant.objects.create(group=group, user=viewer, role="Viewer")
    assert [lbl.split(" ")[1] for lbl in viewer_client.get(url).json()["label"]] == ["web-9:"]
    page = viewer_client.get(reverse("migrations_app:migration_list")).content.decode()
    assert 'id="migration-history"' in page and "migration_history.js" in page and "<script>" not in page
