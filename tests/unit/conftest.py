"""Fixtures for the Django unit tests: users per role, hosts, and the fake fleet.

``fleet`` (tests/fakes/fleet.py) is plugged in where the portal reaches a host
(``hosts.access.override``), so services, jobs, runners and the adapters themselves run for
real down to SSH and libvirt.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from core.actors import Actor
from hosts import access
from hosts.adapters.ssh import generate_keypair
from hosts.choices import HostAuthMethodChoices
from hosts.services import HostConnection, host_create
from tests.fakes.fleet import Fleet, make_domain

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def no_live_events_held_over():
    """What one test's sends left held by the live-event coalescer never reaches the next test."""
    yield
    from core import broadcast

    broadcast._coalescer._forget()


def _user(username: str, role: str | None, *, superuser: bool = False):
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(username=username, password=PASSWORD, email="")
    user = User.objects.create_user(username=username, password=PASSWORD)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def viewer(db):
    return _user("vera", "Viewer")


@pytest.fixture
def operator(db):
    return _user("otto", "Operator")


@pytest.fixture
def admin(db):
    return _user("ada", "Admin")


@pytest.fixture
def nobody(db):
    return _user("norole", None)


def _client_for(client_class, user):
    client = client_class()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(viewer):
    from django.test import Client

    return _client_for(Client, viewer)


@pytest.fixture
def operator_client(operator):
    from django.test import Client

    return _client_for(Client, operator)


@pytest.fixture
def admin_client(admin):
    from django.test import Client

    return _client_for(Client, admin)


@pytest.fixture
def fleet():
    fleet = Fleet()
    with access.override(fleet.session_for):
        yield fleet


@pytest.fixture
def world(fleet, monkeypatch, settings):
    """The fake fleet with quick migration jobs: the runner, gatherer and adapters run for real on it."""
    from migrations_app import runner

    monkeypatch.setattr(runner, "HEARTBEAT_SETTLE_S", 0)
    real_tick = runner.Sampler.tick

    def tick(sampler):
        fleet.jobs.run_due_actions()
        real_tick(sampler)

    monkeypatch.setattr(runner.Sampler, "tick", tick)
    settings.VMPORTAL_MIGRATION_SAMPLE_SECONDS = 0.005
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = ""
    return fleet


@pytest.fixture
def private_key_pem():
    pem, _ = generate_keypair()
    return pem


@pytest.fixture
def trusted_host(db, fleet, private_key_pem, django_capture_on_commit_callbacks):
    """A host added with its key pinned and refreshed once (two guests)."""
    hv = fleet.add("kvm-a", address="192.0.2.10", domains=[make_domain("web-1"), make_domain("db-1", state="shutoff", reason="shutdown", id=None)])
    with django_capture_on_commit_callbacks(execute=True):
        host, _job = host_create(
            name="kvm-a",
            connection=HostConnection(
                address=hv.address, ssh_port=22, ssh_user="root",
                auth_method=HostAuthMethodChoices.PRIVATE_KEY, private_key_pem=private_key_pem,
            ),
            actor=Actor.system(),
            trusted_host_key=hv.host_key,
        )
    host.refresh_from_db()
    return host
