"""Roles: groups exist, the hierarchy holds, and every page and POST checks it."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.urls import reverse

from core.choices import RoleChoices
from core.roles import user_has_role

pytestmark = pytest.mark.django_db


def test_role_groups_created_by_migration():
    assert set(Group.objects.values_list("name", flat=True)) >= {"Viewer", "Operator", "Admin"}


@pytest.mark.parametrize(
    "fixture,is_viewer,is_operator,is_admin",
    [
        ("nobody", False, False, False),
        ("viewer", True, False, False),
        ("operator", True, True, False),
        ("admin", True, True, True),
    ],
)
def test_role_hierarchy(request, fixture, is_viewer, is_operator, is_admin):
    user = request.getfixturevalue(fixture)
    assert user_has_role(user, RoleChoices.VIEWER) is is_viewer
    assert user_has_role(user, RoleChoices.OPERATOR) is is_operator
    assert user_has_role(user, RoleChoices.ADMIN) is is_admin


def test_superuser_is_admin_and_inactive_user_has_no_role(django_user_model, viewer):
    root = django_user_model.objects.create_superuser(username="root", password="x", email="")
    assert user_has_role(root, RoleChoices.ADMIN)
    viewer.is_active = False
    assert not user_has_role(viewer, RoleChoices.VIEWER)
    assert not user_has_role(AnonymousUser(), RoleChoices.VIEWER)


VIEWER_PAGES = ["hosts:inventory", "hosts:inventory_tables", "core:job_list", "core:audit", "core:audit_rows"]


@pytest.mark.parametrize("name", VIEWER_PAGES + ["hosts:host_add", "hosts:portal_key"])
def test_anonymous_is_sent_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("core:login"))


@pytest.mark.parametrize("name", VIEWER_PAGES)
def test_user_without_role_gets_403(client, nobody, name):
    client.force_login(nobody)
    assert client.get(reverse(name)).status_code == 403


@pytest.mark.parametrize("name", VIEWER_PAGES)
def test_viewer_reads(viewer_client, name):
    assert viewer_client.get(reverse(name)).status_code == 200


@pytest.mark.parametrize("name", ["hosts:host_add", "hosts:portal_key"])
def test_admin_pages_refuse_viewer_and_operator(viewer_client, operator_client, admin_client, name):
    assert viewer_client.get(reverse(name)).status_code == 403
    assert operator_client.get(reverse(name)).status_code == 403
    assert operator_client.post(reverse(name), {}).status_code == 403
    assert admin_client.get(reverse(name)).status_code == 200


def test_login_and_logout(client, viewer):
    response = client.post(reverse("core:login"), {"username": "vera", "password": "correct horse battery"})
    assert response.status_code == 302
    assert client.get(reverse("hosts:inventory")).status_code == 200
    client.post(reverse("core:logout"))
    assert client.get(reverse("hosts:inventory")).status_code == 302


def test_pages_send_security_headers(viewer_client):
    response = viewer_client.get(reverse("hosts:inventory"))
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert len(response["X-Request-ID"]) == 32
