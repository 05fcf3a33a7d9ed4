"""The event watch loop: events become one refresh per host, lost hosts reconnect with backoff."""

import pytest

from core import broadcast
from core.choices import JobStatusChoices
from core.models import Job
from hosts.adapters.errors import HostKeyMismatch, HostUnreachable
from hosts.adapters.libvirt import DomainEvent
from hosts.choices import HostStatusChoices
from hosts.models import Host, VirtualMachine
from hosts.watcher import HostEventWatch

pytestmark = pytest.mark.django_db


class FakeEventWatcher:
    def __init__(self):
        self.watching = {}
        self.fail_with = {}
        self.attempts = []

    def watch(self, uri, on_event, on_disconnect, *, ssh_target=None, known_hosts_dir=None):
        self.attempts.append(uri)
        error = self.fail_with.get(uri)
        if error is not None:
            raise error
        self.watching[uri] = (on_event, on_disconnect)

    def unwatch(self, uri):
        self.watching.pop(uri, None)

    def close(self):
        self.watching.clear()

    def emit(self, uri, name="web-1"):
        on_event, _ = self.watching[uri]
        on_event(uri, DomainEvent(domain_uuid="x", domain_name=name, event="stopped", detail="destroyed"))

    def drop(self, uri):
        _, on_disconnect = self.watching[uri]
        on_disconnect(uri, "eof")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def watch(settings, trusted_host):
    settings.VMPORTAL_JOBS_INLINE = False  # count queued refreshes instead of running them
    fake, clock = FakeEventWatcher(), Clock()
    return HostEventWatch(watcher=fake, clock=clock, debounce_s=1.0), fake, clock


def queued_refreshes():
    return Job.objects.filter(kind="host.refresh", status=JobStatusChoices.QUEUED).count()


def test_connects_to_trusted_hosts_and_catches_up_once(watch, trusted_host):
    loop, fake, clock = watch
    loop.step(0)
    assert trusted_host.effective_libvirt_uri in fake.watching
    clock.now += 1.5
    loop.step(0)
    assert queued_refreshes() == 1


def test_burst_of_events_gives_one_refresh(watch, trusted_host):
    loop, fake, clock = watch
    loop.step(0)
    clock.now += 1.5
    loop.step(0)  # the catch-up refresh
    Job.objects.update(status=JobStatusChoices.SUCCEEDED)
    uri = trusted_host.effective_libvirt_uri
    for _ in range(5):
        fake.emit(uri)
    loop.step(0)
    assert queued_refreshes() == 0  # debounced
    clock.now += 1.5
    loop.step(0)
    assert queued_refreshes() == 1


def test_disconnect_reconnects_with_backoff(watch, trusted_host):
    loop, fake, clock = watch
    uri = trusted_host.effective_libvirt_uri
    loop.step(0)
    fake.fail_with[uri] = HostUnreachable("gone")
    fake.drop(uri)
    loop.step(0)
    assert uri not in fake.watching
    attempts = len(fake.attempts)
    clock.now += 0.5
    loop.step(0)
    assert len(fake.attempts) == attempts  # still backing off
    clock.now += 1.0
    loop.step(0)
    assert len(fake.attempts) == attempts + 1  # retried, failed again
    trusted_host.refresh_from_db()
    assert trusted_host.status == HostStatusChoices.UNREACHABLE
    del fake.fail_with[uri]
    clock.now += 2.5
    loop.step(0)
    assert uri in fake.watching


def test_key_mismatch_stops_watching_the_host(watch, trusted_host):
    loop, fake, clock = watch
    uri = trusted_host.effective_libvirt_uri
    fake.fail_with[uri] = HostKeyMismatch(expected_fingerprint="SHA256:a", actual_fingerprint="SHA256:b")
    loop.step(0)
    trusted_host.refresh_from_db()
    assert trusted_host.status == HostStatusChoices.KEY_MISMATCH
    assert trusted_host.pk not in loop.peers
    clock.now += 3600
    loop.step(0)
    assert fake.attempts == [uri]


