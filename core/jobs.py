"""Background jobs: the Job row is created and enqueued here, and run_job() runs the work.

A job function takes ids only, loads its rows and hands its work to run_job():

    def host_refresh_job(job_id: int, host_id: int) -> None:
        run_job(job_id, lambda ctx: inventory.refresh_host(host_id=host_id, ctx=ctx))

run_job() marks the row running, captures log lines and progress, and always ends it as
succeeded or failed (with the error's message and hint) — never leaves it running.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import django_rq
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Callback
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.timeouts import JobTimeoutException

from . import broadcast, signals
from .actors import Actor
from .choices import JOB_ACTIVE_STATES, JobLogLevelChoices, JobStatusChoices
from .errors import PortalError
from .models import Job

logger = logging.getLogger(__name__)

# Log lines kept per job; a runaway job must not grow its row without bound.
MAX_LOG_LINES = 2000
# How long past its timeout a running job may stay "running" before we call its worker dead.
STALE_GRACE = timedelta(minutes=2)
# A job row younger than this may not have reached Redis yet (it is submitted on commit).
QUEUE_GRACE = timedelta(seconds=60)
# What RQ says of a job that no worker will ever run.
RQ_DEAD_STATES = frozenset({"missing", "failed", "stopped", "canceled"})


class JobContext:
    """Handed to the work function: log lines and progress go to the Job row and the job page."""

    def __init__(self, job: Job):
        self.job = job

    def log(self, message: str, *, level: JobLogLevelChoices = JobLogLevelChoices.INFO) -> None:
        entry = {"t": timezone.now().isoformat(), "level": str(level), "msg": str(message)}
        if len(self.job.log) < MAX_LOG_LINES:
            self.job.log.append(entry)
            self.job.save(update_fields=["log"])
            broadcast.job_log(self.job, entry)
        logger.info("job %s: %s", self.job.pk, message)

    def progress(self, percent: int) -> None:
        self.job.progress = max(0, min(100, int(percent)))
        self.job.save(update_fields=["progress"])
        broadcast.job_changed(self.job)


def _rq_job_id(job: Job) -> str:
    return f"vmportal-job-{job.pk}"


JobFunc = Callable[..., None] | str


def job_function(func: JobFunc) -> Callable[..., None]:
    """The job function itself: ``func``, or the function its dotted path names.

    A dotted path ("migrations_app.jobs.migration_job") lets a service enqueue a job without
    importing the job module (which imports the runners, which import the services).
    """
    if not isinstance(func, str):
        return func
    module_name, _, name = func.rpartition(".")
    if not module_name:
        raise ValueError(f"Job function {func!r} is not a dotted path (module.function).")
    found = getattr(importlib.import_module(module_name), name, None)
    if not callable(found):
        raise ValueError(f"Job function {func!r} does not exist.")
    return found


@transaction.atomic
def job_enqueue(
    *,
    kind: str,
    func: JobFunc,
    args: Sequence[Any] = (),
    target: models.Model | None = None,
    timeout_s: int,
    actor: Actor,
    queue: str = "default",
    enqueue: bool = True,
    variant: str = "",
) -> Job:
    """Create a queued Job row and enqueue func(job.pk, *args) once the transaction commits.

    ``func`` is the job function or its dotted path; a path is checked here, so a typo fails
    the request, not the worker. RQ gets the path (the worker imports it); inline runs call it.
    enqueue=False only creates the row: the caller runs func(job.pk, *args) itself (management
    commands that wait for the result, with no worker). Such a row has no RQ job id: it never
    reaches a queue, so RQ not knowing it (``rq_job_state``) says nothing about who runs it —
    with an id, the sweeps took a running ``vm_migrate --wait`` for a job its worker lost.
    ``variant`` names a lighter variant of the kind (kept on the row, e.g. for coalescing).
    """
    job_function(func)  # a wrong path fails here, in the request, not later in a worker
    job = Job.objects.create(
        kind=kind,
        variant=variant,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=str(target)[:255] if target is not None else "",
        timeout_s=timeout_s,
        queue_name=queue,
        created_by=actor.user,
    )
    if enqueue:
        job.rq_job_id = _rq_job_id(job)
        job.save(update_fields=["rq_job_id"])
        transaction.on_commit(lambda: _submit(job.pk, func, tuple(args)))
    return job


def active_job(*, kind: str, target: models.Model) -> Job | None:
    """The queued or running job of this kind for this record, if there is one."""
    return Job.objects.filter(
        kind=kind, target_type=target._meta.model_name, target_id=str(target.pk), status__in=JOB_ACTIVE_STATES
    ).first()


def _submit(job_id: int, func: JobFunc, args: tuple) -> None:
    job = Job.objects.get(pk=job_id)
    if settings.VMPORTAL_JOBS_INLINE:
        job_function(func)(job.pk, *args)
        return
    try:
        django_rq.get_queue(job.queue_name).enqueue_call(
            func=func,
            args=(job.pk, *args),
            job_id=job.rq_job_id,
            timeout=job.timeout_s,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            on_failure=Callback(rq_job_failed),
        )
    except RedisError as exc:
        _finish(
            job,
            JobStatusChoices.FAILED,
            error=f"Could not put the job on the queue: {exc}",
            hint="Check that redis is running at REDIS_URL and that an rqworker is started.",
        )


def _start(job: Job) -> None:
    job.status = JobStatusChoices.RUNNING
    job.started = timezone.now()
    job.save(update_fields=["status", "started"])
    broadcast.job_changed(job)


def _finish(
    job: Job,
    status: JobStatusChoices,
    *,
    result: Any = None,
    error: str = "",
    hint: str = "",
) -> None:
    job.status = status
    job.ended = timezone.now()
    job.result = result
    job.error = error
    job.error_hint = hint
    if status == JobStatusChoices.SUCCEEDED:
        job.progress = 100
    job.save(update_fields=["status", "ended", "result", "error", "error_hint", "progress"])
    broadcast.job_changed(job)
    job_id, kind = job.pk, job.kind
    transaction.on_commit(lambda: announce(signals.job_ended, job_id=job_id, kind=kind, status=str(status)))


def announce(signal, **kwargs: Any) -> None:
    """Send ``signal`` to its receivers; one that raises is logged, never passed to the sender."""
    for receiver, result in signal.send_robust(sender=None, **kwargs):
        if isinstance(result, Exception):
            logger.error("receiver %s of %s failed", getattr(receiver, "__qualname__", receiver), kwargs,
                         exc_info=(type(result), result, result.__traceback__))


def run_job(job_id: int, work: Callable[[JobContext], Any]) -> Job:
    """Run work(ctx) as the job `job_id`, recording start, log, result or failure on its row.

    A PortalError (an expected failure) is recorded with its message and hint; any other
    exception is recorded with its type and text, and its traceback logged. The job row never
    stays "running".
    """
    job = Job.objects.get(pk=job_id)
    if job.status != JobStatusChoices.QUEUED:
        logger.warning("job %s is %s, not queued: not running it again", job.pk, job.status)
        return job
    _start(job)
    ctx = JobContext(job)
    try:
        result = work(ctx)
    except JobTimeoutException:
        ctx.log(f"Timed out after {job.timeout_s} s", level=JobLogLevelChoices.ERROR)
        _finish(job, JobStatusChoices.FAILED, error=f"The job timed out after {job.timeout_s} s.")
    except PortalError as exc:
        ctx.log(exc.message, level=JobLogLevelChoices.ERROR)
        _finish(job, JobStatusChoices.FAILED, error=exc.message, hint=exc.hint or "")
    except Exception as exc:  # the job row must record every failure, whatever raised it
        message = f"{type(exc).__name__}: {exc}"
        logger.exception("job %s (%s) failed", job.pk, job.kind)
        ctx.log(message, level=JobLogLevelChoices.ERROR)
        _finish(job, JobStatusChoices.FAILED, error=message)
    else:
        _finish(job, JobStatusChoices.SUCCEEDED, result=result)
    return job


def job_lost(job_id: int, *, reason: str) -> None:
    """RQ says this job's work stopped outside run_job: end its row now (if run_job could not)
    and, after the commit, send ``signals.job_lost`` so the app owning the record it worked on
    settles that record at once (its reconciler asks the hosts)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return
        if not job.is_terminal:
            _finish(job, JobStatusChoices.FAILED, error=f"The worker lost this job: {reason}.",
                    hint="What it was doing is settled from what the hosts say.")
        fields = {"job_id": job.pk, "kind": job.kind, "target_type": job.target_type,
                  "target_id": job.target_id, "reason": reason}
        transaction.on_commit(lambda: announce(signals.job_lost, **fields))


