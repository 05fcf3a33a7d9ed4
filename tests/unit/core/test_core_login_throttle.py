"""Login throttling: per user name and per address, a clear page when locked, audited lockout and unlock."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from core.models import AuditEvent
from tests.unit.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 5


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def attempt(username, password, ip="198.51.100.7"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/login/", {"username": username, "password": password})
    return response, "_auth_user_id" in client.session


def fail(username, times, ip="198.51.100.7"):
    for _ in range(times):
        response, logged_in = attempt(username, "wrong password", ip)
        assert not logged_in
    return response


def test_the_right_password_after_the_limit_of_wrong_ones_is_refused_with_a_clear_page(viewer):
    fail("vera", LIMIT - 1)
    assert attempt("vera", PASSWORD)[1]  # below the limit the right password still works
    fail("vera", LIMIT)
    response, logged_in = attempt("vera", PASSWORD)
    assert not logged_in and response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page and "axes_reset_username" in page
    assert 'name="username"' in page  # still the login page, not a bare error


def test_a_locked_user_name_is_refused_from_any_address(viewer):
    fail("vera", LIMIT, ip="198.51.100.7")
    response, logged_in = attempt("vera", PASSWORD, ip="203.0.113.9")
    assert not logged_in and response.status_code == 429


def test_an_address_trying_many_user_names_is_locked_for_every_user(viewer, operator):
    for n in range(LIMIT):
        fail(f"guess{n}", 1, ip="198.51.100.66")
    response, logged_in = attempt("otto", PASSWORD, ip="198.51.100.66")
    assert not logged_in and response.status_code == 429
    assert attempt("otto", PASSWORD, ip="203.0.113.9")[1]  # from elsewhere otto is not locked


def test_a_lockout_is_audited_once_however_many_tries_follow(viewer):
    fail("vera", LIMIT + 10)
    events = AuditEvent.objects.filter(action="login.lockout")
    assert events.count() == 1
    event = events.get()
    assert event.result == "refused" and event.actor_label == "anonymous" and event.source_ip == "198.51.100.7"
    assert event.parameters["username"] == "vera" and event.target_id == str(viewer.pk)
    assert "password" not in str(event.parameters).lower()


def test_axes_reset_username_unlocks_and_the_unlock_is_audited(viewer):
    fail("vera", LIMIT)
    call_command("axes_reset_username", "vera")
    assert attempt("vera", PASSWORD)[1]
    unlock = AuditEvent.objects.get(action="login.unlock")
    assert unlock.parameters["how"] == "reset" and unlock.target_id == str(viewer.pk)


def test_a_lockout_ends_by_itself_after_the_cool_off_and_that_is_audited(viewer, settings):
    fail("vera", LIMIT)
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert attempt("vera", PASSWORD)[1]
    assert AuditEvent.objects.get(action="login.unlock").parameters["how"] == "expired"


def test_failures_below_the_limit_are_forgotten_after_a_successful_login_without_an_unlock_event(viewer):
    fail("vera", LIMIT - 1)
    assert attempt("vera", PASSWORD)[1]
    fail("vera", LIMIT - 1)
    assert attempt("vera", PASSWORD)[1]
    assert not AuditEvent.objects.filter(action__startswith="login.").exists()
