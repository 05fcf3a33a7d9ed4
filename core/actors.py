"""Who is acting: a logged-in user (with the request's IP and id), a command line or the system."""

from __future__ import annotations

import contextvars
import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

SYSTEM_LABEL = "system"
CLI_PREFIX = "cli:"

# The request being served (set by core.middleware), for audit written from Django's signals.
_current_request: contextvars.ContextVar = contextvars.ContextVar("vmportal_request", default=None)


@dataclass(frozen=True)
class Actor:
    user: AbstractBaseUser | None = None
    source_ip: str | None = None
    request_id: str = ""
    # Who acts when no portal user does: "system" (workers, the watcher) or "cli:<os user>".
    name: str = SYSTEM_LABEL

    @property
    def label(self) -> str:
        return self.user.get_username() if self.user is not None else self.name

    @classmethod
    def system(cls) -> Actor:
        return cls()

    @classmethod
    def cli(cls) -> Actor:
        """A management command, labelled with the operating-system user who ran it."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
            who = f"uid{os.getuid()}"
        return cls(name=f"{CLI_PREFIX}{who}")

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        user = getattr(request, "user", None)
        user = user if user is not None and user.is_authenticated else None
        # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy sets it.
        return cls(
            user=user,
            source_ip=request.META.get("REMOTE_ADDR") or None,
            request_id=getattr(request, "request_id", ""),
        )


def current_actor() -> Actor:
    """The request's actor inside a request; outside one (a shell, a command), the command line."""
    request = _current_request.get()
    return Actor.from_request(request) if request is not None else Actor.cli()


def set_current_request(request) -> contextvars.Token:
    return _current_request.set(request)


def reset_current_request(token: contextvars.Token) -> None:
    _current_request.reset(token)