def portal_job_id(rq_job) -> int | None:
    """The Job row's id an RQ job carries (its first argument), or None for a foreign job."""
    job_id = (rq_job.args or [None])[0] if rq_job is not None else None
    return job_id if isinstance(job_id, int) and not isinstance(job_id, bool) else None


def rq_job_failed(rq_job, connection, exc_type, exc_value, tb) -> None:
    """RQ failure callback: the work failed outside run_job (import error, abandoned by its worker)."""
    job_id = portal_job_id(rq_job)
    if job_id is not None:
        job_lost(job_id, reason=f"{exc_type.__name__}: {exc_value}" if str(exc_value) else exc_type.__name__)


def rq_job_state(job: Job | None, *, now: datetime) -> str | None:
    """RQ's status of the job ("queued", "started", "failed", … or "missing"); None = cannot tell."""
    if job is None or not job.rq_job_id or settings.VMPORTAL_JOBS_INLINE:
        return None
    if job.status == JobStatusChoices.QUEUED and now - job.created < QUEUE_GRACE:
        return None  # may not have reached Redis yet; a running one has
    try:
        rq_job = RQJob.fetch(job.rq_job_id, connection=django_rq.get_connection(job.queue_name))
        status = rq_job.get_status(refresh=False)
    except NoSuchJobError:
        return "missing"
    except (RedisError, OSError) as exc:
        logger.warning("cannot ask Redis about job %s: %s", job.pk, exc)
        return None
    return str(getattr(status, "value", status)) if status is not None else None


