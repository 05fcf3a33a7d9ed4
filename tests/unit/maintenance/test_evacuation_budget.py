"""Each host's guest budget (hosts.HostBudget) bounds the evacuation plan, the retry's fresh
placement and the way home, over the fake fleet; the blocker says which budget and how to raise it."""

from __future__ import annotations

from core.actors import Actor
from hosts.models import Host, HostBudget, VirtualMachine
from maintenance import planning, services
from maintenance.choices import ItemActionChoices as IA
from migrations_app import placement

GIB = 1024 * 1024  # KiB

SYSTEM = Actor.system()


def _rows(evac):
    return {r.name: r for r in planning.evacuation_plan(host=evac["a"], check_hosts=False).rows}


def test_the_plan_sends_no_guest_past_a_hosts_memory_budget(evac):
    # kvm-b has the most free memory (spread picks it), but its budget holds one 1 GiB guest only
    HostBudget.objects.create(host=evac["b"], guest_memory_mib=1536)
    rows = _rows(evac)
    assert sorted([rows["web-1"].destination, rows["web-2"].destination]) == ["kvm-b", "kvm-c"]
    HostBudget.objects.create(host=evac["c"], guest_memory_mib=512)
    rows = _rows(evac)
    moved = [n for n in ("web-1", "web-2") if rows[n].action == IA.LIVE]
    assert [rows[n].destination for n in moved] == ["kvm-b"]
    (stuck,) = {"web-1", "web-2"} - set(moved)
    blocker = rows[stuck].blocker
    assert rows[stuck].action == IA.STAY and blocker.check == "budget"
    assert "kvm-b's memory budget for guests (1.5 GiB) has 0.5 GiB left" in blocker.reason
    assert "kvm-c's memory budget for guests (0.5 GiB)" in blocker.reason
    assert "python manage.py host_capacity kvm-b" in blocker.remedy and "Edit capacity" in blocker.remedy
    assert rows["cold-1"].action == IA.OFFLINE  # shut off: takes none of a budget


def test_the_guests_running_there_count_against_the_budget(evac):
    from tests.fakes.fleet import make_vm

    make_vm(evac["b"], "busy", memory_kib=3 * GIB)
    make_vm(evac["c"], "busy-c", memory_kib=3 * GIB)
    HostBudget.objects.create(host=evac["b"], guest_memory_mib=3 * 1024)
    HostBudget.objects.create(host=evac["c"], guest_memory_mib=3 * 1024)
    rows = _rows(evac)
    assert rows["web-1"].blocker.check == "budget" and "has 0.0 GiB left" in rows["web-1"].blocker.reason


def test_the_vcpu_budget_bounds_the_plan(evac):
    for h in (evac["b"], evac["c"]):
        HostBudget.objects.create(host=h, vcpu_ratio=0.1)  # 8 CPUs × 0.1 = 0 vCPUs: no bound known
    assert _rows(evac)["web-1"].action == IA.LIVE
    VirtualMachine.objects.filter(name__in=["web-1", "web-2"]).update(vcpus=2)
    HostBudget.objects.filter(host__in=[evac["b"], evac["c"]]).update(vcpu_ratio=0.125)  # 1 vCPU each
    row = _rows(evac)["web-1"]
    assert row.blocker.check == "budget" and "vCPU budget (1) has 1 vCPU(s) left; the guest has 2" in row.blocker.reason


def test_a_retry_counts_what_the_evacuation_still_sends_against_the_budget(evac):
    HostBudget.objects.create(host=evac["b"], guest_memory_mib=1536)
    vm = evac["web-1"]
    fresh = planning.replacement_for(vm=vm, evacuated=evac["a"], tried=["kvm-c"], pending={})
    assert fresh.outcome == placement.OUTCOME_MOVE and fresh.destination == "kvm-b"
    fresh = planning.replacement_for(vm=vm, evacuated=evac["a"], tried=["kvm-c"], pending={"kvm-b": GIB})
    assert fresh.outcome == placement.OUTCOME_BLOCKED and fresh.blocker.check == "budget"


def test_the_way_home_keeps_the_home_host_within_its_budget(evac, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.evacuation_enter(host=evac["a"], actor=SYSTEM,
                                  plan=planning.evacuation_plan(host=evac["a"], check_hosts=False))
    home = Host.objects.get(pk=evac["a"].pk)
    assert sorted(r.name for r in services.return_plan(host=home).moves) == ["cold-1", "web-1", "web-2"]
    # local-1 (1 GiB) still runs at home: a 2.5 GiB budget leaves room for one of the two web guests
    HostBudget.objects.create(host=home, guest_memory_mib=2560)
    plan = services.return_plan(host=home)
    back = sorted(r.name for r in plan.moves)
    assert len(back) == 2 and "cold-1" in back  # shut off: takes none of the budget
    (stuck,) = [r for r in plan.rows if r.action == IA.STAY and r.name.startswith("web-")]
    assert "kvm-a would have 0.5 GiB left of its memory budget for guests" in stuck.note
    assert "python manage.py host_capacity kvm-a" in stuck.remedy
