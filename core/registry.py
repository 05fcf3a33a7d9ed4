"""What the apps built on core add to its long-running processes.

``core`` and ``hosts`` never import the apps above them (``storage``, ``migrations_app``…).
Those apps contribute their background work here instead, from their ``AppConfig.ready()``
(the way Django's admin autodiscovers and NetBox plugins register):

- periodic work, run by the ``watch_hosts`` loop (hosts.watcher): once when the loop starts
  (a restart is when work is likeliest to be left over), then every ``every_s`` seconds;
- worker-start hooks, run by every RQ worker (core.worker.PortalWorker) before it takes jobs.

Both only find and queue work (database and Redis): anything that talks to a host runs as a
job. A failing task or hook is logged and never stops the loop or the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Interval = float | Callable[[], float]


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    func: Callable[[], object]
    # Seconds, or a callable returning them: read each time the task is scheduled, so a setting
    # changed after start-up (tests do) still applies.
    every_s: Interval

    def interval_s(self) -> float:
        return float(self.every_s() if callable(self.every_s) else self.every_s)


_periodic: dict[str, PeriodicTask] = {}
_worker_start: dict[str, Callable[[], object]] = {}


def register_periodic(name: str, func: Callable[[], object], *, every_s: Interval) -> None:
    """Run func() in the watch_hosts loop at its start and every every_s seconds.

    Registering a name again replaces the earlier task (ready() may run more than once).
    """
    _periodic[name] = PeriodicTask(name=name, func=func, every_s=every_s)


def periodic_tasks() -> list[PeriodicTask]:
    return list(_periodic.values())


def register_worker_start(func: Callable[[], object]) -> None:
    """Run func() in every RQ worker before it takes its first job (once per function)."""
    _worker_start[f"{func.__module__}.{func.__qualname__}"] = func


def worker_start_hooks() -> list[Callable[[], object]]:
    return list(_worker_start.values())


def run_worker_start_hooks() -> int:
    """Run every worker-start hook; a failing one is logged. Returns how many failed."""
    failed = 0
    for hook in worker_start_hooks():
        try:
            hook()
        except Exception:  # a worker must start even if one of these checks cannot run
            failed += 1
            logger.exception("worker-start hook %s failed", getattr(hook, "__qualname__", hook))
    return failed


class PeriodicSchedule:
    """When each periodic task is due; run_due(now) runs the ones whose time has come."""

    def __init__(self, tasks: Iterable[PeriodicTask], *, now: float):
        self.tasks = list(tasks)
        self.next_at = {task.name: now for task in self.tasks}

    def run_due(self, now: float) -> list[str]:
        """Run the due tasks (each failure logged, not raised); returns the names run."""
        ran = []
        for task in self.tasks:
            if now < self.next_at[task.name]:
                continue
            # Scheduled before running: a failing task waits its interval like any other.
            self.next_at[task.name] = now + task.interval_s()
            ran.append(task.name)
            try:
                task.func()
            except Exception:  # the loop must keep going even if this pass fails
                logger.exception("periodic task %s failed", task.name)
        return ran