def jobs_abort_stale(*, now=None) -> int:
    """Mark as aborted the jobs no worker will finish: running long past their timeout (their
    worker died), or still queued while the queue no longer holds them (Redis lost them, or
    they were removed from it). Returns how many. The leases such jobs held are then
    reclaimed by the sweeps, since their owner has ended."""
    now = now or timezone.now()
    aborted = 0
    for job in Job.objects.filter(status=JobStatusChoices.QUEUED, created__lt=now - QUEUE_GRACE).exclude(rq_job_id=""):
        state = rq_job_state(job, now=now)
        if state in RQ_DEAD_STATES:
            with transaction.atomic():
                # Only if no worker took it meanwhile.
                if Job.objects.filter(pk=job.pk, status=JobStatusChoices.QUEUED).exists():
                    _finish(
                        job,
                        JobStatusChoices.ABORTED,
                        error=f"The queue no longer holds this job ({state}); no worker will run it.",
                        hint="Check that Redis keeps its data and that an rqworker serves this queue; "
                             "start the job again if needed.",
                    )
                    aborted += 1
    for job in Job.objects.filter(status=JobStatusChoices.RUNNING, started__isnull=False):
        if job.started + timedelta(seconds=job.timeout_s) + STALE_GRACE < now:
            with transaction.atomic():
                _finish(
                    job,
                    JobStatusChoices.ABORTED,
                    error="The worker stopped before finishing this job.",
                    hint="Check the rqworker logs; start the job again if needed.",
                )
                job_lost(job.pk, reason="its worker stopped before finishing it")
            aborted += 1
    return aborted
