"""The periodic sweep (every 10 s in watch_hosts) is cheap when there is nothing to do."""

import time

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.registry import PeriodicSchedule, periodic_tasks

pytestmark = pytest.mark.django_db

# Reconcilers and sweeps that must run every 10 s at most.
SETTLING = {"migrations.reconcile", "maintenance.advance", "storage.reconcile"}


def test_the_settling_sweeps_run_every_10_s_and_an_idle_pass_is_a_few_queries():
    tasks = {task.name: task for task in periodic_tasks()}
    assert SETTLING <= set(tasks)
    assert all(tasks[name].interval_s() <= 10 for name in SETTLING)
    assert settings.VMPORTAL_MIGRATION_RECONCILE_SECONDS == 10

    schedule = PeriodicSchedule([tasks[name] for name in sorted(SETTLING)], now=0.0)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        assert set(schedule.run_due(0.0)) == SETTLING
    took_ms = (time.perf_counter() - started) * 1000
    print(f"idle settling sweep: {len(queries)} queries, {took_ms:.1f} ms")
    assert len(queries) <= 12, [q["sql"] for q in queries]
