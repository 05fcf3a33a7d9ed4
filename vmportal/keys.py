"""Where the two keys come from: the environment first, then the files `make run` keeps in var/.

`make run` generates var/secret_key and var/secrets.key once; every other process (a
`manage.py` command in a second terminal, a worker) only reads them, so it works beside
`make run` with no exports. Nothing here ever creates a key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

GENERATE_FERNET = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
# Fernet keys are URL-safe base64: commas, spaces and new lines can only separate keys.
_KEY_SEPARATORS = re.compile(r"[,\s]+")


class MissingKey(ImproperlyConfigured):
    """A key is neither in the environment nor in var/; the message is the one line to show."""


def _from_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise MissingKey(f"Cannot read {path}: {exc.strerror}.") from None


def secret_key(var_dir: Path, *, debug: bool) -> str:
    """Django's SECRET_KEY: DJANGO_SECRET_KEY, else var/secret_key, else (debug only) a dev key."""
    key = os.environ.get("DJANGO_SECRET_KEY", "") or _from_file(var_dir / "secret_key")
    if key:
        return key
    if debug:
        return "dev-only-insecure-secret-key-do-not-use-in-production"
    raise MissingKey(
        f"Set DJANGO_SECRET_KEY (or run `make run` once, which writes {var_dir / 'secret_key'}; "
        "DJANGO_DEBUG=1 for development)."
    )


def secrets_keys(var_dir: Path, *, debug: bool) -> str:
    """The Fernet keys encrypting secrets at rest, newest first, comma-separated.

    VMPORTAL_SECRETS_KEY (one key, or several separated by commas for a rotation), else
    var/secrets.key (one key a line). In debug mode with neither, a fixed development key.
    """
    raw = os.environ.get("VMPORTAL_SECRETS_KEY", "") or _from_file(var_dir / "secrets.key")
    keys = [key for key in _KEY_SEPARATORS.split(raw) if key]
    if not keys:
        if debug:
            # Public on purpose, like the dev SECRET_KEY: development data only.
            return "ZGV2LW9ubHktdm1wb3J0YWwtc2VjcmV0cy1rZXktISE="
        raise MissingKey(
            f"Set VMPORTAL_SECRETS_KEY to a Fernet key (generate one with {GENERATE_FERNET}), "
            f"or run `make run` once, which writes {var_dir / 'secrets.key'}."
        )
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise MissingKey(
                f"VMPORTAL_SECRETS_KEY key #{position} is not a Fernet key (32 URL-safe base64-encoded bytes); "
                f"generate one with {GENERATE_FERNET}."
            ) from None
    return ",".join(keys)


def audit_key(var_dir: Path, *, debug: bool, others: tuple[str, ...]) -> str:
    """The key signing the audit trail's checkpoints: VMPORTAL_AUDIT_KEY, else var/audit.key.

    In debug mode with neither, a fixed development key. It must differ from every key in
    ``others`` (SECRET_KEY and the secrets keys): whoever holds those must not be able to
    re-sign a rewritten trail.
    """
    key = os.environ.get("VMPORTAL_AUDIT_KEY", "") or _from_file(var_dir / "audit.key")
    if not key:
        if debug:
            return "dev-only-vmportal-audit-key-do-not-use-in-production"
        raise MissingKey(
            "Set VMPORTAL_AUDIT_KEY to a random string (python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
            f"or run `make run` once, which writes {var_dir / 'audit.key'}."
        )
    if key in others:
        raise MissingKey("VMPORTAL_AUDIT_KEY must differ from DJANGO_SECRET_KEY and VMPORTAL_SECRETS_KEY.")
    return key
