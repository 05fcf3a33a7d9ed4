"""People pages and services: invite links are one-time, expire and are stored hashed; every
change is audited; Django's admin is for superusers only."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core import people
from core.actors import Actor
from core.models import AuditEvent, UserInvitation

pytestmark = pytest.mark.django_db


def _token_from(page) -> str:
    link = page.content.decode().split('id="one-time-link">')[1].split("<")[0]
    return link.rstrip("/").rsplit("/", 1)[1]


@pytest.mark.parametrize("used, expired, active, usable", [
    (False, False, True, True),
    (True, False, True, False),
    (False, True, True, False),
    (False, False, False, False),
])
def test_invitation_usable_table(used, expired, active, usable):
    now = timezone.now()
    user = get_user_model()(username="x", is_active=active)
    invitation = UserInvitation(user=user, used_at=now if used else None,
                                expires_at=now - timedelta(seconds=1) if expired else now + timedelta(hours=1))
    assert people.invitation_usable(invitation, now=now) is usable
    assert people.invitation_usable(None, now=now) is False


def test_invite_link_is_shown_once_stored_hashed_and_opens_once(admin_client):
    page = admin_client.post(reverse("core:person_add"), {"username": "ivy", "email": "ivy@example.org",
                                                         "role": "Operator", "password": ""})
    assert page.status_code == 200
    token = _token_from(page)
    invitation = UserInvitation.objects.get(user__username="ivy")
    assert invitation.token_hash == people.token_hash(token) and token not in invitation.token_hash
    assert AuditEvent.objects.filter(action="user.invite", target_label="ivy").exists()
    anonymous = Client()
    url = reverse("core:invitation_accept", kwargs={"token": token})
    assert anonymous.get(url).status_code == 200
    response = anonymous.post(url, {"new_password1": "a long pass phrase 7", "new_password2": "a long pass phrase 7"})
    assert response.status_code == 302
    assert anonymous.get(url).status_code == 404  # spent
    ivy = get_user_model().objects.get(username="ivy")
    assert ivy.check_password("a long pass phrase 7")
    assert ivy.groups.filter(name="Operator").exists()


def test_expired_and_forged_links_are_404(admin):
    user, token = people.user_create(username="late", email="", role=None, password=None, actor=Actor.system())
    UserInvitation.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert Client().get(reverse("core:invitation_accept", kwargs={"token": token})).status_code == 404
    assert Client().get(reverse("core:invitation_accept", kwargs={"token": "x" * 300})).status_code == 404


def test_deactivate_reset_and_role_are_audited(admin_client, operator):
    url = reverse("core:person", kwargs={"pk": operator.pk})
    admin_client.post(url, {"action": "role", "role": "Viewer"})
    assert list(operator.groups.values_list("name", flat=True)) == ["Viewer"]
    page = admin_client.post(url, {"action": "reset"})
    assert _token_from(page)
    operator.refresh_from_db()
    assert not operator.has_usable_password()
    admin_client.post(url, {"action": "deactivate"})
    operator.refresh_from_db()
    assert not operator.is_active
    actions = set(AuditEvent.objects.filter(target_type="user", target_id=str(operator.pk))
                  .values_list("action", flat=True))
    assert {"user.role", "user.password_reset", "user.deactivate"} <= actions


def test_people_pages_need_admin_and_list_shows_last_login(admin_client, operator_client, operator):
    assert operator_client.get(reverse("core:people")).status_code == 403
    assert operator_client.post(reverse("core:person", kwargs={"pk": operator.pk}), {"action": "reset"}).status_code == 403
    page = admin_client.get(reverse("core:people"))
    assert page.status_code == 200 and b"otto" in page.content and b"Last login" in page.content


def test_an_admin_cannot_deactivate_themselves(admin_client, admin):
    admin_client.post(reverse("core:person", kwargs={"pk": admin.pk}), {"action": "deactivate"})
    admin.refresh_from_db()
    assert admin.is_active


def test_django_admin_is_for_superusers_only(admin_client, admin):
    admin.is_staff = True
    admin.save()
    assert admin_client.get("/admin/").status_code == 302  # a portal Admin, not a superuser: to the login
    superuser = get_user_model().objects.create_superuser("root", password="x-long-pass-9", email="")
    client = Client()
    client.force_login(superuser)
    page = client.get("/admin/")
    assert page.status_code == 200 and b"superusers only" in page.content