def test_periodic_full_refresh_and_stale_job_cleanup(watch, trusted_host):
    from datetime import timedelta

    from django.utils import timezone

    loop, fake, clock = watch
    loop.step(0)
    clock.now += 1.5
    loop.step(0)
    Job.objects.update(status=JobStatusChoices.SUCCEEDED)
    dead = Job.objects.create(kind="vm.start", timeout_s=10, status=JobStatusChoices.RUNNING,
                              started=timezone.now() - timedelta(hours=1))
    clock.now += loop.full_refresh_s - 2
    loop.step(0)
    assert queued_refreshes() == 0
    clock.now += 2
    loop.step(0)
    assert queued_refreshes() == 1
    dead.refresh_from_db()
    assert dead.status == JobStatusChoices.ABORTED


def test_new_hosts_are_picked_up_on_resync(watch, trusted_host):
    loop, fake, clock = watch
    loop.step(0)
    Host.objects.filter(pk=trusted_host.pk).update(libvirt_uri="qemu+tcp://192.0.2.10/system")
    clock.now += loop.resync_s + 1
    loop.step(0)
    assert list(fake.watching) == ["qemu+tcp://192.0.2.10/system"]


def test_the_loop_runs_the_periodic_work_registered_in_core(settings, trusted_host, monkeypatch):
    """Whatever the apps above registered, at the loop's start and then at its interval."""
    from core import registry

    monkeypatch.setattr(registry, "_periodic", {})
    calls = []
    registry.register_periodic("test.sweep", lambda: calls.append("sweep"), every_s=20)
    settings.VMPORTAL_JOBS_INLINE = False
    clock = Clock()
    loop = HostEventWatch(watcher=FakeEventWatcher(), clock=clock, full_refresh_s=10**6)
    monkeypatch.setattr("hosts.watcher.close_old_connections", lambda: None)
    loop.step(0)
    clock.now += 19
    loop.step(0)
    assert calls == ["sweep"]
    clock.now += 1
    loop.step(0)
    assert calls == ["sweep", "sweep"]


def test_an_event_shows_its_state_at_once_and_the_refresh_still_follows_the_debounce(settings, trusted_host, monkeypatch):
    sent = []
    monkeypatch.setattr(broadcast, "vm_state", lambda vm: sent.append((vm.pk, vm.state)))
    settings.VMPORTAL_JOBS_INLINE = False
    fake, clock = FakeEventWatcher(), Clock()
    loop = HostEventWatch(watcher=fake, clock=clock, debounce_s=1.0)
    loop.step(0)
    clock.now += 1.5
    loop.step(0)  # the catch-up refresh
    Job.objects.update(status=JobStatusChoices.SUCCEEDED)
    vm = VirtualMachine.objects.get(host=trusted_host, name="web-1")
    on_event, _ = fake.watching[trusted_host.effective_libvirt_uri]
    on_event(trusted_host.effective_libvirt_uri,
             DomainEvent(domain_uuid=str(vm.uuid), domain_name="web-1", event="suspended", detail="paused"))
    loop.step(0)
    vm.refresh_from_db()
    assert vm.state == "paused" and sent == [(vm.pk, "paused")]
    assert Job.objects.filter(kind="host.refresh", status=JobStatusChoices.QUEUED).count() == 0
    clock.now += 1.5
    loop.step(0)
    assert Job.objects.filter(kind="host.refresh", status=JobStatusChoices.QUEUED).count() == 1
    # A migration's step is left to the refresh.
    on_event(trusted_host.effective_libvirt_uri,
             DomainEvent(domain_uuid=str(vm.uuid), domain_name="web-1", event="stopped", detail="migrated"))
    loop.step(0)
    vm.refresh_from_db()
    assert vm.state == "paused" and len(sent) == 1
