"""The RQ worker class (settings.RQ["WORKER_CLASS"]): runs the apps' worker-start hooks first."""

from django.db import connections
from django.utils.module_loading import autodiscover_modules
from rq import Worker

from .registry import run_worker_start_hooks


class PortalWorker(Worker):
    """A worker that, before taking jobs, runs what the apps registered for worker start.

    The migrations app registers the search for migrations a dead worker left active. Hooks
    only find and queue (database and Redis); the jobs they queue run in work horses like any
    job, so no host connection is opened in the parent process.

    Every app's ``jobs`` module is imported here, once: a work horse is forked from this
    process per job, and would otherwise import the runners behind its job function anew
    each time (a good part of the time from a confirm to the first call to a host). Importing
    opens no connection and starts no thread.
    """

    def work(self, *args, **kwargs):
        try:
            autodiscover_modules("jobs")
            run_worker_start_hooks()
        finally:
            # Work horses are forked from this process: they must not share its connections.
            connections.close_all()
        return super().work(*args, **kwargs)
