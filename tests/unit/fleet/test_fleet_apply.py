"""Recommendations from the inventory and applied over the fake fleet: one run of ordinary migrations."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from core.actors import Actor
from core.errors import ServiceRefused
from core.models import AuditEvent
from fleet import services
from maintenance.choices import EvacuationKindChoices, EvacuationStatusChoices as ES, ItemStatusChoices as IS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def small_budget(settings):
    settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB = 4096  # 1 GiB guests matter


def recommend_json(*args):
    out = io.StringIO()
    call_command("fleet_recommend", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_balance_recommends_applies_and_then_proposes_nothing(evac, world, django_capture_on_commit_callbacks):
    found = recommend_json("--balance")
    (rec,) = found["recommendations"]
    assert [(m["vm"], m["from"], m["to"]) for m in rec["moves"]] == [("web-1", "kvm-a", "kvm-b"), ("web-2", "kvm-a", "kvm-c")]
    assert "from 75 to 0 points" in rec["summary"] and rec["before"]["kvm-a"] == 75.0
    with django_capture_on_commit_callbacks(execute=True):
        ev = services.recommendation_apply(rec_id=rec["id"], actor=Actor.system())
    ev.refresh_from_db()
    assert ev.kind == EvacuationKindChoices.BALANCE and ev.status == ES.SUCCEEDED, ev.outcome
    for item in ev.items.all():
        assert item.status == IS.SUCCEEDED and item.migration is not None
        assert list(world.where(str(item.vm_uuid))) == [item.destination.name]
    assert AuditEvent.objects.filter(action="evacuation.run", message=rec["summary"]).exists()
    again = recommend_json("--balance")
    assert again["recommendations"] == [] and "nothing to do" in again["notes"][0]


def test_applying_an_id_that_is_not_current_is_refused(evac):
    with pytest.raises(ServiceRefused, match="No current recommendation"):
        services.recommendation_apply(rec_id="nope", actor=Actor.system())
    with pytest.raises(CommandError, match="No current recommendation"):
        call_command("fleet_recommend", "--apply", "x" * 500, stdout=io.StringIO())


def test_consolidate_names_hosts_that_can_be_emptied(evac):
    found = recommend_json("--consolidate")
    assert [r["power_off"] for r in found["recommendations"]][:2] == ["kvm-b", "kvm-c"]  # empty: no moves
    assert all(r["kind"] == "consolidate" for r in found["recommendations"])


def test_bad_hold_is_a_message(evac):
    with pytest.raises(CommandError, match="--hold"):
        call_command("fleet_recommend", "--hold", "soon", stdout=io.StringIO())
