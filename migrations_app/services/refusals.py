"""A refused request: audited in a transaction of its own (the refusal must outlive the
request's), then raised as ServiceRefused for the view or command to show."""

from __future__ import annotations

from typing import NoReturn

from core.actors import Actor
from core.audit import audit_record_now
from core.choices import AuditResultChoices
from hosts.services import ServiceRefused

__all__ = ["ServiceRefused", "refuse"]


def refuse(*, actor: Actor, action: str, target, parameters: dict, message: str, hint: str = "") -> NoReturn:
    """Audit the refusal of ``action`` on ``target`` and raise ServiceRefused(message, hint)."""
    audit_record_now(
        actor=actor, action=action, result=AuditResultChoices.REFUSED, target=target,
        parameters=parameters, message=message,
    )
    raise ServiceRefused(message, hint=hint)
