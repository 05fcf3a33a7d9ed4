"""Guest capacity per host, the portal's balancing settings and dismissed recommendations (audited), over the fake fleet."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from core.actors import Actor
from core.errors import ServiceRefused
from core.models import AuditEvent
from fleet import services
from fleet.models import Dismissal, FleetSettings
from hosts import capacity
from hosts.capacity_services import host_capacity_set
from hosts.models import HostLoad

pytestmark = pytest.mark.django_db
GIB = 1024 * 1024


@pytest.fixture(autouse=True)
def small_budget(settings):
    settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB = 4096


@pytest.mark.parametrize("given, expected", [
    # total 16 GiB, 8 CPUs, reserve 1 GiB, no portal budget, ratio 4
    (dict(guest_memory_mib=None, vcpu_ratio=None, portal_memory_mib=0), (15 * GIB, 32, True, True)),
    (dict(guest_memory_mib=None, vcpu_ratio=None, portal_memory_mib=4096), (4 * GIB, 32, True, True)),
    (dict(guest_memory_mib=2048, vcpu_ratio=1.5, portal_memory_mib=4096), (2 * GIB, 12, False, False)),
])
def test_budget_of(given, expected):
    b = capacity.budget_of(memory_total_kib=16 * GIB, cpus=8, reserve_mib=1024, portal_ratio=4.0, **given)
    assert (b.memory_kib, b.vcpus, b.memory_default, b.ratio_default) == expected


@pytest.mark.parametrize("memory, ratio, problem", [
    (10, None, "memory budget must be from 64"), (None, 0.0, "vCPU ratio must be from 0.1"),
    (None, 100.0, "vCPU ratio"), (2048, 2.0, None), (None, None, None),
])
def test_budget_problems(memory, ratio, problem):
    found = " ".join(capacity.budget_problems(memory_mib=memory, vcpu_ratio=ratio))
    assert (problem in found) if problem else found == ""


def test_capacity_set_audited_and_used_by_the_recommendations(evac):
    a = evac["a"]
    host_capacity_set(host=a, memory_mib=8192, vcpu_ratio=2, actor=Actor.system())
    event = AuditEvent.objects.get(action="host.capacity")
    assert event.parameters["new"] == {"memory_mib": 8192, "vcpu_ratio": 2} and "16 vCPUs" in event.message
    (balance, _c) = services.recommendations(kind=None)
    assert balance.recommendations[0].before["kvm-a"] == 37.5  # 3 GiB running of its own 8 GiB, not the portal's 4
    with pytest.raises(ServiceRefused, match="from 64 to"):
        host_capacity_set(host=a, memory_mib=1, vcpu_ratio=None, actor=Actor.system())


def test_host_capacity_command(evac):
    out = io.StringIO()
    call_command("host_capacity", "kvm-b", "--memory-mib", "2048", "--vcpu-ratio", "3", stdout=out)
    assert out.getvalue().strip() == "kvm-b: 2048 MiB for guests; 24 vCPUs (3 per CPU)."
    out = io.StringIO()
    call_command("host_capacity", "kvm-b", "--memory-mib", "default", stdout=out)
    assert "4096 MiB for guests (default); 24 vCPUs (3 per CPU)" in out.getvalue()
    with pytest.raises(CommandError, match="wants a number"):
        call_command("host_capacity", "kvm-b", "--vcpu-ratio", "lots", stdout=io.StringIO())


def test_host_capacity_page_admin_only(evac, admin_client, operator_client):
    url = reverse("hosts:host_capacity", args=[evac["a"].pk])
    assert operator_client.post(url, {"memory_mib": "2048"}).status_code == 403
    assert "Edit capacity" in admin_client.get(reverse("hosts:host_detail", args=[evac["a"].pk])).content.decode()
    bad = admin_client.post(url, {"memory_mib": "1", "vcpu_ratio": ""})
    assert bad.status_code == 200 and "greater than or equal to 64" in bad.content.decode()
    assert admin_client.post(url, {"memory_mib": "2048", "vcpu_ratio": "2"}).status_code == 302
    assert evac["a"].budget.guest_memory_mib == 2048


def test_cpu_metric_setting_is_audited_and_balances_vcpus(evac, admin_client, viewer_client):
    evac["web-1"].__class__.objects.filter(host=evac["a"]).update(vcpus=4)
    form = {"metric": "cpu", "threshold_pts": "10", "margin_pts": "2", "cooldown_hours": "12", "hold_minutes": "15"}
    assert viewer_client.post(reverse("fleet:settings"), form).status_code == 403
    assert admin_client.post(reverse("fleet:settings"), form).status_code == 302
    row = FleetSettings.current()
    assert (row.metric, row.threshold_pts, row.hold_minutes) == ("cpu", 10, 15)
    event = AuditEvent.objects.get(action="fleet.settings")
    assert event.parameters["old"]["metric"] == "memory" and event.parameters["new"]["metric"] == "cpu"
    (balance, _c) = services.recommendations()
    rec = balance.recommendations[0]
    # kvm-a runs 3 × 4 vCPUs of 8 CPUs × 4 = 32: 37.5 %
    assert rec.before["kvm-a"] == 37.5 and "vCPU" in rec.summary and "(4 vCPU)" in rec.moves[0].why
    page = viewer_client.get(reverse("fleet:fleet")).content.decode()
    assert "Balancing on <strong>cpu</strong>" in page
    bad = admin_client.post(reverse("fleet:settings"), {**form, "threshold_pts": "500"})
    assert bad.status_code == 200 and AuditEvent.objects.filter(action="fleet.settings").count() == 1


def _balance(client):
    page = client.get(reverse("fleet:fleet"))
    return page.context["outcomes"][0], page


def test_dismissed_recommendation_stays_hidden_until_facts_change_or_expiry(evac, operator_client, viewer_client):
    outcome, page = _balance(operator_client)
    rec = outcome.recommendations[0]
    assert 'action="/fleet/dismiss/"' in page.content.decode()
    assert viewer_client.post(reverse("fleet:dismiss"), {"rec_id": rec.id, "reason": "x", "hours": 1}).status_code == 403
    empty = operator_client.post(reverse("fleet:dismiss"), {"rec_id": rec.id, "reason": " ", "hours": 24}, follow=True)
    assert "reason" in empty.content.decode() and not Dismissal.objects.exists()
    done = operator_client.post(reverse("fleet:dismiss"), {"rec_id": rec.id, "reason": "web-1 is <b>rebuilt</b>",
                                                           "hours": 24}, follow=True)
    html = done.content.decode()
    assert "web-1 is &lt;b&gt;rebuilt&lt;/b&gt;" in html and "1 dismissed recommendation(s) hidden" in html
    assert _balance(operator_client)[0].recommendations == ()
    event = AuditEvent.objects.get(action="fleet.dismiss")
    assert event.parameters["rec_id"] == rec.id and event.parameters["reason"] == "web-1 is <b>rebuilt</b>"
    assert event.actor_label == done.wsgi_request.user.get_username()
    # applying a dismissed one is refused: it is not current
    with pytest.raises(ServiceRefused, match="dismissed"):
        services.recommendation_apply(rec_id=rec.id, actor=Actor.system())
    # the facts change (kvm-a gets a budget of its own: its use moves by more than 5 points) → it comes back
    host_capacity_set(host=evac["a"], memory_mib=3500, vcpu_ratio=None, actor=Actor.system())
    back = _balance(operator_client)[0].recommendations
    assert back and back[0].id == rec.id
    # the expiry passes → it comes back too
    host_capacity_set(host=evac["a"], memory_mib=None, vcpu_ratio=None, actor=Actor.system())
    assert _balance(operator_client)[0].recommendations == ()
    Dismissal.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert _balance(operator_client)[0].recommendations[0].id == rec.id


def test_dismiss_from_the_command_line_and_bounds(evac):
    out = io.StringIO()
    call_command("fleet_recommend", "--balance", "--json", stdout=out)
    rec_id = json.loads(out.getvalue())["recommendations"][0]["id"]
    with pytest.raises(CommandError, match="from 1 hour to 720"):
        call_command("fleet_recommend", "--dismiss", rec_id, "--reason", "later", "--hours", "9999", stdout=io.StringIO())
    with pytest.raises(CommandError, match="Say why"):
        call_command("fleet_recommend", "--dismiss", rec_id, stdout=io.StringIO())
    out = io.StringIO()
    call_command("fleet_recommend", "--dismiss", rec_id, "--reason", "after the release", "--hours", "2", stdout=out)
    assert out.getvalue().startswith(f"Dismissed {rec_id} until")
    assert Dismissal.objects.get().actor_label.startswith("cli:")


def test_sparklines_json_one_request_bounded_and_narrowed(evac, viewer_client):
    now = timezone.now()
    HostLoad.objects.create(host=evac["a"], step_s=300, at=now - timedelta(minutes=10), memory_used_kib=8 * GIB,
                            memory_free_kib=8 * GIB, cpu_pct=12.5)
    url = reverse("hosts:sparklines")
    data = viewer_client.get(url, {"ids": f"{evac['a'].pk},{evac['b'].pk},999999"}).json()
    assert set(data["hosts"]) == {str(evac["a"].pk), str(evac["b"].pk)}
    a = data["hosts"][str(evac["a"].pk)]
    assert a["name"] == "kvm-a" and a["memory_pct"] == [50.0] and a["cpu_pct"] == [12.5]
    for bad in ("1;drop", ",".join(["1"] * 201), "9" * 40):
        assert viewer_client.get(url, {"ids": bad}).status_code == 400
    page = viewer_client.get(reverse("hosts:inventory")).content.decode()
    assert f'class="sparkline" data-host="{evac["a"].pk}"' in page and "load_sparkline.js" in page
    fleet_page = viewer_client.get(reverse("fleet:fleet")).content.decode()
    assert fleet_page.count("uPlot.iife.min.js") == 1 and "load_sparkline.js" in fleet_page
