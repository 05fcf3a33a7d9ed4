"""core.registry: what higher apps add to the watch_hosts loop and to worker start."""

from __future__ import annotations

import pytest

from core import registry
from core.registry import PeriodicSchedule, PeriodicTask


@pytest.fixture
def clean_registry(monkeypatch):
    """An empty registry for the test; the apps' own registrations come back afterwards."""
    monkeypatch.setattr(registry, "_periodic", {})
    monkeypatch.setattr(registry, "_worker_start", {})


def _schedule(calls: list, *intervals: float, now: float = 0.0) -> PeriodicSchedule:
    tasks = [
        PeriodicTask(name=f"t{i}", func=lambda i=i: calls.append(f"t{i}"), every_s=every)
        for i, every in enumerate(intervals)
    ]
    return PeriodicSchedule(tasks, now=now)


@pytest.mark.parametrize(
    "intervals, ticks, expected",
    [
        # Every task runs at once when the loop starts, then at its own interval.
        ((30,), [0], [["t0"]]),
        ((30,), [0, 10, 29.9, 30, 45, 60], [["t0"], [], [], ["t0"], [], ["t0"]]),
        ((10, 25), [0, 10, 20, 25, 30, 50], [["t0", "t1"], ["t0"], ["t0"], ["t1"], ["t0"], ["t0", "t1"]]),
        # A late tick runs a task once, not once per missed interval, and counts from then.
        ((10,), [0, 95, 100, 105], [["t0"], ["t0"], [], ["t0"]]),
        ((), [0, 100], [[], []]),
    ],
)
def test_periodic_schedule(intervals, ticks, expected):
    calls: list[str] = []
    schedule = _schedule(calls, *intervals, now=ticks[0])
    ran = [schedule.run_due(t) for t in ticks]
    assert ran == expected
    assert calls == [name for names in expected for name in names]


def test_a_failing_periodic_task_is_logged_and_the_others_still_run(caplog):
    calls = []

    def boom():
        raise RuntimeError("redis down")

    schedule = PeriodicSchedule(
        [PeriodicTask("boom", boom, every_s=5), PeriodicTask("ok", lambda: calls.append("ok"), every_s=5)], now=0
    )
    assert schedule.run_due(0) == ["boom", "ok"]
    assert calls == ["ok"]
    assert "periodic task boom failed" in caplog.text
    # It waits its interval like any other task, not retried on every tick.
    assert schedule.run_due(1) == []
    assert schedule.run_due(5) == ["boom", "ok"]


def test_an_interval_given_as_a_callable_is_read_when_scheduling():
    seconds = {"every": 10}
    calls = []
    schedule = PeriodicSchedule([PeriodicTask("t", lambda: calls.append(1), every_s=lambda: seconds["every"])], now=0)
    seconds["every"] = 50
    schedule.run_due(0)
    assert schedule.run_due(49) == [] and schedule.run_due(50) == ["t"]


def test_register_periodic_replaces_a_task_of_the_same_name(clean_registry):
    first, second = (lambda: 1), (lambda: 2)
    registry.register_periodic("x.sweep", first, every_s=10)
    registry.register_periodic("x.sweep", second, every_s=20)
    registry.register_periodic("y.sweep", first, every_s=5)
    tasks = registry.periodic_tasks()
    assert [(t.name, t.func, t.interval_s()) for t in tasks] == [("x.sweep", second, 20.0), ("y.sweep", first, 5.0)]


def test_worker_start_hooks_run_once_each_in_order_and_survive_a_failure(clean_registry, caplog):
    order = []

    def first():
        order.append("first")

    def broken():
        raise RuntimeError("db down")

    def last():
        order.append("last")

    for hook in (first, broken, last, first):
        registry.register_worker_start(hook)
    assert registry.run_worker_start_hooks() == 1
    assert order == ["first", "last"]
    assert "worker-start hook" in caplog.text and "broken" in caplog.text


def test_the_migrations_app_registers_its_reconciler(db):
    from migrations_app.apps import reconcile_migrations

    assert reconcile_migrations in registry.worker_start_hooks()
    (task,) = [t for t in registry.periodic_tasks() if t.name == "migrations.reconcile"]
    assert task.func is reconcile_migrations


def test_the_reconcile_interval_follows_the_setting(settings):
    (task,) = [t for t in registry.periodic_tasks() if t.name == "migrations.reconcile"]
    settings.VMPORTAL_MIGRATION_RECONCILE_SECONDS = 7
    assert task.interval_s() == 7.0


def test_the_worker_runs_the_hooks_before_taking_jobs(clean_registry, monkeypatch):
    import rq

    from core.worker import PortalWorker

    order = []
    registry.register_worker_start(lambda: order.append("hook"))
    monkeypatch.setattr(rq.Worker, "work", lambda self, *a, **k: order.append("work") or "worked")
    assert object.__new__(PortalWorker).work(burst=True) == "worked"
    assert order == ["hook", "work"]
