"""The core app's management command: ensure_admin."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from core.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_ensure_admin_generates_password_once(monkeypatch, capsys):
    monkeypatch.delenv("VMPORTAL_ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password) and admin.groups.filter(name="Admin").exists()
    call_command("ensure_admin")
    assert "unchanged" in capsys.readouterr().out
    monkeypatch.setenv("VMPORTAL_ADMIN_PASSWORD", "from-env-123")
    call_command("ensure_admin")
    admin.refresh_from_db()
    assert admin.check_password("from-env-123")
    assert "password set" in capsys.readouterr().out
    # Same password again: not re-hashed, so logged-in sessions of admin stay valid.
    hashed = admin.password
    call_command("ensure_admin")
    admin.refresh_from_db()
    assert admin.password == hashed and "unchanged" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action="user.ensure_admin").count() == 4
    assert "from-env-123" not in json.dumps(list(AuditEvent.objects.values_list("parameters", flat=True)))
