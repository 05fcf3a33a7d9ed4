"""The RQ worker class (settings.RQ["WORKER_CLASS"]): runs the apps' worker-start hooks first,
sends a work horse's coalesced live events before it exits, and settles a job at once when its
work horse dies."""

import logging
import os

from django.db import connections
from django.urls import get_resolver
from django.utils.module_loading import autodiscover_modules
from rq import Worker

from .broadcast import flush_pending
from .jobs import job_lost, portal_job_id
from .registry import run_worker_start_hooks

logger = logging.getLogger(__name__)


def horse_death(ret_val) -> str:
    """How the horse ended, from os.waitpid's status: "killed by signal 9", "exit code 1"."""
    if isinstance(ret_val, int) and os.WIFSIGNALED(ret_val):
        return f"killed by signal {os.WTERMSIG(ret_val)}"
    if isinstance(ret_val, int) and os.WIFEXITED(ret_val):
        return f"exit code {os.WEXITSTATUS(ret_val)}"
    return f"wait status {ret_val!r}"


def load_url_conf() -> None:
    """Import the URL conf and build its reverse tables now, once per process.

    Records name their page (``get_absolute_url``: a guest lease stores its owner's, every
    migration payload its links), and the first ``reverse()`` of a process imports every app's
    views and what they import (about 0.8 s here, half of it the calendar feed's iCalendar
    library). Done lazily, a work horse pays that on its first job — each horse, since each is
    forked from a worker that never reversed a URL — and so does the first confirm a web
    process serves after starting. Opens no connection, starts no thread.
    """
    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018 - imports every app's urls and views
    resolver.reverse_dict  # noqa: B018 - builds the reverse tables (per language) reverse() reads
    resolver.namespace_dict  # noqa: B018
    resolver.app_dict  # noqa: B018


class PortalWorker(Worker):
    """A worker that, before taking jobs, runs what the apps registered for worker start.

    The migrations app registers the search for migrations a dead worker left active. Hooks
    only find and queue (database and Redis); the jobs they queue run in work horses like any
    job, so no host connection is opened in the parent process.

    Every app's ``jobs`` module is imported here, once: a work horse is forked from this
    process per job, and would otherwise import the runners behind its job function anew
    each time (a good part of the time from a confirm to the first call to a host). Importing
    opens no connection and starts no thread. The URL conf is loaded here too (``load_url_conf``).
    """

    def work(self, *args, **kwargs):
        try:
            autodiscover_modules("jobs")
            load_url_conf()
            run_worker_start_hooks()
        finally:
            # Work horses are forked from this process: they must not share its connections.
            connections.close_all()
        return super().work(*args, **kwargs)

    def perform_job(self, job, queue):
        """Run in the work horse; it ends with os._exit (no atexit), so the live events it still
        holds for coalescing (core.broadcast) are sent here, after the job."""
        try:
            return super().perform_job(job, queue)
        finally:
            flush_pending()

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """RQ saw the horse die mid-job (RQ runs no failure callback then): end the Job row now
        and hand its record to the owning app's reconciler (core.jobs.job_lost)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        job_id = portal_job_id(job)
        if job_id is None:
            return
        try:
            job_lost(job_id, reason=f"its work horse (pid {retpid}) died, {horse_death(ret_val)}")
        except Exception:  # the worker must go on taking jobs; the periodic sweep settles it later
            logger.exception("could not settle job %s after its work horse died", job_id)
        finally:
            # The next horse is forked from this process: it must not share these connections.
            connections.close_all()
