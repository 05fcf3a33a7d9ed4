"""Two evacuations of one host asked for at the same moment: exactly one proceeds, the other is told why.

Real concurrency (tests/race_support.py): each request on its own connection, released together.
The partial unique constraint on active evacuations per host decides, not the check before it.
tests/integration/test_postgres.py runs this file on PostgreSQL too.
"""

from __future__ import annotations

import pytest
from tests.fakes.fleet import make_host, make_vm
from tests.race_support import connections_for_race

from core.actors import Actor
from core.errors import ServiceRefused
from hosts.models import Host
from maintenance import planning, services
from maintenance.models import Evacuation

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_evacuations_of_one_host_at_once_exactly_one_proceeds(tmp_path, monkeypatch):
    src, _dst = make_host("kvm-a"), make_host("kvm-b")
    make_vm(src, "web-1")
    plan = planning.evacuation_plan(host=src, check_hosts=False)
    # Both got past the "already being emptied?" check before either inserted: the database decides.
    monkeypatch.setattr(services, "active_evacuation", lambda host: None)
    monkeypatch.setattr(services, "_advance_on_commit", lambda ev, **kw: None)  # no host to move anything on
    threads = connections_for_race(tmp_path)

    def enter():
        return services.evacuation_enter(host=Host.objects.get(pk=src.pk), actor=Actor.system(), plan=plan)

    results = threads.race([enter, enter])
    won = [r for r in results if isinstance(r, Evacuation)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], ServiceRefused) and "already being emptied" in lost[0].message
    assert threads.run(lambda: (Evacuation.objects.count(), Evacuation.objects.get().items.count())) == (1, 1)
