"""The portal's one error family.

Every error the portal raises on purpose carries a ``message`` (what is wrong, safe to
show) and a ``hint`` (what to do next). Views, jobs and commands catch ``PortalError``
by type instead of duck-typing ``.message``/``.hint``. No Django here: the adapters
derive their errors from it too.
"""

from __future__ import annotations


class PortalError(Exception):
    """Base class: an expected failure with a message and a hint for the person."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class ServiceRefused(PortalError):
    """A service refused the request as it stands; .message says why, .hint what to do.

    Defined here (not in an app's services) so any app's services can refuse, and the lease
    of a guest (hosts.leases.GuestBusy) can be one kind of refusal, without import circles.
    """
