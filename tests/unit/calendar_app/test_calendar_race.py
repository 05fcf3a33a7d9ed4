"""Two processes ticking at the same moment: each occurrence is made once and each step taken once.

Real concurrency (tests/race_support.py): each tick on its own connection, released together.
The unique (window, start) constraint and the compare-and-set on the occurrence decide.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from tests.fakes.fleet import make_host
from tests.race_support import connections_for_race

from calendar_app import services, ticker
from calendar_app.choices import OccurrenceStatusChoices as S, OnStartChoices
from calendar_app.models import WindowOccurrence
from core.actors import Actor
from core.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("on_start,at,expected", [
    (OnStartChoices.EVACUATE, "past the cutoff", (S.MISSED, ["miss"])),
    (OnStartChoices.WARN, "at the start", (S.IN_MAINTENANCE, ["start"])),
])
def test_two_ticks_at_once_take_each_step_once(tmp_path, on_start, at, expected):
    host = make_host("kvm-a")
    now = timezone.now()
    w = services.window_create(spec=services.WindowSpec(
        title="Firmware", hosts=[host], start=now + timedelta(hours=1), end=now + timedelta(hours=3),
        cutoff_minutes=30, on_start=on_start), actor=Actor.system())
    when = w.end - timedelta(minutes=10) if at == "past the cutoff" else w.start
    threads = connections_for_race(tmp_path)
    results = threads.race([lambda: ticker.calendar_tick(now=when)] * 3)
    assert not [r for r in results if isinstance(r, Exception)], results
    taken = [steps for r in results for steps in r.values()]
    assert taken == [expected[1]], results  # one tick took the step, the others found nothing to do

    def state():
        occs = list(WindowOccurrence.objects.filter(window=w))
        return ([o.status for o in occs], len(occs[0].warnings),
                AuditEvent.objects.filter(action="window.step").count())

    assert threads.run(state) == ([expected[0]], 1, 1)
