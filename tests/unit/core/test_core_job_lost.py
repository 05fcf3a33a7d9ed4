"""A job whose work horse died is ended at once and handed to its app (core.signals.job_lost)."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.choices import JobStatusChoices
from core.jobs import job_enqueue, job_lost, rq_job_failed
from core.models import Job
from core.signals import job_lost as job_lost_signal
from core.worker import horse_death
from tests.rq_support import horse_killed, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    calls = []

    def listener(sender, **kwargs):
        calls.append(kwargs)

    job_lost_signal.connect(listener, dispatch_uid="test.heard")
    yield calls
    job_lost_signal.disconnect(dispatch_uid="test.heard")


def running_job() -> Job:
    job = job_enqueue(kind="test.work", func="core.jobs.job_function", timeout_s=60, actor=Actor.system(),
                      enqueue=False)
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING)
    return job


@pytest.mark.parametrize("status, says", [(9, "killed by signal 9"), (256, "exit code 1"), (None, "wait status None")])
def test_horse_death(status, says):
    assert horse_death(status) == says


def test_a_killed_horse_ends_the_job_row_at_once_and_tells_the_apps(heard, private_redis,
                                                                   django_capture_on_commit_callbacks):
    job = running_job()
    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, job.pk)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "killed by signal 9" in job.error
    assert [(h["job_id"], h["kind"]) for h in heard] == [(job.pk, "test.work")]
    assert "work horse (pid 4242) died" in heard[0]["reason"]


def test_a_job_already_ended_keeps_its_row_but_its_record_is_still_checked(heard, django_capture_on_commit_callbacks):
    job = running_job()
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        job_lost(job.pk, reason="gone")
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED and job.error == ""
    assert len(heard) == 1


def test_rq_failure_callback_hands_over_too_and_ignores_foreign_jobs(heard, django_capture_on_commit_callbacks):
    job = running_job()

    class FakeRQJob:  # only .args is read
        def __init__(self, args):
            self.args = args

    with django_capture_on_commit_callbacks(execute=True):
        rq_job_failed(FakeRQJob(("not-an-id",)), None, RuntimeError, RuntimeError("x"), None)
        rq_job_failed(FakeRQJob((job.pk,)), None, ImportError, ImportError("no module"), None)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "ImportError: no module" in job.error
    assert [h["job_id"] for h in heard] == [job.pk]
