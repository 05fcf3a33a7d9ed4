"""Host maintenance against the real lab: plan, evacuate labh1, bring its guests home, and a
worker that dies in the middle of an evacuation.

labh1 gets, for this module (made once, removed at the end wherever they ended up): four
heartbeat guests of our own, one shut-off guest with a writable disk on the shared storage and
one running guest with a writable local disk. Whatever else the lab runs on labh1 (its own
heartbeat guest) is part of the evacuation too. Where a guest runs is always asked of libvirt on
every lab host, never read from the portal's records.

Jobs run in-process right after each commit (test settings), as a worker would run them: the
items of an evacuation therefore run one after the other here; bench/evacuation.py measures the
concurrency with real workers.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import ServiceRefused
from hosts import leases
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.models import Host, VirtualMachine
from lab import guests as lab_guests
from lab import hosts as lab_hosts
from lab_support import SYSTEM, refresh, unique, where
from lab_support import onboarded  # noqa: F401 - fixture used by name
from maintenance import planning, queue, services
from maintenance.choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, ItemStatusChoices as IS
from maintenance.models import Evacuation
from migrations_app import reconciler, runner
from migrations_app.choices import MIGRATION_ACTIVE_STATES, MigrationStatusChoices as MS
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions, from_dict, libvirt_flags
from migrations_app.services import live, records

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

# The plan asks the hosts (migrations_app.gather_fleet.gather_evacuation) once that gather is
# merged; until then it is made from the inventory alone. Every assertion holds either way.
CHECK_HOSTS = True

HEARTBEAT_GUESTS = 4
CONCURRENCY = 2


class WorkerKilled(BaseException):
    """Stands for the worker process dying: not an Exception, so nothing in the job records an end."""


# --- lab set-up, once for the module ------------------------------------------------------------


@pytest.fixture(scope="module")
def guests(lab):
    """Our guests on labh1: {"heartbeat": [(name, uuid)…], "shared": (name, uuid), "local": (name, uuid)}."""
    home = lab["hosts"][0]
    specs = [lab_guests.GuestSpec(name=unique("evac-hb")).with_uuid() for _ in range(HEARTBEAT_GUESTS)]
    shared = lab_guests.GuestSpec(name=unique("evac-shared"), kind="shared-disk").with_uuid()
    local = lab_guests.GuestSpec(name=unique("evac-local"), kind="local-disk").with_uuid()
    try:
        since = time.time() - 1
        for spec in (*specs, local):
            lab_hosts.start_guest(home, spec)
        lab_hosts.start_guest(home, shared, start=False)  # defined, shut off
        lab_hosts.wait_heartbeats([s.name for s in specs], since=since, timeout=30)
        yield {"heartbeat": [(s.name, s.uuid) for s in specs], "shared": (shared.name, shared.uuid),
               "local": (local.name, local.uuid)}
    finally:
        for spec in (*specs, shared, local):
            lab_hosts.remove_guest(spec.name)


@pytest.fixture
def portal(lab, onboarded, guests, settings):
    """The lab hosts in the inventory (labh1 refreshed with our guests); the heartbeat probe on."""
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "lab.heartbeat:probe"
    home_lab = lab["hosts"][0]
    home = onboarded[home_lab["name"]]
    refresh(home)
    return {"lab": lab["hosts"], "home_lab": home_lab, "home": home, "rows": onboarded, "guests": guests}


# --- helpers ------------------------------------------------------------------------------------


def on_libvirt(lab_list: list[dict], uuids) -> dict[str, dict[str, str]]:
    """{uuid: {host: state}} for every guest, asked of libvirt on every lab host."""
    return {u: where(lab_list, u) for u in uuids}


def running_on(host: dict) -> set[str]:
    """UUIDs of the guests libvirt runs on ``host`` right now."""
    with lv.open_connection(host["libvirt_uri"]) as conn:
        return {d.UUIDString() for d in conn.listAllDomains(1)}  # VIR_CONNECT_LIST_DOMAINS_ACTIVE


def plan_for(host: Host) -> planning.EvacuationPlan:
    return planning.evacuation_plan(host=host, concurrency=CONCURRENCY, check_hosts=CHECK_HOSTS)


def home_guests(portal) -> dict[str, str]:
    """{uuid: state} of every guest the inventory has on labh1 before anything moves."""
    return {str(vm.uuid): vm.state for vm in VirtualMachine.objects.filter(host=portal["home"])}


def assert_settled(ev: Evacuation) -> None:
    ev.refresh_from_db()
    assert ev.is_terminal, (ev.status, ev.outcome)
    open_items = list(ev.items.filter(status__in=(IS.PENDING, IS.RUNNING)).values_list("vm_name", "status"))
    assert open_items == [], open_items
    active = list(Migration.objects.filter(status__in=MIGRATION_ACTIVE_STATES).values_list("pk", "vm_name", "status"))
    assert active == [], active


def bring_home(portal) -> Evacuation | None:
    home = Host.objects.get(pk=portal["home"].pk)
    back = services.maintenance_exit(host=home, actor=SYSTEM, concurrency=CONCURRENCY)
    if back is not None:
        assert_settled(back)
    return back


# --- tests --------------------------------------------------------------------------------------


def test_dry_run_enter_and_exit_move_every_guest_away_and_back(portal):
    lab_list, home_lab, home = portal["lab"], portal["home_lab"], portal["home"]
    local_name, local_uuid = portal["guests"]["local"]
    shared_name, shared_uuid = portal["guests"]["shared"]
    before = home_guests(portal)
    ours = [u for _, u in portal["guests"]["heartbeat"]] + [shared_uuid, local_uuid]
    assert set(ours) <= set(before), "the inventory of labh1 lacks our guests"
    assert before[shared_uuid] == "shutoff" and before[local_uuid] == "running"

    # The dry run: the local-disk guest is a blocker with its fix; every other guest is placed.
    plan = plan_for(home)
    rows = {r.uuid: r for r in plan.rows}
    assert set(rows) == set(before)
    assert [r.uuid for r in plan.blockers] == [local_uuid], [(r.name, r.blocker) for r in plan.blockers]
    blocker = rows[local_uuid].blocker
    assert blocker.check == "local-disk" and local_name in blocker.reason
    assert "shared storage" in blocker.remedy and "copy-storage" in blocker.remedy
    others = {lab_list[1]["name"], lab_list[2]["name"]}
    for uuid, row in rows.items():
        if uuid == local_uuid:
            continue
        assert row.destination in others, (row.name, row.action, row.destination, row.note)
        assert row.action == (IA.OFFLINE if before[uuid] == "shutoff" else IA.LIVE), (row.name, row.action)
    assert rows[shared_uuid].action == IA.OFFLINE
    assert Evacuation.objects.count() == 0 and not Host.objects.get(pk=home.pk).in_maintenance  # a dry run

    # Enter, two at a time.
    t0 = time.time()
    ev = services.evacuation_enter(host=home, actor=SYSTEM, concurrency=CONCURRENCY, plan=plan,
                                   expected_fingerprint=plan.fingerprint)
    assert_settled(ev)
    print(f"\nenter: {ev.status} in {time.time() - t0:.1f} s: {ev.outcome}")
    assert Host.objects.get(pk=home.pk).in_maintenance
    # The local-disk guest still runs there, so the host is not reported empty.
    assert ev.status == ES.INCOMPLETE, ev.outcome
    assert local_name in ev.outcome and f"still on {home_lab['name']}" in ev.outcome
    found = on_libvirt(lab_list, before)
    for uuid, state in before.items():
        item = ev.items.get(vm_uuid=uuid)
        if uuid == local_uuid:
            assert found[uuid] == {home_lab["name"]: "running"}
            assert item.status == IS.SKIPPED and item.blocked
            continue
        assert item.status == IS.SUCCEEDED, (item.vm_name, item.status, item.reason)
        # On exactly one host, the planned one, in the state it had.
        assert found[uuid] == {item.destination.name: "running" if state == "running" else "shutoff"}, found[uuid]
        m = item.migration
        assert m.status == MS.SUCCEEDED and m.destination_id == item.destination_id
        # The run checked the hosts once; each item re-checked only what can change.
        assert m.summary["check"]["mode"] == "re-check", (m.vm_name, m.summary["check"])
        if state == "running":
            print(f"  {item.vm_name} -> {item.destination.name}: total {m.total_time_ms} ms, downtime "
                  f"{m.downtime_ms} ms, heartbeat gap {m.heartbeat_gap_s} s ({m.heartbeat_beats} beats)")
            assert m.heartbeat_continuous is True, (m.vm_name, m.heartbeat_gap_s, m.heartbeat_beats)
            assert m.heartbeat_gap_s is not None and m.heartbeat_gap_s < 1.0, (m.vm_name, m.heartbeat_gap_s)
    assert found[shared_uuid] and home_lab["name"] not in found[shared_uuid]  # defined on another host
    assert running_on(home_lab) == {local_uuid}  # libvirt on labh1: nothing else runs there

    # A manual migration while the host is in maintenance: refused, towards it.
    moved_vm = VirtualMachine.objects.get(uuid=portal["guests"]["heartbeat"][0][1])
    with pytest.raises(ServiceRefused, match="in maintenance"):
        live.migration_request(vm=moved_vm, destination=Host.objects.get(pk=home.pk), options=MigrationOptions(),
                               actor=SYSTEM)

    # Exit: every guest it moved is back on labh1, each asked of libvirt.
    t0 = time.time()
    back = bring_home(portal)
    print(f"exit: {back.status} in {time.time() - t0:.1f} s: {back.outcome}")
    assert back.status == ES.SUCCEEDED, back.outcome
    assert not Host.objects.get(pk=home.pk).in_maintenance
    found = on_libvirt(lab_list, before)
    for uuid, state in before.items():
        assert found[uuid] == {home_lab["name"]: "running" if state == "running" else "shutoff"}, (uuid, found[uuid])
    for item in back.items.filter(action=IA.LIVE).select_related("migration"):
        assert item.migration.heartbeat_continuous is True and item.migration.heartbeat_gap_s < 1.0, item.vm_name
    # The way home gathered once too (the return plan asks no host), from each host towards labh1.
    assert back.facts_job is not None and back.facts_job.result["failed_sources"] == [], back.facts_job.log
    for item in back.items.filter(action__in=(IA.LIVE, IA.OFFLINE)).select_related("migration"):
        assert item.migration.summary["check"]["mode"] == "re-check", (item.vm_name, item.migration.summary["check"])


def test_a_worker_killed_mid_evacuation_is_settled_and_the_queue_goes_on(portal, monkeypatch):
    lab_list, home_lab, home = portal["lab"], portal["home_lab"], portal["home"]
    local_uuid = portal["guests"]["local"][1]
    before = home_guests(portal)
    real_run = runner.run_migration
    killed: list[int] = []

    def dies_once_libvirt_migrated(*, migration_id, ctx, on_progress=None):
        """The first live item's worker: asks libvirt to migrate, then dies before recording anything."""
        migration = Migration.objects.select_related("source", "destination").get(pk=migration_id)
        if killed or not migration.is_live:
            return real_run(migration_id=migration_id, ctx=ctx, on_progress=on_progress)
        killed.append(migration_id)
        flags = libvirt_flags(from_dict(migration.options))
        dest_uri = migration.destination.effective_libvirt_uri
        assert records.migration_begin(migration=migration, job=ctx.job)
        assert records.migration_migrating(migration=migration, flags=flags, params={}, dest_uri=dest_uri)
        source_lab = next(h for h in lab_list if h["name"] == migration.source.name)
        with lv.open_connection(source_lab["libvirt_uri"]) as conn:
            mg.migrate(conn, domain_uuid=str(migration.vm_uuid), dest_uri=dest_uri, flags=flags, params={})
        raise WorkerKilled(migration_id)

    monkeypatch.setattr(runner, "run_migration", dies_once_libvirt_migrated)
    plan = plan_for(home)
    with pytest.raises(WorkerKilled):
        services.evacuation_enter(host=home, actor=SYSTEM, concurrency=CONCURRENCY, plan=plan)
    ev = Evacuation.objects.get(host=home)
    dead = Migration.objects.get(pk=killed[0])
    # As the dead worker left it: the item running, its migration migrating, the guest already moved.
    assert ev.status == ES.RUNNING
    item = ev.items.get(migration=dead)
    assert item.status == IS.RUNNING and dead.status == MS.MIGRATING
    assert where(lab_list, str(dead.vm_uuid)) == {dead.destination.name: "running"}

    # Meanwhile the item holds the guest: a manual migration of it is refused, naming the holder.
    vm = VirtualMachine.objects.get(uuid=dead.vm_uuid)
    elsewhere = next(h for h in portal["rows"].values() if h.pk not in (home.pk, dead.destination_id))
    with pytest.raises(leases.GuestBusy) as busy:
        live.migration_request(vm=vm, destination=elsewhere, options=MigrationOptions(), actor=SYSTEM)
    assert f"migration #{dead.pk}" in busy.value.message, busy.value.message

    # Its worker is silent: the heartbeat it last wrote is older than the stale limit.
    long_ago = timezone.now() - timedelta(minutes=10)
    Migration.objects.filter(pk=dead.pk).update(heartbeat=long_ago, started=long_ago, migration_started=long_ago)
    # The sweeps: the reconciler (dispatch + settle from where the hosts say the guest runs), then the queue's.
    found = reconciler.migrations_reconcile()
    assert found["reconciling"] == 1, found
    queue.evacuations_advance_all()
    dead.refresh_from_db()
    print(f"\nreconciled: #{dead.pk} {dead.status}: {dead.outcome}")
    assert dead.status == MS.SUCCEEDED, (dead.outcome, dead.error)
    assert f"runs on {dead.destination.name}" in dead.outcome
    assert_settled(ev)
    print(f"evacuation: {ev.status}: {ev.outcome}")
    assert ev.status == ES.INCOMPLETE, ev.outcome  # only the local-disk guest is left, as planned
    found = on_libvirt(lab_list, before)
    for uuid, state in before.items():
        assert len(found[uuid]) == 1, (uuid, found[uuid])  # never on two hosts (nor lost)
        i = ev.items.get(vm_uuid=uuid)
        if uuid == local_uuid:
            assert found[uuid] == {home_lab["name"]: "running"} and i.status == IS.SKIPPED
        else:
            assert i.status == IS.SUCCEEDED, (i.vm_name, i.status, i.reason)
            assert list(found[uuid]) == [i.destination.name], (i.vm_name, found[uuid])
    assert running_on(home_lab) == {local_uuid}

    # And home again, so the module leaves labh1 as it found it.
    back = bring_home(portal)
    assert back.status == ES.SUCCEEDED, back.outcome
    found = on_libvirt(lab_list, before)
    for uuid in before:
        assert list(found[uuid]) == [home_lab["name"]], (uuid, found[uuid])
