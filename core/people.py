"""People: create, invite, deactivate, reset passwords, set roles. Writes of the People pages
and their audit, each in one transaction (Django's own user signals add their low-level rows
in the same transaction, see receivers.py).

An invitation or a reset is a one-time link: a random token whose SHA-256 alone is stored,
valid for INVITATION_HOURS, used once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from .actors import Actor
from .audit import audit_record
from .choices import AuditResultChoices, RoleChoices
from .errors import ServiceRefused
from .models import UserInvitation

INVITATION_HOURS = 72


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_usable(invitation: UserInvitation | None, *, now) -> bool:
    """Pure: a link opens only once, before it expires, for an active user."""
    return (invitation is not None and invitation.used_at is None and invitation.expires_at > now
            and invitation.user.is_active)


def _set_role(user, role: RoleChoices | None) -> None:
    """One role at most (each includes the ones below it); only real changes touch the groups."""
    wanted = RoleChoices(role).value if role else None
    held = list(user.groups.filter(name__in=[r.value for r in RoleChoices]))
    stale = [group for group in held if group.name != wanted]
    if stale:
        user.groups.remove(*stale)
    if wanted and wanted not in {group.name for group in held}:
        user.groups.add(Group.objects.get_or_create(name=wanted)[0])


def _new_link(user, *, kind: str, actor: Actor) -> str:
    token = secrets.token_urlsafe(32)
    UserInvitation.objects.filter(user=user, used_at__isnull=True).update(expires_at=timezone.now())
    UserInvitation.objects.create(
        user=user, kind=kind, token_hash=token_hash(token), created_by_label=actor.label,
        expires_at=timezone.now() + timedelta(hours=INVITATION_HOURS),
    )
    return token


@transaction.atomic
def user_create(*, username: str, email: str, role: RoleChoices | None, password: str | None, actor: Actor):
    """A new person. Without a password they get a one-time invitation link (returned as token)."""
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise ServiceRefused(f"A user named {username!r} already exists.", hint="Choose another user name.")
    user = User(username=username, email=email, is_active=True)
    if password:
        password_validation.validate_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    _set_role(user, role)
    token = None if password else _new_link(user, kind=UserInvitation.Kind.INVITE, actor=actor)
    audit_record(
        actor=actor, action="user.invite" if token else "user.add", result=AuditResultChoices.OK, target=user,
        parameters={"username": username, "email": email, "role": str(role or ""),
                    "expires_hours": INVITATION_HOURS if token else None},
        message=f"Invited {username} (link valid {INVITATION_HOURS} h)." if token else f"Added {username}.",
    )
    return user, token


@transaction.atomic
def user_role_set(*, user, role: RoleChoices | None, actor: Actor):
    before = sorted(user.groups.values_list("name", flat=True))
    _set_role(user, role)
    audit_record(actor=actor, action="user.role", result=AuditResultChoices.OK, target=user,
                 parameters={"old": before, "new": str(role or "")},
                 message=f"{user.username} now has the role {role or 'none'}.")
    return user


@transaction.atomic
def user_active_set(*, user, active: bool, actor: Actor):
    """Deactivate (sessions and sockets end at once, see socket_access) or reactivate a person."""
    if actor.user is not None and actor.user.pk == user.pk and not active:
        raise ServiceRefused("You cannot deactivate yourself.", hint="Ask another admin.")
    user.is_active = active
    user.save(update_fields=["is_active"])
    if not active:
        UserInvitation.objects.filter(user=user, used_at__isnull=True).update(expires_at=timezone.now())
    audit_record(actor=actor, action="user.activate" if active else "user.deactivate",
                 result=AuditResultChoices.OK, target=user,
                 message=f"{user.username} is {'active again' if active else 'deactivated'}.")
    return user


@transaction.atomic
def user_password_reset(*, user, actor: Actor) -> str:
    """A one-time link for the person to choose a new password; the old one stops working now."""
    user.set_unusable_password()
    user.save(update_fields=["password"])
    token = _new_link(user, kind=UserInvitation.Kind.RESET, actor=actor)
    audit_record(actor=actor, action="user.password_reset", result=AuditResultChoices.OK, target=user,
                 parameters={"expires_hours": INVITATION_HOURS},
                 message=f"Password reset link made for {user.username} (valid {INVITATION_HOURS} h).")
    return token


def invitation_for(token: str) -> UserInvitation | None:
    invitation = UserInvitation.objects.select_related("user").filter(token_hash=token_hash(token)).first()
    return invitation if invitation_usable(invitation, now=timezone.now()) else None


@transaction.atomic
def invitation_accept(*, token: str, password: str, actor: Actor):
    """The person behind the link sets their password; the link is spent."""
    invitation = (UserInvitation.objects.select_for_update().select_related("user")
                  .filter(token_hash=token_hash(token)).first())
    if not invitation_usable(invitation, now=timezone.now()):
        raise ServiceRefused("This link has expired or was used already.", hint="Ask an admin for a new one.")
    user = invitation.user
    password_validation.validate_password(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    invitation.used_at = timezone.now()
    invitation.save(update_fields=["used_at"])
    audit_record(actor=Actor(user=user, source_ip=actor.source_ip, request_id=actor.request_id),
                 action="user.password_set", result=AuditResultChoices.OK, target=user,
                 parameters={"link": invitation.kind}, message=f"{user.username} set their password.")
    return user
