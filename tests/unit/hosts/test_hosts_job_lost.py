"""A power action whose work horse died: the guest is freed at once and its state read from the host."""

import dataclasses

import pytest

from core.actors import Actor
from core.choices import AuditResultChoices, JobStatusChoices
from core.models import AuditEvent, Job
from hosts import services
from hosts.models import GuestLease, VirtualMachine
from tests.rq_support import horse_killed, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def test_a_lost_power_action_releases_the_guest_and_shows_the_state_libvirt_reports(
        trusted_host, fleet, private_redis, django_capture_on_commit_callbacks):
    vm = VirtualMachine.objects.get(name="web-1")
    with django_capture_on_commit_callbacks(execute=False):  # queued, not run: its horse runs it
        job = services.vm_action_request(vm=vm, action="destroy", actor=Actor.system())
    Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING)
    assert GuestLease.objects.filter(guest_uuid=vm.uuid).exists()
    # The horse had forced the guest off when it was killed.
    hv = fleet[trusted_host.address]
    hv.domains[str(vm.uuid)] = dataclasses.replace(hv.domains[str(vm.uuid)], state="shutoff", reason="destroyed", id=None)

    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, job.pk, vm.pk, "destroy")

    job.refresh_from_db()
    vm.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "killed by signal 9" in job.error
    assert not GuestLease.objects.filter(guest_uuid=vm.uuid).exists()
    assert vm.state == "shutoff"  # the refresh queued at once read the truth
    outcome = AuditEvent.objects.filter(action="vm.destroy", result=AuditResultChoices.FAILED).get()
    assert "worker lost" in outcome.message and outcome.job_id == job.pk
