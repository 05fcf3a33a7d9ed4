"""Balance and consolidation against the real lab: four heartbeat guests on labh1, none elsewhere.

``fleet_recommend --balance --json`` proposes moves that even the hosts out, applying it moves
them (asked of libvirt on every lab host), and asking again proposes nothing. The lab's hosts
share one machine's memory, so the test sets a small memory budget per host.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from django.core.management import call_command

from fleet import services
from hosts.models import Host, HostLoad, VirtualMachine
from lab_support import SYSTEM, heartbeat_guest, refresh, where
from lab_support import onboarded  # noqa: F401 - fixture used by name
from maintenance.choices import EvacuationStatusChoices as ES, ItemStatusChoices as IS

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def guests(lab):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(heartbeat_guest(lab["hosts"][0], prefix="bal-hb")) for _ in range(4)]


def recommend(*args) -> dict:
    out = io.StringIO()
    call_command("fleet_recommend", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_balance_on_the_lab_moves_guests_and_then_proposes_nothing(lab, onboarded, guests, settings):  # noqa: F811
    for host in onboarded.values():
        refresh(host)
    ours = {u for _, u in guests}
    # A budget where the four guests on labh1 are most of it: the rest of the lab's guests count too.
    running = sum(vm.memory_kib for vm in VirtualMachine.objects.filter(state="running"))
    settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB = running // 1024
    assert HostLoad.objects.filter(host__name=lab["hosts"][0]["name"]).exists()  # the refresh measured

    found = recommend("--balance")
    rec = found["recommendations"][0]
    assert rec["moves"] and all(m["from"] == lab["hosts"][0]["name"] for m in rec["moves"])
    assert max(rec["after"].values()) - min(rec["after"].values()) < max(rec["before"].values()) - min(rec["before"].values())
    ev = services.recommendation_apply(rec_id=rec["id"], actor=SYSTEM)
    ev.refresh_from_db()
    assert ev.status == ES.SUCCEEDED, ev.outcome
    for item in ev.items.all():
        assert item.status == IS.SUCCEEDED
        assert list(where(lab["hosts"], str(item.vm_uuid))) == [item.destination.name]  # libvirt says so
    for host in Host.objects.all():
        refresh(host)
    again = recommend("--balance")
    assert again["recommendations"] == [], again
    assert ours  # our guests were the ones on labh1

    # Consolidate: a host whose guests (only ours move, so the lab's own stay put) can go elsewhere.
    consolidate = recommend("--consolidate")
    ours_only = [r for r in consolidate["recommendations"] if r["moves"] and all(m["uuid"] in ours for m in r["moves"])]
    assert ours_only, consolidate
    rec = ours_only[0]
    ev = services.recommendation_apply(rec_id=rec["id"], actor=SYSTEM)
    ev.refresh_from_db()
    assert ev.status == ES.SUCCEEDED and ev.kind == "consolidate", ev.outcome
    emptied = next(h for h in lab["hosts"] if h["name"] == rec["power_off"])
    for m in rec["moves"]:
        assert list(where(lab["hosts"], m["uuid"])) == [m["to"]]
    assert not {m["uuid"] for m in rec["moves"]} & set(where_running(emptied))


def where_running(host: dict) -> list[str]:
    from hosts.adapters import libvirt as lv

    with lv.open_connection(host["libvirt_uri"]) as conn:
        return [d.UUIDString() for d in conn.listAllDomains(1)]
