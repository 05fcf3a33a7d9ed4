"""The RQ worker class (settings.RQ["WORKER_CLASS"]): runs the apps' worker-start hooks first."""

from django.db import connections
from rq import Worker

from .registry import run_worker_start_hooks


class PortalWorker(Worker):
    """A worker that, before taking jobs, runs what the apps registered for worker start.

    The migrations app registers the search for migrations a dead worker left active. Hooks
    only find and queue (database and Redis); the jobs they queue run in work horses like any
    job, so no host connection is opened in the parent process.
    """

    def work(self, *args, **kwargs):
        try:
            run_worker_start_hooks()
        finally:
            # Work horses are forked from this process: they must not share its connections.
            connections.close_all()
        return super().work(*args, **kwargs)
