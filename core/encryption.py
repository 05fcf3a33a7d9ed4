"""Secrets at rest (SSH private keys, passwords), encrypted with VMPORTAL_SECRETS_KEY (Fernet)."""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from .errors import PortalError


class SecretUnreadable(PortalError):
    default_hint = (
        "VMPORTAL_SECRETS_KEY is not the key the secret was stored with. Restore the original key, "
        "or enter the host's credentials again."
    )

    def __init__(self):
        super().__init__("A stored secret could not be decrypted.")


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


def encrypt_secret(plaintext: str) -> str:
    return _fernet(settings.VMPORTAL_SECRETS_KEY).encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _fernet(settings.VMPORTAL_SECRETS_KEY).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable() from exc
