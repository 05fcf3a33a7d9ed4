"""The fleet page, Apply (Operator, confirmed) and the host load JSON behind the charts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from hosts import load
from hosts.models import HostLoad
from maintenance.models import Evacuation

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_budget(settings):
    settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB = 4096


def _rec_id(client):
    page = client.get(reverse("fleet:fleet"))
    assert page.status_code == 200
    return page.context["outcomes"][0].recommendations[0].id, page


def test_viewer_sees_reasons_but_no_apply(evac, viewer_client):
    rec_id, page = _rec_id(viewer_client)
    html = page.content.decode()
    assert "from 75 to 0 points" in html and "web-1" in html and 'name="rec_id"' not in html
    assert "<script>" not in html  # strict CSP: scripts only from static files
    assert viewer_client.post(reverse("fleet:apply"), {"rec_id": rec_id, "confirm": "yes"}).status_code == 403


def test_operator_applies_with_confirmation(evac, world, operator_client, django_capture_on_commit_callbacks):
    rec_id, page = _rec_id(operator_client)
    assert 'name="rec_id"' in page.content.decode()
    unconfirmed = operator_client.post(reverse("fleet:apply"), {"rec_id": rec_id})
    assert unconfirmed.status_code == 302 and not Evacuation.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        done = operator_client.post(reverse("fleet:apply"), {"rec_id": rec_id, "confirm": "yes"})
    ev = Evacuation.objects.get()
    assert done.status_code == 302 and done["Location"] == ev.get_absolute_url()
    assert ev.kind == "balance"


def test_stale_id_and_bad_basis_are_messages(evac, operator_client):
    r = operator_client.post(reverse("fleet:apply"), {"rec_id": "<b>x</b>" * 40, "confirm": "yes"}, follow=True)
    assert r.status_code == 200 and "No current recommendation" in r.content.decode()
    assert operator_client.get(reverse("fleet:fleet"), {"basis": "'; drop"}).context["basis"] == "assigned"


def test_host_load_json(evac, viewer_client):
    host = evac["a"]
    now = timezone.now()
    HostLoad.objects.create(host=host, step_s=300, at=load.bucket_start(now - timedelta(minutes=10), 300),
                            memory_used_kib=3, memory_free_kib=1, cpu_pct=12.5)
    data = viewer_client.get(reverse("hosts:host_load", args=[host.pk]), {"range": "hour"}).json()
    assert data["memory_pct"] == [75.0] and data["cpu_pct"] == [12.5] and len(data["t"]) == 1
    assert data["to"] - data["from"] == 3600 and data["from"] <= data["t"][0] <= data["to"]
    assert viewer_client.get(reverse("hosts:host_load", args=[host.pk]), {"range": "year"}).status_code == 400
    page = viewer_client.get(reverse("hosts:host_detail", args=[host.pk])).content.decode()
    assert "uPlot.iife.min.js" in page and reverse("hosts:host_load", args=[host.pk]) in page


def test_host_load_json_needs_a_login(evac, client):
    assert client.get(reverse("hosts:host_load", args=[evac["a"].pk])).status_code in (302, 403)
