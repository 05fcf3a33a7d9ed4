"""Who is acting: a logged-in user (with the request's IP and id) or the system."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

SYSTEM_LABEL = "system"


@dataclass(frozen=True)
class Actor:
    user: AbstractBaseUser | None = None
    source_ip: str | None = None
    request_id: str = ""
    # Who acts when it is neither a user nor the system (e.g. "anonymous" for a login lockout).
    name: str = ""

    @property
    def label(self) -> str:
        if self.user is not None:
            return self.user.get_username()
        return self.name or SYSTEM_LABEL

    @classmethod
    def system(cls) -> Actor:
        return cls()

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        user = request.user if request.user.is_authenticated else None
        # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy sets it.
        return cls(
            user=user,
            source_ip=request.META.get("REMOTE_ADDR") or None,
            request_id=getattr(request, "request_id", ""),
        )
