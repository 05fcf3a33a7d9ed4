"""The rolling evacuation queue over the fake fleet: enter, items as real migrations, retry, pause,
cancel, exit and the way home — checked against where the fleet says each guest runs."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.errors import ServiceRefused
from hosts.models import Host
from maintenance import planning, services
from maintenance.choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, ItemStatusChoices as IS
from maintenance.models import Evacuation
from migrations_app.choices import MigrationStatusChoices as MS
from migrations_app.models import PreflightFacts

SYSTEM = Actor.system()


def _plan(evac, **kw):
    return planning.evacuation_plan(host=evac["a"], check_hosts=False, **kw)


def _enter(evac, capture, **kw):
    with capture(execute=True):
        return services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac, **kw), **kw)


def test_inventory_plan_places_blocks_and_keeps(evac):
    plan = _plan(evac)
    rows = {r.name: r for r in plan.rows}
    assert rows["web-1"].action == IA.LIVE and rows["web-2"].action == IA.LIVE
    assert {rows["web-1"].destination, rows["web-2"].destination} <= {"kvm-b", "kvm-c"}
    assert rows["cold-1"].action == IA.OFFLINE
    assert rows["local-1"].action == IA.STAY and rows["local-1"].blocker.check == "local-disk"
    assert "copy-storage" in rows["local-1"].blocker.remedy
    assert [r.name for r in plan.blockers] == ["local-1"]
    assert rows["local-1"].position == 4  # what stays comes last
    assert plan.estimated_s > 0 and plan.fingerprint == _plan(evac).fingerprint


def test_enter_moves_every_guest_it_can_and_ends_incomplete_naming_the_one_left(evac, world, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks)
    ev.refresh_from_db()
    assert Host.objects.get(pk=evac["a"].pk).in_maintenance
    assert ev.status == ES.INCOMPLETE, ev.outcome
    assert "local-1" in ev.outcome and "still on kvm-a" in ev.outcome
    items = {i.vm_name: i for i in ev.items.all()}
    for name in ("web-1", "web-2", "cold-1"):
        item = items[name]
        assert item.status == IS.SUCCEEDED, (name, item.reason)
        assert item.migration.status == MS.SUCCEEDED
        where = world.where(str(evac[name].uuid))
        assert list(where) == [item.destination.name], where  # on exactly one host, the planned one
    assert list(world.where(str(evac["local-1"].uuid))) == ["kvm-a"]
    assert items["local-1"].status == IS.SKIPPED and items["local-1"].blocked


def test_a_second_evacuation_of_the_same_host_is_refused(evac, django_capture_on_commit_callbacks):
    services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac))  # its queue has not run
    with pytest.raises(ServiceRefused, match="already being emptied"):
        services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac))
    assert Evacuation.objects.count() == 1


def test_exit_brings_every_moved_guest_home(evac, world, django_capture_on_commit_callbacks):
    _enter(evac, django_capture_on_commit_callbacks)
    plan = services.return_plan(host=Host.objects.get(pk=evac["a"].pk))
    assert sorted(r.name for r in plan.moves) == ["cold-1", "web-1", "web-2"]
    with django_capture_on_commit_callbacks(execute=True):
        back = services.maintenance_exit(host=Host.objects.get(pk=evac["a"].pk), actor=SYSTEM)
    back.refresh_from_db()
    assert back.status == ES.SUCCEEDED, back.outcome
    assert not Host.objects.get(pk=evac["a"].pk).in_maintenance
    for name in ("web-1", "web-2", "cold-1", "local-1"):
        assert list(world.where(str(evac[name].uuid))) == ["kvm-a"], name


def test_exit_without_returning_leaves_guests_where_they_are(evac, world, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks)
    where = {i.vm_name: i.destination.name for i in ev.items.filter(status=IS.SUCCEEDED)}
    with django_capture_on_commit_callbacks(execute=True):
        assert services.maintenance_exit(host=Host.objects.get(pk=evac["a"].pk), actor=SYSTEM, bring_back=False) is None
    for name, host in where.items():
        assert list(world.where(str(evac[name].uuid))) == [host]


def test_a_failed_item_is_retried_once_elsewhere(evac, world, monkeypatch, django_capture_on_commit_callbacks):
    from tests.fakes.fleet import migration_error

    only_web1 = [str(evac["web-2"].uuid), str(evac["cold-1"].uuid)]
    first = _plan(evac, excluded=only_web1)
    target = next(r.destination for r in first.rows if r.name == "web-1")
    real, calls = world.jobs.migrate, []

    def fail_once(source, domain_uuid, **kw):
        calls.append(source.name)
        world.jobs.fail_with = migration_error("connection reset by peer") if len(calls) == 1 else None
        return real(source, domain_uuid, **kw)

    monkeypatch.setattr(world.jobs, "migrate", fail_once)
    with django_capture_on_commit_callbacks(execute=True):
        ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=first, excluded=only_web1)
    ev.refresh_from_db()
    item = ev.items.get(vm_name="web-1")
    assert len(calls) == 2
    assert item.attempts == 2 and item.status == IS.SUCCEEDED, item.reason
    assert item.tried == [target] and item.destination.name != target
    assert list(world.where(str(evac["web-1"].uuid))) == [item.destination.name]
    # The failed migration forgot what the run's check had proved of that pair: the next one checks it in full.
    assert not PreflightFacts.objects.filter(source=evac["a"], destination__name=target).exists()


def test_pause_stops_new_items_and_resume_continues(evac, world, django_capture_on_commit_callbacks, check_hosts_for_run):
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac))  # nothing ran yet
    services.evacuation_pause(evacuation=ev, actor=SYSTEM)
    check_hosts_for_run(ev)  # its end advances the queue: paused, nothing starts
    with django_capture_on_commit_callbacks(execute=True):
        pass
    from maintenance.queue import evacuation_advance

    with django_capture_on_commit_callbacks(execute=True):
        evacuation_advance(ev.pk)
    assert ev.items.filter(status=IS.RUNNING).count() == 0
    assert set(world.where(str(evac["web-1"].uuid))) == {"kvm-a"}
    with django_capture_on_commit_callbacks(execute=True):
        services.evacuation_resume(evacuation=ev, actor=SYSTEM)
    ev.refresh_from_db()
    assert ev.status == ES.INCOMPLETE


def test_cancel_before_anything_ran_leaves_every_guest_home(evac, world, django_capture_on_commit_callbacks):
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac))
    with django_capture_on_commit_callbacks(execute=True):
        services.evacuation_cancel(evacuation=ev, actor=SYSTEM)
    ev.refresh_from_db()
    assert ev.status == ES.CANCELLED, ev.outcome
    for name in ("web-1", "web-2", "cold-1", "local-1"):
        assert list(world.where(str(evac[name].uuid))) == ["kvm-a"]


def test_a_guest_shut_down_for_maintenance_is_started_again_at_exit(evac, world, django_capture_on_commit_callbacks):
    local = str(evac["local-1"].uuid)
    plan = _plan(evac, shutdown=[local])
    row = next(r for r in plan.rows if r.uuid == local)
    assert row.action == IA.SHUTDOWN and row.blocker is None
    with django_capture_on_commit_callbacks(execute=True):
        ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan, shutdown=[local])
    ev.refresh_from_db()
    assert ev.status == ES.SUCCEEDED, ev.outcome  # nothing left running on kvm-a
    assert "kvm-a is empty" in ev.outcome
    assert world.where(local) == {"kvm-a": "shutoff"}
    back_plan = services.return_plan(host=Host.objects.get(pk=evac["a"].pk))
    assert [r.action for r in back_plan.rows if r.uuid == local] == [IA.START]
    with django_capture_on_commit_callbacks(execute=True):
        back = services.maintenance_exit(host=Host.objects.get(pk=evac["a"].pk), actor=SYSTEM)
    back.refresh_from_db()
    assert back.status == ES.SUCCEEDED, back.outcome
    assert world.where(local) == {"kvm-a": "running"}


def test_a_manual_migration_of_a_guest_the_evacuation_is_moving_is_refused(evac, world, django_capture_on_commit_callbacks, check_hosts_for_run):
    from hosts.leases import GuestBusy
    from migrations_app.options import MigrationOptions
    from migrations_app.services.live import migration_request
    from maintenance.queue import evacuation_advance

    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac))
    check_hosts_for_run(ev)
    evacuation_advance(ev.pk)  # starts the first items; their jobs wait for the commit that never comes here
    running = ev.items.filter(status=IS.RUNNING).first()
    assert running is not None
    vm = evac[running.vm_name]
    with pytest.raises(GuestBusy, match=f"migration #{running.migration_id}"):
        migration_request(vm=vm, destination=evac["c"], options=MigrationOptions(), actor=SYSTEM)


def test_pins_host_devices_and_anti_affinity_from_the_inventory_shape_the_plan(evac):
    from hosts.models import VirtualMachine
    from tests.fakes.fleet import make_vm

    VirtualMachine.objects.filter(pk=evac["web-1"].pk).update(pinned=True)
    VirtualMachine.objects.filter(pk=evac["web-2"].pk).update(anti_affinity=["db"])
    make_vm(evac["b"], "db-9", anti_affinity=["db"])  # kvm-b already runs a member of group db
    VirtualMachine.objects.filter(pk=evac["cold-1"].pk).update(pin_to="kvm-c")
    rows = {r.name: r for r in _plan(evac).rows}
    assert rows["web-1"].blocker.check == "pinned"
    assert rows["web-2"].destination == "kvm-c"  # spread would pick kvm-b (more free), anti-affinity forbids
    assert rows["cold-1"].destination == "kvm-c"
    VirtualMachine.objects.filter(pk=evac["web-1"].pk).update(pinned=False, host_devices=1)
    blocker = {r.name: r for r in _plan(evac).rows}["web-1"].blocker
    assert blocker.check == "pinned" and "1 passed-through host device(s)" in blocker.reason
    assert "Remove the pin" not in blocker.remedy


def test_an_item_whose_guest_is_busy_waits_and_then_finds_it_moved(evac, world, django_capture_on_commit_callbacks, check_hosts_for_run):
    from migrations_app.options import MigrationOptions
    from migrations_app.services.live import migration_request
    from maintenance.queue import evacuation_advance

    only = [str(evac[n].uuid) for n in ("web-2", "cold-1", "local-1")]
    manual = migration_request(vm=evac["web-1"], destination=evac["c"], options=MigrationOptions(), actor=SYSTEM)
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=_plan(evac, excluded=only), excluded=only)
    check_hosts_for_run(ev)
    evacuation_advance(ev.pk)
    item = ev.items.get(vm_name="web-1")
    assert item.status == IS.PENDING and item.attempts == 0
    assert item.reason.startswith("Waiting:") and f"#{manual.pk}" in item.reason
    with django_capture_on_commit_callbacks(execute=True):  # the manual migration runs and ends
        from migrations_app.services.slots import migrations_dispatch
        migrations_dispatch()
    manual.refresh_from_db()
    assert manual.status == MS.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=True):
        evacuation_advance(ev.pk)  # what the sweep does
    item.refresh_from_db()
    ev.refresh_from_db()
    assert item.status == IS.SKIPPED and "Now on kvm-c" in item.reason
    assert ev.status == ES.SUCCEEDED and list(world.where(str(evac["web-1"].uuid))) == ["kvm-c"]


def test_the_estimate_counts_the_hosts_outgoing_slots(evac, settings):
    settings.VMPORTAL_MAX_OUTGOING = 1
    one = _plan(evac, concurrency=1)
    four = _plan(evac, concurrency=4)
    assert four.estimated_s == one.estimated_s
    assert "at most 1 migration(s) from a host at once" in four.estimate_basis
    settings.VMPORTAL_MAX_OUTGOING = 4
    assert _plan(evac, concurrency=4).estimated_s < one.estimated_s


def test_the_checked_plan_asks_each_host_once_and_a_failed_preflight_vetoes_that_host(evac, world):
    world["kvm-b"].mounts.clear()  # kvm-b no longer mounts the share the guests' disks are on
    opened = []
    real = world.session_for
    world.session_for = lambda host: (opened.append(host.name), real(host))[1]
    from hosts import access

    with access.override(world.session_for):
        plan = planning.evacuation_plan(host=evac["a"])
    assert plan.checked and sorted(opened) == ["kvm-a", "kvm-b", "kvm-c"]
    rows = {r.name: r for r in plan.rows}
    # kvm-b has more room (spread would choose it) but its preflight fails: everything goes to kvm-c.
    assert rows["web-1"].destination == "kvm-c" and rows["web-2"].destination == "kvm-c"
    assert rows["cold-1"].destination == "kvm-c"
    assert rows["web-1"].verdicts and all(v.status != "fail" for v in rows["web-1"].verdicts)
    assert not any("CPU compatibility" in w for w in rows["web-1"].warnings)  # the hosts were asked
    checks = {v.check: v.status for v in rows["web-1"].verdicts}
    assert checks and all(status != "fail" for status in checks.values())
    assert rows["local-1"].blocker.check == "local-disk"


def test_a_guest_every_preflight_refuses_is_blocked_with_the_preflights_fix(evac, world):
    world["kvm-b"].mounts.clear()
    world["kvm-c"].mounts.clear()
    row = {r.name: r for r in planning.evacuation_plan(host=evac["a"]).rows}["web-1"]
    assert row.action == IA.STAY and row.blocker.check == "no-destination"
    assert "kvm-b" in row.blocker.reason and "kvm-c" in row.blocker.reason
    assert row.blocker.remedy  # what the storage check says to do, not a generic line
    assert "Fix one of these hosts" not in row.blocker.remedy


def test_confirming_keeps_the_plan_shown_while_it_still_fits(evac):
    from hosts.models import HostFacts

    shown = _plan(evac)
    keep = {r.uuid: r.destination for r in shown.rows if r.destination}
    assert set(keep.values()) == {"kvm-b"}  # spread: kvm-b has 6 GiB free, kvm-c 4
    HostFacts.objects.filter(host=evac["c"]).update(memory_free_kib=7 * 1024 * 1024)  # free memory moved
    assert _plan(evac).fingerprint != shown.fingerprint  # a fresh look would now choose kvm-c
    kept = _plan(evac, keep=keep)
    assert kept.fingerprint == shown.fingerprint and not any(r.overridden for r in kept.rows)
    HostFacts.objects.filter(host=evac["b"]).update(memory_free_kib=512 * 1024)  # no longer fits there
    assert _plan(evac, keep=keep).fingerprint != shown.fingerprint  # the confirm is refused
