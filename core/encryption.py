"""Secrets at rest (SSH private keys, passwords), encrypted with VMPORTAL_SECRETS_KEY (Fernet).

The setting holds one key or several, newest first: new secrets are encrypted with the first,
any of them decrypts (MultiFernet), so adding a key in front never makes a stored secret
unreadable. `manage.py secrets_rotate` re-encrypts every stored secret with the first key;
then the older keys can be dropped. Apps declare their encrypted fields with
`register_encrypted_field` from `AppConfig.ready()` (core imports no app above it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import transaction

from .errors import PortalError


class SecretUnreadable(PortalError):
    default_hint = (
        "VMPORTAL_SECRETS_KEY is not the key the secret was stored with. Restore the original key, "
        "or enter the host's credentials again."
    )

    def __init__(self):
        super().__init__("A stored secret could not be decrypted.")


def secrets_keys() -> list[str]:
    """The configured Fernet keys, newest first."""
    return [key.strip() for key in settings.VMPORTAL_SECRETS_KEY.split(",") if key.strip()]


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(secrets_keys()))


def encrypt_secret(plaintext: str) -> str:
    """Encrypt with the newest key."""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Decrypt with whichever configured key the secret was stored with."""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable() from exc


@dataclass(frozen=True)
class EncryptedField:
    model: type
    field: str

    @property
    def label(self) -> str:
        return f"{self.model._meta.label}.{self.field}"


_ENCRYPTED_FIELDS: list[EncryptedField] = []


def register_encrypted_field(model: type, field: str) -> None:
    """Declare a text field holding encrypt_secret() output (empty means no secret)."""
    entry = EncryptedField(model, field)
    if entry not in _ENCRYPTED_FIELDS:
        _ENCRYPTED_FIELDS.append(entry)


def encrypted_fields() -> list[EncryptedField]:
    return list(_ENCRYPTED_FIELDS)


@dataclass(frozen=True)
class RotationResult:
    field: str
    rotated: int
    unreadable: list[str]


def secrets_rotate() -> list[RotationResult]:
    """Re-encrypt every stored secret with the newest key, one transaction per field.

    A secret that no configured key opens is left as it is and reported (by primary key):
    rotating must never destroy what an older key, once restored, could still read.
    """
    fernet = _current()
    results = []
    for entry in encrypted_fields():
        rotated, unreadable = 0, []
        with transaction.atomic():
            rows = entry.model.objects.select_for_update().exclude(**{entry.field: ""})
            for pk, token in rows.values_list("pk", entry.field):
                try:
                    fresh = fernet.rotate(token.encode()).decode()
                except InvalidToken:
                    unreadable.append(str(pk))
                    continue
                entry.model.objects.filter(pk=pk).update(**{entry.field: fresh})
                rotated += 1
        results.append(RotationResult(entry.label, rotated, unreadable))
    return results
