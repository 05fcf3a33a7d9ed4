"""The tick over the fake fleet: a window's occurrence goes through its steps, each exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from calendar_app import services, ticker
from calendar_app.choices import OccurrenceStatusChoices as S, OnStartChoices
from calendar_app.models import WindowOccurrence
from core.actors import Actor
from core.models import AuditEvent
from hosts.models import Host, VirtualMachine
from maintenance.choices import EvacuationStatusChoices as ES

pytestmark = pytest.mark.django_db(transaction=True)


def window(pair, *, start_in=timedelta(minutes=40), length=timedelta(hours=2), cutoff=30, **kw):
    now = timezone.now()
    spec = services.WindowSpec(title="Firmware", hosts=[pair["a"]], start=now + start_in,
                               end=now + start_in + length, cutoff_minutes=cutoff, **kw)
    return services.window_create(spec=spec, actor=Actor.system())


def occ_of(w) -> WindowOccurrence:
    return WindowOccurrence.objects.get(window=w)


def test_an_occurrence_runs_dry_run_start_end_and_is_done(pair):
    w = window(pair)
    t = w.start
    assert ticker.calendar_tick(now=t - timedelta(minutes=45)) == {}  # not yet within the lead
    assert ticker.calendar_tick(now=t - timedelta(minutes=29)) == {occ_of(w).pk: ["check"]}
    assert occ_of(w).status == S.PREPARING and occ_of(w).warnings == []
    steps = ticker.calendar_tick(now=t + timedelta(seconds=5))
    assert steps == {occ_of(w).pk: ["start", "evacuated"]}
    occ = occ_of(w)
    assert occ.status == S.IN_MAINTENANCE and not occ.started_late
    run = occ.runs.get()
    assert run.evacuation.status == ES.SUCCEEDED
    assert Host.objects.get(pk=pair["a"].pk).in_maintenance
    assert set(VirtualMachine.objects.filter(host=pair["b"]).values_list("name", flat=True)) == {"app-1", "app-2"}
    assert ticker.calendar_tick(now=t + timedelta(minutes=100)) == {}  # host empty: no end-soon warning
    assert ticker.calendar_tick(now=w.end) == {occ.pk: ["end", "finish"]}
    occ = occ_of(w)
    assert occ.status == S.DONE, occ.outcome
    assert occ.runs.get().return_run.status == ES.SUCCEEDED
    assert set(VirtualMachine.objects.filter(host=pair["a"]).values_list("name", flat=True)) == {"app-1", "app-2"}
    assert not Host.objects.get(pk=pair["a"].pk).in_maintenance
    steps = list(AuditEvent.objects.filter(action="window.step").order_by("pk").values_list("parameters__step", flat=True))
    assert steps == ["start", "evacuated", "end", "finish"]


def test_each_step_is_claimed_once_even_when_two_ticks_see_it(pair):
    w = window(pair)
    ticker.materialise(w.start - timedelta(minutes=29))
    occ = occ_of(w)
    facts = ticker.facts_for(occ)
    from calendar_app import lifecycle

    step = lifecycle.next_step(facts, w.start - timedelta(minutes=29))
    assert step.name == "check"
    # Two processes read the same row and both try: exactly one wins.
    assert ticker.claim(occ, step, w.start) is True
    assert ticker.claim(occ, step, w.start) is False
    again = ticker.calendar_tick(now=w.start - timedelta(minutes=28))
    assert again == {}


def test_a_start_missed_past_the_cutoff_is_missed_and_nothing_moves(pair):
    w = window(pair, cutoff=30)
    assert ticker.calendar_tick(now=w.end - timedelta(minutes=10)) == {occ_of(w).pk: ["miss"]}
    occ = occ_of(w)
    assert occ.status == S.MISSED and "cutoff" in occ.outcome
    assert not Host.objects.get(pk=pair["a"].pk).in_maintenance
    assert AuditEvent.objects.filter(action="window.warning", message__contains="nothing was moved").exists()


def test_a_late_start_before_the_cutoff_says_so(pair):
    w = window(pair, cutoff=30)
    ticker.calendar_tick(now=w.start + timedelta(minutes=5))
    occ = occ_of(w)
    assert occ.status == S.IN_MAINTENANCE and occ.started_late
    assert [x["kind"] for x in occ.warnings] == ["late-start"]


def test_a_warn_only_window_moves_nothing(pair):
    w = window(pair, on_start=OnStartChoices.WARN)
    ticker.calendar_tick(now=w.start)
    assert occ_of(w).status == S.IN_MAINTENANCE
    assert not Host.objects.get(pk=pair["a"].pk).in_maintenance
    ticker.calendar_tick(now=w.end)
    assert occ_of(w).status == S.DONE


def test_a_cancelled_window_never_starts(pair):
    w = window(pair)
    ticker.calendar_tick(now=w.start - timedelta(minutes=29))
    services.window_cancel(window=w, actor=Actor.system())
    ticker.calendar_tick(now=w.start)
    assert occ_of(w).status == S.CANCELLED
    assert not Host.objects.get(pk=pair["a"].pk).in_maintenance


def test_the_dry_run_warns_of_a_guest_that_cannot_move(pair, world):
    from hosts.choices import DiskStorageChoices, VMStateChoices
    from hosts.models import VirtualDisk
    from tests.fakes.fleet import make_vm

    vm = make_vm(pair["a"], "local-1", state=VMStateChoices.RUNNING, memory_kib=1024 * 1024)
    VirtualDisk.objects.create(vm=vm, target="vda", device="disk", source_type="file",
                               source="/var/lib/libvirt/images/local-1.qcow2", format="qcow2",
                               storage=DiskStorageChoices.LOCAL)
    world.adopt(pair["a"], *[world.guest_of(v) for v in VirtualMachine.objects.filter(host=pair["a"])])
    w = window(pair)
    ticker.calendar_tick(now=w.start - timedelta(minutes=29))
    occ = occ_of(w)
    assert occ.status == S.PREPARING and occ.at_risk
    assert [x["kind"] for x in occ.warnings] == ["dry-run"]
    assert "local-1" in occ.warnings[0]["message"] and "copy-storage" in occ.warnings[0]["message"]
    assert AuditEvent.objects.filter(action="window.warning", message__contains="local-1").exists()
    # The banner of the inventory says it too, while there is time to act.
    from django.template import Context, Template

    banner = Template("{% load calendar_panels %}{% calendar_warnings %}").render(Context({}))
    assert "local-1" in banner and "Firmware" in banner
