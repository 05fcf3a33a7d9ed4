"""The inventory runner against fake adapters: facts, guests, key pinning, failures, actions."""

import pytest

from core.actors import Actor
from core.choices import AuditResultChoices, JobStatusChoices
from core.models import AuditEvent, Job
from hosts import inventory, services
from hosts.choices import DiskStorageChoices, HostStatusChoices
from hosts.models import Host, VirtualDisk, VirtualMachine
from tests.fakes.fleet import make_host_key

pytestmark = pytest.mark.django_db


def refresh(host, capture):
    with capture(execute=True):
        job = services.host_refresh_request(host=host, actor=Actor.system())
    job.refresh_from_db()
    host.refresh_from_db()
    return job


def test_refresh_stores_facts(trusted_host):
    facts = trusted_host.facts
    assert (facts.hostname, facts.arch, facts.cpu_vendor, facts.cpus) == ("kvm-a", "x86_64", "Intel", 4)
    assert facts.os_pretty_name == "Debian GNU/Linux 12 (bookworm)"
    assert facts.domain_types == ["qemu", "kvm"] and "vmx" in facts.cpu_features
    assert facts.memory_total_kib == 8 * 1024 * 1024
    assert trusted_host.status == HostStatusChoices.REACHABLE and trusted_host.last_seen


