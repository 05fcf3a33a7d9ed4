"""Actions audited outside the services: logins, users, groups, memberships, refusals, the CLI."""

from __future__ import annotations

import getpass

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from core.actors import Actor
from core.models import AuditEvent
from tests.unit.conftest import PASSWORD


@pytest.fixture
def superuser_client(db):
    root = get_user_model().objects.create_superuser(username="root-admin", password=PASSWORD, email="")
    client = Client()
    client.force_login(root)
    client.user = root
    return client


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-pk").first()


def test_login_success_failure_and_logout(viewer):
    client = Client(REMOTE_ADDR="203.0.113.9")
    client.post(reverse("core:login"), {"username": "vera", "password": "wrong"})
    failed = last("auth.login_failed")
    assert failed.result == "failed" and failed.parameters == {"username": "vera"}
    assert failed.source_ip == "203.0.113.9" and "wrong" not in str(failed.parameters) and failed.request_id
    client.post(reverse("core:login"), {"username": "vera", "password": PASSWORD})
    ok = last("auth.login")
    assert (ok.actor, ok.source_ip, ok.target_id) == (viewer, "203.0.113.9", str(viewer.pk))
    client.post(reverse("core:logout"))
    out = last("auth.logout")
    assert out.actor == viewer and out.result == "ok"
    # last_login stamped by the login is not a separate "user changed" event
    assert not AuditEvent.objects.filter(action="user.change").exists()


def test_failed_login_with_hostile_username_is_bounded(db):
    Client().post(reverse("core:login"), {"username": "x" * 5000 + "<script>", "password": "p"})
    assert len(last("auth.login_failed").parameters["username"]) == 150


def test_user_create_change_password_and_delete_by_an_admin_request(superuser_client):
    user = get_user_model().objects.create_user(username="newbie", password="pw-one-two")
    created = last("user.create")
    assert created.target_id == str(user.pk) and created.actor_label.startswith("cli:")
    assert created.parameters["changes"]["username"] == [None, "newbie"]
    # Through Django's admin: the request's user is the actor.
    response = superuser_client.post(reverse("admin:auth_user_change", args=[user.pk]), {
        "username": "newbie", "is_active": "on", "is_staff": "on", "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00",
    })
    assert response.status_code in (200, 302)
    change = last("user.change")
    assert change is not None and change.actor == superuser_client.user
    assert change.parameters["changes"]["is_staff"] == [False, True] and change.request_id
    user.refresh_from_db()
    user.set_password("another-pw-9")
    user.save()
    assert last("user.change").parameters["changes"] == {"password": "[redacted]"}
    assert last("user.change").message == "User newbie changed: password."
    assert "another-pw-9" not in str(last("user.change").parameters)
    user_id = user.pk
    user.delete()
    deleted = last("user.delete")
    assert deleted.parameters == {"username": "newbie", "id": user_id}


def test_promotion_viewer_to_admin_is_recorded_from_either_side(viewer):
    admin_group = Group.objects.get_or_create(name="Admin")[0]
    viewer.groups.add(admin_group)
    added = last("user.group_add")
    assert added.target_id == str(viewer.pk) and added.parameters["group"] == "Admin"
    admin_group.user_set.remove(viewer)
    removed = last("user.group_remove")
    assert removed.target_id == str(viewer.pk) and removed.parameters["changes"]["groups"] == ["Admin", None]
    viewer.groups.add(admin_group)
    viewer.groups.clear()
    cleared = AuditEvent.objects.filter(action="user.group_remove", target_id=str(viewer.pk)).count()
    assert cleared == 3  # the Viewer group and Admin, by the clear, plus the remove before


def test_group_create_rename_delete(db):
    group = Group.objects.create(name="auditors")
    assert last("group.create").parameters["changes"] == {"name": [None, "auditors"]}
    group.name = "reviewers"
    group.save()
    assert last("group.change").parameters["changes"] == {"name": ["auditors", "reviewers"]}
    group.delete()
    assert last("group.delete").parameters["name"] == "reviewers"


def test_refused_mutating_request_is_audited_but_a_refused_read_is_not(viewer_client, viewer):
    before = AuditEvent.objects.filter(action="request.refused").count()
    assert viewer_client.get(reverse("core:audit_chain")).status_code == 403
    assert AuditEvent.objects.filter(action="request.refused").count() == before
    assert viewer_client.post(reverse("core:audit_chain")).status_code == 403
    refused = last("request.refused")
    assert refused.actor == viewer and refused.result == "refused"
    assert refused.parameters == {"method": "POST", "path": reverse("core:audit_chain")}


def test_csrf_failure_is_a_refused_request(viewer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    assert client.post(reverse("core:audit_chain")).status_code == 403
    assert last("request.refused").actor == viewer


def test_commands_record_the_operating_system_user(db):
    actor = Actor.cli()
    assert actor.label == f"cli:{getpass.getuser()}" and actor.user is None
    call_command("audit_checkpoint")
    call_command("ensure_admin")
    assert last("user.create").actor_label == actor.label


def test_rq_dashboard_is_not_served(superuser_client):
    # It would empty queues and delete jobs unaudited; the portal's job pages replace it.
    assert superuser_client.get("/admin/django_rq/dashboard/").status_code == 404
    assert superuser_client.get("/admin/django_rq/").status_code == 404
    assert "django_rq" not in superuser_client.get("/admin/").content.decode()
