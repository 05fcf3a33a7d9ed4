"""Job truth: the row records start, log, progress and every way a job can end."""

from datetime import timedelta

import pytest
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.timeouts import JobTimeoutException

from core import jobs
from core.actors import Actor
from core.choices import JobStatusChoices
from core.jobs import job_enqueue, jobs_abort_stale, run_job
from core.models import Job
from hosts.adapters.errors import HostUnreachable

pytestmark = pytest.mark.django_db


def queued_job(**kw):
    return Job.objects.create(kind="test.job", timeout_s=kw.pop("timeout_s", 30), **kw)


def test_run_job_success_records_log_progress_result():
    job = queued_job()

    def work(ctx):
        ctx.log("step one")
        ctx.progress(40)
        return {"answer": 42}

    run_job(job.pk, work)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED
    assert [entry["msg"] for entry in job.log] == ["step one"]
    assert job.result == {"answer": 42}
    assert job.progress == 100
    assert job.started and job.ended and job.started <= job.ended


def test_run_job_adapter_error_keeps_message_and_hint():
    job = queued_job()

    def work(ctx):
        raise HostUnreachable("10.0.0.9:22 refused the connection", hint="Start sshd.")

    run_job(job.pk, work)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED
    assert job.error == "10.0.0.9:22 refused the connection"
    assert job.error_hint == "Start sshd."
    assert job.log[-1]["level"] == "error"


def test_run_job_unexpected_exception_is_recorded_not_raised():
    job = queued_job()
    run_job(job.pk, lambda ctx: {}["missing"])
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED
    assert job.error.startswith("KeyError")


def test_run_job_timeout_is_failed_with_clear_message():
    job = queued_job(timeout_s=7)

    def work(ctx):
        raise JobTimeoutException("boom")

    run_job(job.pk, work)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED
    assert "timed out after 7 s" in job.error


def test_run_job_does_not_run_twice():
    job = queued_job()
    calls = []
    run_job(job.pk, lambda ctx: calls.append(1))
    run_job(job.pk, lambda ctx: calls.append(2))
    assert calls == [1]


def _noop_job(job_id):
    run_job(job_id, lambda ctx: {"ran": True})


def test_job_enqueue_runs_only_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_enqueue(kind="test.noop", func=_noop_job, timeout_s=10, actor=Actor.system())
    job.refresh_from_db()
    assert job.status == JobStatusChoices.QUEUED
    assert job.rq_job_id == f"vmportal-job-{job.pk}"
    assert job.timeout_s == 10
    assert len(callbacks) == 1
    callbacks[0]()
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED and job.result == {"ran": True}