def test_host_key_mismatch_refuses_and_audits(trusted_host, fleet, django_capture_on_commit_callbacks):
    fleet[trusted_host.address].host_key = make_host_key()  # host reinstalled or intercepted
    job = refresh(trusted_host, django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.FAILED
    assert "does not match the pinned key" in job.error and job.error_hint
    assert trusted_host.status == HostStatusChoices.KEY_MISMATCH
    event = AuditEvent.objects.get(action="host.key_mismatch")
    assert event.result == AuditResultChoices.REFUSED and event.job_id == job.pk
    # Nothing more is attempted against that host until an admin re-trusts it.
    assert services.host_refresh_request(host=trusted_host, actor=Actor.system()) is None


def test_unreachable_host_keeps_last_facts(trusted_host, fleet, django_capture_on_commit_callbacks):
    fleet[trusted_host.address].reachable = False
    job = refresh(trusted_host, django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.FAILED and "refused the connection" in job.error
    assert trusted_host.status == HostStatusChoices.UNREACHABLE
    assert trusted_host.last_error and trusted_host.last_error_hint
    assert trusted_host.facts.hostname == "kvm-a"
    assert trusted_host.vms.count() == 2

    fleet[trusted_host.address].reachable = True
    job = refresh(trusted_host, django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.SUCCEEDED and trusted_host.status == HostStatusChoices.REACHABLE
    assert AuditEvent.objects.filter(action="host.reachable").exists()


def test_refresh_of_untrusted_host_fails_with_hint(fleet, django_capture_on_commit_callbacks):
    host = Host.objects.create(name="new", address="192.0.2.30", auth_method="password")
    job = Job.objects.create(kind="host.refresh", timeout_s=10)
    from hosts.jobs import refresh_host_job

    refresh_host_job(job.pk, host.pk)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "not been confirmed" in job.error and job.error_hint


def test_secret_unreadable_with_other_key_fails_cleanly(trusted_host, settings, django_capture_on_commit_callbacks):
    settings.VMPORTAL_SECRETS_KEY = "2Jv4y4m3nq8h8kq7P9C3y0T2q1E5k6L7m8N9o0P1q2Q="
    job = refresh(trusted_host, django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.FAILED and "decrypted" in job.error and "VMPORTAL_SECRETS_KEY" in job.error_hint


def act(vm, action, capture):
    with capture(execute=True):
        job = services.vm_action_request(vm=vm, action=action, actor=Actor.system())
    job.refresh_from_db()
    vm.refresh_from_db()
    return job


def test_destroy_then_start(trusted_host, fleet, django_capture_on_commit_callbacks):
    vm = VirtualMachine.objects.get(name="web-1")
    job = act(vm, "destroy", django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.SUCCEEDED and vm.state == "shutoff" and vm.state_reason == "destroyed"
    job = act(vm, "start", django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.SUCCEEDED and vm.state == "running"
    calls = [name for name, _ in fleet[trusted_host.address].calls]
    assert calls == ["destroy", "start"]
    outcomes = AuditEvent.objects.filter(action__in=["vm.destroy", "vm.start"]).values_list("action", "result", "job_id")
    assert len(outcomes) == 4  # requested + finished, for each action
    assert all(result == "ok" and job_id for _, result, job_id in outcomes)


def test_shutdown_ignored_by_guest_fails_with_hint(trusted_host, fleet, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(inventory, "SHUTDOWN_WAIT_S", 0.05)
    monkeypatch.setattr(inventory, "ACTION_POLL_INTERVAL_S", 0.01)
    fleet[trusted_host.address].shutdown_ignored = True
    vm = VirtualMachine.objects.get(name="web-1")
    job = act(vm, "shutdown", django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.FAILED and "still running" in job.error and "Force off" in job.error_hint
    assert AuditEvent.objects.filter(action="vm.shutdown", result="failed").exists()


def test_action_on_vanished_guest_fails(trusted_host, fleet, django_capture_on_commit_callbacks):
    vm = VirtualMachine.objects.get(name="web-1")
    fleet[trusted_host.address].domains.pop(str(vm.uuid))
    job = act(vm, "destroy", django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.FAILED and "Domain not found" in job.error
    assert job.error_hint  # DomainNotFound's hint: refresh the inventory


def periodic_refresh(capture):
    from hosts.jobs import inventory_refresh_all

    with capture(execute=True):
        inventory_refresh_all()
    return Job.objects.filter(kind="host.refresh").latest("pk")


def test_periodic_refresh_keeps_a_recent_probe(trusted_host, fleet, django_capture_on_commit_callbacks):
    hv = fleet[trusted_host.address]
    probed_at = trusted_host.facts.probed_at
    assert probed_at is not None
    storage = dict(VirtualDisk.objects.filter(vm__host=trusted_host).values_list("source", "storage"))
    assert set(storage.values()) == {DiskStorageChoices.LOCAL}
    execs, logins = hv.execs, len(hv.commands)

    job = periodic_refresh(django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.SUCCEEDED
    assert hv.execs == execs and len(hv.commands) == logins  # no command ran on the host
    assert "as read at" in job.log[-1]["msg"]
    trusted_host.facts.refresh_from_db()
    assert trusted_host.facts.probed_at == probed_at
    assert trusted_host.facts.os_pretty_name == "Debian GNU/Linux 12 (bookworm)"
    assert dict(VirtualDisk.objects.filter(vm__host=trusted_host).values_list("source", "storage")) == storage


def test_periodic_refresh_still_checks_the_pinned_key(trusted_host, fleet, django_capture_on_commit_callbacks):
    fleet[trusted_host.address].host_key = make_host_key()
    job = periodic_refresh(django_capture_on_commit_callbacks)
    trusted_host.refresh_from_db()
    assert job.status == JobStatusChoices.FAILED and "does not match the pinned key" in job.error
    assert trusted_host.status == HostStatusChoices.KEY_MISMATCH


@pytest.mark.parametrize("why", ["old", "new disk", "asked for"])
def test_refresh_asks_the_host_again(why, trusted_host, fleet, settings, django_capture_on_commit_callbacks):
    from tests.fakes.fleet import make_domain

    hv = fleet[trusted_host.address]
    execs = hv.execs
    if why == "old":
        settings.VMPORTAL_HOST_PROBE_SECONDS = 0
        job = periodic_refresh(django_capture_on_commit_callbacks)
    elif why == "new disk":
        added = make_domain("new-1")
        hv.domains[added.uuid] = added
        job = periodic_refresh(django_capture_on_commit_callbacks)
    else:
        job = refresh(trusted_host, django_capture_on_commit_callbacks)
    assert job.status == JobStatusChoices.SUCCEEDED
    assert hv.execs == execs + 1  # one exec: os-release and every disk's placement
    assert "as read at" not in job.log[-1]["msg"]
    assert not VirtualDisk.objects.filter(vm__host=trusted_host, storage=DiskStorageChoices.UNKNOWN).exists()


def test_a_requested_refresh_does_not_reuse_a_waiting_routine_one(trusted_host, settings):
    settings.VMPORTAL_JOBS_INLINE = False  # on_commit callbacks are not run here: the jobs stay queued
    routine = services.host_refresh_request(host=trusted_host, actor=Actor.system(), full=False)
    assert routine.variant == "routine"
    assert services.host_refresh_request(host=trusted_host, actor=Actor.system(), full=False) == routine
    asked = services.host_refresh_request(host=trusted_host, actor=Actor.system())
    assert asked != routine and asked.variant == ""
    # a full one waiting serves both
    assert services.host_refresh_request(host=trusted_host, actor=Actor.system()) == asked
    assert services.host_refresh_request(host=trusted_host, actor=Actor.system(), full=False) in (routine, asked)
