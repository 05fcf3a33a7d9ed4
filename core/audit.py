"""Writing the audit trail. Services call audit_record() inside their own transaction."""

from __future__ import annotations

import re
from typing import Any

from django.db import models, transaction

from . import audit_chain, broadcast
from .actors import Actor
from .choices import AuditResultChoices
from .models import AuditEvent, Job

REDACTED = "[redacted]"

# Parameter names whose values are secrets, matched anywhere in the (normalised) key.
_SECRET_KEY_RE = re.compile(
    r"pass(word|wd|phrase)?|private_?key|privkey|secret|token|credential|api_?key|cookie|session_?id|fernet"
)
_PEM_PRIVATE_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_RE.search(key.lower().replace("-", "_")))


def redact_parameters(value: Any) -> Any:
    """Return a copy of value with secrets replaced by "[redacted]".

    Dict entries are redacted by key name (password, private_key, secret, token, ...), at any
    depth; any string that contains a PEM private key is redacted whatever its key.
    Non-JSON types are turned into strings so the result always fits a JSONField.
    """
    if isinstance(value, dict):
        return {
            str(key): (REDACTED if _is_secret_key(str(key)) and item not in (None, "") else redact_parameters(item))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_parameters(item) for item in value]
    if isinstance(value, str):
        return REDACTED if _PEM_PRIVATE_RE.search(value) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def audit_record(
    *,
    actor: Actor,
    action: str,
    result: AuditResultChoices,
    target: models.Model | None = None,
    parameters: dict[str, Any] | None = None,
    message: str = "",
    job: Job | None = None,
) -> AuditEvent:
    """Append one audit event to the chain (call inside the transaction that makes the change).

    On PostgreSQL the chain's lock is held until that transaction ends, so keep audited
    transactions short (no host I/O inside them: house style already).
    """
    event = audit_chain.append(AuditEvent(
        actor=actor.user,
        actor_label=actor.label,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=str(target)[:255] if target is not None else "",
        parameters=redact_parameters(parameters or {}),
        result=result,
        message=message,
        source_ip=actor.source_ip,
        request_id=actor.request_id,
        job=job,
    ))
    broadcast.audit_recorded(event)
    return event


def audit_record_now(**kwargs: Any) -> AuditEvent:
    """audit_record() in its own transaction, for outcomes with no other change to commit."""
    with transaction.atomic():
        return audit_record(**kwargs)