def test_job_enqueue_passes_timeout_to_rq_and_fails_cleanly_without_redis(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.VMPORTAL_JOBS_INLINE = False
    seen = {}

    class FakeQueue:
        def enqueue_call(self, **kwargs):
            seen.update(kwargs)
            raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(jobs.django_rq, "get_queue", lambda name: FakeQueue())
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(kind="test.noop", func=_noop_job, timeout_s=33, actor=Actor.system())
    job.refresh_from_db()
    assert seen["timeout"] == 33 and seen["job_id"] == job.rq_job_id and seen["args"] == (job.pk,)
    assert job.status == JobStatusChoices.FAILED
    assert "queue" in job.error and "REDIS_URL" in job.error_hint


@pytest.mark.parametrize(
    ("rq_state", "aborted"),
    [("missing", True), ("canceled", True), ("stopped", True), ("failed", True),
     ("queued", False), ("started", False), ("deferred", False), ("redis down", False)],
)
def test_queued_jobs_the_queue_lost_are_aborted(settings, monkeypatch, rq_state, aborted):
    from redis.exceptions import ConnectionError as RedisDown
    from rq.exceptions import NoSuchJobError

    settings.VMPORTAL_JOBS_INLINE = False
    now = timezone.now()
    old = queued_job(rq_job_id="rq-old")
    Job.objects.filter(pk=old.pk).update(created=now - timedelta(minutes=5))
    young = queued_job(rq_job_id="rq-young")  # may not have reached Redis yet: never judged

    class FakeRQJob:
        def get_status(self, refresh=False):
            return rq_state

    def fetch(rq_id, connection=None):
        if rq_state == "missing":
            raise NoSuchJobError(rq_id)
        if rq_state == "redis down":
            raise RedisDown("Connection refused")
        return FakeRQJob()

    monkeypatch.setattr(jobs.RQJob, "fetch", staticmethod(fetch))
    monkeypatch.setattr(jobs.django_rq, "get_connection", lambda name: None)
    assert jobs_abort_stale(now=now) == (1 if aborted else 0)
    old.refresh_from_db()
    young.refresh_from_db()
    assert old.status == (JobStatusChoices.ABORTED if aborted else JobStatusChoices.QUEUED)
    assert young.status == JobStatusChoices.QUEUED
    if aborted:
        assert f"({rq_state})" in old.error and "rqworker" in old.error_hint


def test_stale_running_jobs_are_aborted():
    now = timezone.now()
    stale = queued_job(timeout_s=60, status=JobStatusChoices.RUNNING, started=now - timedelta(minutes=10))
    fresh = queued_job(timeout_s=60, status=JobStatusChoices.RUNNING, started=now - timedelta(seconds=30))
    assert jobs_abort_stale(now=now) == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == JobStatusChoices.ABORTED and "worker" in stale.error
    assert fresh.status == JobStatusChoices.RUNNING


# --- enqueue by dotted path, and the error family ---------------------------------------

_NOOP_PATH = f"{__name__}._noop_job"


def test_job_enqueue_by_dotted_path_runs_the_named_function(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(kind="test.noop", func=_NOOP_PATH, timeout_s=10, actor=Actor.system())
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED and job.result == {"ran": True}


def test_job_enqueue_hands_rq_the_dotted_path(settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.VMPORTAL_JOBS_INLINE = False
    seen = {}

    class FakeQueue:
        def enqueue_call(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(jobs.django_rq, "get_queue", lambda name: FakeQueue())
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(kind="test.noop", func=_NOOP_PATH, args=(7,), timeout_s=10, actor=Actor.system())
    assert seen["func"] == _NOOP_PATH and seen["args"] == (job.pk, 7)


@pytest.mark.parametrize("path", ["no_dots", f"{__name__}.no_such_job", "no_such_module_xyz.job", f"{__name__}._NOOP_PATH"])
def test_job_enqueue_refuses_a_path_that_names_no_function(path):
    with pytest.raises((ValueError, ImportError)):
        job_enqueue(kind="test.noop", func=path, timeout_s=10, actor=Actor.system())
    assert not Job.objects.exists()


def test_run_job_records_any_portal_error_by_type_without_a_traceback(caplog):
    from core.errors import PortalError

    class Refused(PortalError):
        default_hint = "Do the other thing."

    job = queued_job()

    def work(ctx):
        raise Refused("Not now.")

    with caplog.at_level("ERROR", logger="core.jobs"):
        run_job(job.pk, work)
    job.refresh_from_db()
    assert (job.status, job.error, job.error_hint) == (JobStatusChoices.FAILED, "Not now.", "Do the other thing.")
    assert not any(r.exc_info for r in caplog.records)


def test_run_job_logs_the_traceback_of_an_unexpected_error_even_with_a_hint_attribute(caplog):
    class Odd(Exception):
        message, hint = "looks like ours", "but is not"

    job = queued_job()

    def work(ctx):
        raise Odd("boom")

    with caplog.at_level("ERROR", logger="core.jobs"):
        run_job(job.pk, work)
    job.refresh_from_db()
    assert job.error == "Odd: boom" and job.error_hint == ""
    assert any(r.exc_info for r in caplog.records)
