"""A share set-up whose work horse died is settled at once: the steps recorded so far are kept,
the interrupted step named, and the share is no longer "being set up"."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.choices import JobStatusChoices
from core.models import Job
from storage import reconciler, services
from storage.choices import SetupStatusChoices, ShareStatusChoices
from storage.steps import plan_from_json
from tests.rq_support import horse_killed, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def planned_setup(capture):
    with capture(execute=True):
        share, setup, _job = services.share_create(server="h3", clients=["h1", "h2"], export_path="/srv/vmstore",
                                                   mount_path="/mnt/vmstore", actor=Actor.system())
    setup.refresh_from_db()
    assert setup.status == SetupStatusChoices.PLANNED, (setup.status, setup.error)
    return share, setup


def test_a_lost_apply_job_settles_the_setup_at_the_step_it_stopped(nfs_fleet, private_redis,
                                                                  django_capture_on_commit_callbacks):
    share, setup = planned_setup(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):  # queued, not run: its horse runs it
        job = services.share_apply_request(setup=setup, actor=Actor.system())
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING)
    first, second = plan_from_json(setup.plan).steps[:2]
    services.setup_step_recorded(setup=setup, outcome={"key": first.key, "state": "changed"})

    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, job.pk, setup.pk)

    setup.refresh_from_db()
    share.refresh_from_db()
    assert setup.status == SetupStatusChoices.FAILED and setup.failed_step == second.key
    assert "killed by signal 9" in setup.error and first.key in setup.outcomes
    assert share.status == ShareStatusChoices.FAILED
    assert services.share_plan_request(share=share, actor=Actor.system())  # a new attempt may start


def test_the_sweep_settles_a_setup_whose_plan_job_ended_and_leaves_live_ones(nfs_fleet,
                                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        share, setup, job = services.share_create(server="h3", clients=["h1"], export_path="/srv/vmstore",
                                                  mount_path="/mnt/vmstore", actor=Actor.system())
    assert reconciler.setups_reconcile() == 0  # its job is queued: alive
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.ABORTED, error="The worker stopped")
    assert reconciler.setups_reconcile() == 1
    setup.refresh_from_db()
    assert setup.status == SetupStatusChoices.DETECT_FAILED and "The worker stopped" in setup.error
    assert reconciler.setups_reconcile() == 0
