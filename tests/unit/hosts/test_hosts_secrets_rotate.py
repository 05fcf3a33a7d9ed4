"""Secrets key rotation: old keys still decrypt, `secrets_rotate` re-encrypts every stored secret."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from core.encryption import SecretUnreadable, decrypt_secret, encrypt_secret
from core.models import AuditEvent
from hosts.choices import HostAuthMethodChoices
from hosts.models import Host, PortalKey

pytestmark = pytest.mark.django_db

OLD, NEW, LOST = (Fernet.generate_key().decode() for _ in range(3))


def _stored(settings):
    settings.VMPORTAL_SECRETS_KEY = OLD
    host = Host.objects.create(name="kvm-p", address="192.0.2.5", auth_method=HostAuthMethodChoices.PASSWORD,
                               secret_encrypted=encrypt_secret("hunter2"))
    portal = PortalKey.objects.create(private_key_encrypted=encrypt_secret("PEM"), public_key="ssh-ed25519 AAAA")
    return host, portal


def test_a_new_key_in_front_still_decrypts_what_the_old_one_stored_and_encrypts_with_the_new(settings):
    host, _ = _stored(settings)
    settings.VMPORTAL_SECRETS_KEY = f"{NEW},{OLD}"
    assert decrypt_secret(host.secret_encrypted) == "hunter2"
    token = encrypt_secret("fresh")
    assert Fernet(NEW.encode()).decrypt(token.encode()) == b"fresh"


def test_secrets_rotate_re_encrypts_every_stored_secret_with_the_first_key(settings):
    host, portal = _stored(settings)
    settings.VMPORTAL_SECRETS_KEY = f"{NEW},{OLD}"
    call_command("secrets_rotate")
    settings.VMPORTAL_SECRETS_KEY = NEW  # the old key dropped
    host.refresh_from_db()
    portal.refresh_from_db()
    assert decrypt_secret(host.secret_encrypted) == "hunter2"
    assert decrypt_secret(portal.private_key_encrypted) == "PEM"
    settings.VMPORTAL_SECRETS_KEY = OLD
    with pytest.raises(SecretUnreadable):
        decrypt_secret(host.secret_encrypted)
    event = AuditEvent.objects.get(action="secrets.rotate")
    assert {(f["field"], f["rotated"]) for f in event.parameters["fields"]} == {
        ("hosts.Host.secret_encrypted", 1), ("hosts.PortalKey.private_key_encrypted", 1),
        ("hosts.HostChange.secret_encrypted", 0), ("hosts.VirtualMachine.definition_encrypted", 0),
        ("recovery.RecoveryItem.definition_encrypted", 0)}


def test_secrets_rotate_leaves_a_secret_no_key_opens_and_says_which(settings):
    host, _ = _stored(settings)
    settings.VMPORTAL_SECRETS_KEY = LOST
    lost = Host.objects.create(name="kvm-l", address="192.0.2.6", auth_method=HostAuthMethodChoices.PASSWORD,
                               secret_encrypted=encrypt_secret("gone"))
    settings.VMPORTAL_SECRETS_KEY = f"{NEW},{OLD}"
    with pytest.raises(CommandError, match=rf"hosts.Host.secret_encrypted pk {lost.pk}\b"):
        call_command("secrets_rotate")
    untouched = Host.objects.get(pk=lost.pk).secret_encrypted
    assert untouched == lost.secret_encrypted
    host.refresh_from_db()
    settings.VMPORTAL_SECRETS_KEY = NEW
    assert decrypt_secret(host.secret_encrypted) == "hunter2"
