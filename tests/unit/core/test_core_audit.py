"""Audit trail: secrets redacted (pure), rows append-only, actor and request context recorded."""

import pytest

from core.actors import Actor
from core.audit import REDACTED, audit_record, redact_parameters
from core.choices import AuditResultChoices
from core.models import AppendOnlyError, AuditEvent

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"password": "hunter2"}, {"password": REDACTED}),
        ({"Password": "x", "ssh-password": "y", "passwd": "z"}, {"Password": REDACTED, "ssh-password": REDACTED, "passwd": REDACTED}),
        ({"private_key": "k", "privateKey": "k", "privkey": "k"}, {"private_key": REDACTED, "privateKey": REDACTED, "privkey": REDACTED}),
        ({"secret": "s", "client_secret": "s", "api_key": "a", "auth_token": "t"}, {"secret": REDACTED, "client_secret": REDACTED, "api_key": REDACTED, "auth_token": REDACTED}),
        ({"nested": {"password": "p", "name": "n"}}, {"nested": {"password": REDACTED, "name": "n"}}),
        ({"list": [{"token": "t"}, "plain"]}, {"list": [{"token": REDACTED}, "plain"]}),
        ({"note": PEM}, {"note": REDACTED}),
        ({"password": None, "private_key": ""}, {"password": None, "private_key": ""}),
        ({"name": "kvm-01", "port": 22, "ok": True, "ratio": 0.5}, {"name": "kvm-01", "port": 22, "ok": True, "ratio": 0.5}),
        ({"host_key_fingerprint": "SHA256:abc", "public_key": "ssh-ed25519 AAAA"}, {"host_key_fingerprint": "SHA256:abc", "public_key": "ssh-ed25519 AAAA"}),
    ],
)
def test_redact_parameters(params, expected):
    assert redact_parameters(params) == expected


def test_redact_does_not_modify_input_and_stringifies_unknown_types():
    params = {"password": "p", "when": object}
    out = redact_parameters(params)
    assert params["password"] == "p"
    assert isinstance(out["when"], str)


@pytest.fixture
def event(db):
    return audit_record(
        actor=Actor.system(), action="test.thing", result=AuditResultChoices.OK, parameters={"password": "p"}
    )


def test_audit_record_redacts_and_labels_system(event):
    event.refresh_from_db()
    assert event.actor is None and event.actor_label == "system"
    assert event.parameters == {"password": REDACTED}


def test_audit_record_keeps_user_ip_and_request_id(admin):
    event = audit_record(
        actor=Actor(user=admin, source_ip="198.51.100.7", request_id="abc123"),
        action="host.add", result=AuditResultChoices.REFUSED, target=admin, message="m",
    )
    event.refresh_from_db()
    assert (event.actor_label, event.source_ip, event.request_id) == ("ada", "198.51.100.7", "abc123")
    assert (event.target_type, event.target_id, event.target_label) == ("user", str(admin.pk), "ada")


def test_audit_event_cannot_be_updated(event):
    event.message = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(message="tampered")
    assert AuditEvent.objects.get(pk=event.pk).message == ""


def test_audit_event_cannot_be_deleted(event):
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()
