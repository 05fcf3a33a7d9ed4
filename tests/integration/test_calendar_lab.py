"""Maintenance windows against the real lab: a window made with the CLI that starts a minute
from now empties labh1 at its start and brings the guests home at its end, driven by the
portal's own periodic schedule; and a window whose start the scheduler missed (late start
before the cutoff, missed after it).

labh1 gets two heartbeat guests of our own for this module (removed at the end wherever they
are); the lab's own guests there take part too. Where a guest runs is asked of libvirt on every
lab host. Jobs run in-process right after each commit (test settings), as a worker would.
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from calendar_app import services, ticker
from calendar_app.choices import OccurrenceStatusChoices as S
from calendar_app.models import MaintenanceWindow, WindowOccurrence
from core.registry import PeriodicSchedule, periodic_tasks
from hosts.adapters import libvirt as lv
from hosts.models import Host, VirtualMachine
from lab import guests as lab_guests
from lab import hosts as lab_hosts
from lab_support import SYSTEM, refresh, unique
from lab_support import onboarded  # noqa: F401 - fixture used by name
from maintenance.models import Evacuation
from migrations_app.choices import MigrationStatusChoices as MS
from migrations_app.models import Migration

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

HEARTBEAT_GUESTS = 2


@pytest.fixture(scope="module")
def guests(lab):
    home = lab["hosts"][0]
    specs = [lab_guests.GuestSpec(name=unique("cal-hb")).with_uuid() for _ in range(HEARTBEAT_GUESTS)]
    try:
        since = time.time() - 1
        for spec in specs:
            lab_hosts.start_guest(home, spec)
        lab_hosts.wait_heartbeats([s.name for s in specs], since=since, timeout=30)
        yield [(s.name, s.uuid) for s in specs]
    finally:
        for spec in specs:
            lab_hosts.remove_guest(spec.name)


@pytest.fixture
def portal(lab, onboarded, guests, settings):
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "lab.heartbeat:probe"
    settings.VMPORTAL_CALENDAR_TICK_SECONDS = 1
    home_lab = lab["hosts"][0]
    home = onboarded[home_lab["name"]]
    refresh(home)
    return {"lab": lab["hosts"], "home_lab": home_lab, "home": home, "guests": guests}


def running_on(host: dict) -> set[str]:
    with lv.open_connection(host["libvirt_uri"]) as conn:
        return {d.UUIDString() for d in conn.listAllDomains(1)}  # active domains only


def run_schedule_until(condition, *, timeout: float) -> None:
    """The portal's periodic work (the calendar's tick and the evacuation sweep), as watch_hosts runs it,
    until ``condition()`` holds."""
    tasks = [t for t in periodic_tasks() if t.name in ("calendar.tick", "maintenance.advance")]
    assert {t.name for t in tasks} == {"calendar.tick", "maintenance.advance"}
    schedule = PeriodicSchedule(tasks, now=time.monotonic())
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        schedule.run_due(time.monotonic())
        idle.wait(0.2)  # the loop's own pace between two passes, as in hosts.watcher


def occurrence_of(window_id: int) -> WindowOccurrence | None:
    return WindowOccurrence.objects.filter(window_id=window_id).order_by("start").first()


def gaps_of(evacuation: Evacuation) -> list[tuple[str, float | None]]:
    return [(i.vm_name, i.migration.heartbeat_gap_s) for i in evacuation.items.select_related("migration")
            if i.migration_id and i.migration.status == MS.SUCCEEDED and i.vm_state == "running"]


def test_window_made_with_the_cli_empties_the_host_at_its_start_and_brings_guests_home_at_its_end(portal):
    home_lab, lab_list = portal["home_lab"], portal["lab"]
    before = running_on(home_lab)
    ours = {u for _, u in portal["guests"]}
    assert ours <= before
    t0 = timezone.now().replace(microsecond=0)
    start, end = t0 + timedelta(seconds=60), t0 + timedelta(seconds=150)
    out = io.StringIO()
    call_command("maintenance_window", "add", "--title", "Firmware update",
                 "--hosts", home_lab["name"], "--start", start.isoformat(), "--end", end.isoformat(),
                 "--cutoff", "0", "--json", stdout=out)
    made = json.loads(out.getvalue())
    assert made["next"] == {"start": start.astimezone(UTC).isoformat(), "end": end.astimezone(UTC).isoformat()}
    assert made["uid"] and made["id"]

    # The dry run comes first (within the lead): every guest can move, so no warning.
    run_schedule_until(lambda: (o := occurrence_of(made["id"])) is not None and o.status == S.PREPARING, timeout=120)
    occ = occurrence_of(made["id"])
    assert occ.warnings == [], occ.warnings
    assert not Host.objects.get(pk=portal["home"].pk).in_maintenance

    run_schedule_until(lambda: occurrence_of(made["id"]).status not in (S.SCHEDULED, S.PREPARING, S.EVACUATING),
                       timeout=400)
    occ = occurrence_of(made["id"])
    assert occ.status == S.IN_MAINTENANCE, (occ.status, occ.warnings)
    assert occ.started_at >= start and not occ.started_late
    assert running_on(home_lab) == set(), running_on(home_lab)  # libvirt: nothing runs on labh1
    for uuid in before:
        found = [h["name"] for h in lab_list[1:] if uuid in running_on(h)]
        assert len(found) == 1, (uuid, found)
    run = occ.runs.get()
    enter_gaps = gaps_of(run.evacuation)
    print(f"\nenter: {run.evacuation.status}: {run.evacuation.outcome} gaps {enter_gaps}")
    assert len(enter_gaps) == len(before)
    assert all(g is not None and g < 1.0 for _, g in enter_gaps), enter_gaps

    run_schedule_until(lambda: occurrence_of(made["id"]).is_terminal, timeout=400)
    occ = occurrence_of(made["id"])
    assert occ.status == S.DONE, (occ.status, occ.outcome, occ.warnings)
    assert timezone.now() >= end
    assert running_on(home_lab) == before  # every guest is home, asked of libvirt
    run = occ.runs.get()
    back_gaps = gaps_of(run.return_run)
    print(f"return: {run.return_run.status}: {run.return_run.outcome} gaps {back_gaps}; "
          f"occurrence {occ.started_at:%H:%M:%S}–{occ.ended_at:%H:%M:%S} (window {start:%H:%M:%S}–{end:%H:%M:%S})")
    assert all(g is not None and g < 1.0 for _, g in back_gaps), back_gaps
    assert not Host.objects.get(pk=portal["home"].pk).in_maintenance


def _window(portal, *, minutes: int, cutoff: int) -> MaintenanceWindow:
    now = timezone.now()
    spec = services.WindowSpec(title=unique("cal-late"), hosts=[portal["home"]], start=now + timedelta(seconds=2),
                               end=now + timedelta(minutes=minutes), cutoff_minutes=cutoff)
    return services.window_create(spec=spec, actor=SYSTEM)


def test_a_start_the_scheduler_missed_starts_late_before_the_cutoff_and_is_missed_after_it(portal):
    home_lab = portal["home_lab"]
    before = running_on(home_lab)
    # The scheduler is down over the start; it comes back 90 s later, well before the cutoff.
    late = _window(portal, minutes=20, cutoff=10)
    ticker.calendar_tick(now=late.start + timedelta(seconds=90))
    occ = occurrence_of(late.pk)
    assert occ.status == S.IN_MAINTENANCE and occ.started_late, (occ.status, occ.warnings)
    assert any(w["kind"] == "late-start" for w in occ.warnings)
    assert running_on(home_lab) == set()
    ticker.calendar_tick(now=late.end)
    occ = occurrence_of(late.pk)
    assert occ.status == S.DONE, (occ.status, occ.outcome)
    assert running_on(home_lab) == before

    # Down over the start and past the cutoff: missed, nothing moves, the audit says why.
    evacuations = Evacuation.objects.count()
    missed = _window(portal, minutes=20, cutoff=10)
    ticker.calendar_tick(now=missed.end - timedelta(minutes=9))
    occ = occurrence_of(missed.pk)
    assert occ.status == S.MISSED and "cutoff" in occ.outcome
    assert Evacuation.objects.count() == evacuations
    assert running_on(home_lab) == before
    assert not Host.objects.get(pk=portal["home"].pk).in_maintenance
    from core.models import AuditEvent

    assert AuditEvent.objects.filter(target_type="maintenancewindow", target_id=str(missed.pk),
                                     message__contains="missed").exists()
