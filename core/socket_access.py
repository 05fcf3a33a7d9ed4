"""Whether an open websocket may still hear the portal: its session and its user's role.

A socket is authorised at connect, but a page can stay open for days. Every socket
(core.consumers.RoleGatedConsumer) therefore checks again every VMPORTAL_WS_RECHECK_SECONDS,
and at once when its user's access changes: it joins its user's group, and the receivers
below tell that group when the user logs out, is deactivated, changes password, gains or
loses a group, or is deleted (sent through core.broadcast, after the commit).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from . import broadcast
from .choices import RoleChoices
from .roles import user_has_role

# Close codes (the page shows why and does not reconnect on these).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def session_user(session_key: str | None):
    """The active user the session still logs in, or None (session gone, user gone or inactive,
    or the password changed since: the session's hash no longer matches, as in Django's get_user)."""
    if not session_key:
        return None
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    session = engine(session_key)
    if not session.exists(session_key):
        return None
    user_id = session.get(SESSION_KEY)
    if user_id is None or session.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    User = get_user_model()
    try:
        user = User._default_manager.get(pk=User._meta.pk.to_python(user_id))
    except (User.DoesNotExist, ValueError):
        return None
    stored_hash = session.get(HASH_SESSION_KEY) or ""
    if not user.is_active or not constant_time_compare(stored_hash, user.get_session_auth_hash()):
        return None
    return user


def access_close_code(*, user_id: int, session_key: str | None, role: RoleChoices) -> int | None:
    """None while the socket may stay open, else the code to close it with."""
    user = session_user(session_key)
    if user is None or user.pk != user_id:
        return CLOSE_UNAUTHENTICATED
    if not user_has_role(user, role):
        return CLOSE_FORBIDDEN
    return None


def _user_changed(sender, instance, **kwargs):
    broadcast.user_access_changed(instance.pk)


def _membership_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    if action not in ("post_add", "post_remove", "post_clear", "pre_clear"):
        return
    if not reverse:  # user.groups.add(...)
        broadcast.user_access_changed(instance.pk)
        return
    # group.user_set.add(...): pk_set names the users (empty on clear: the group's members, read before).
    user_ids = pk_set or set()
    if action == "pre_clear":
        instance._vmportal_cleared_user_ids = set(instance.user_set.values_list("pk", flat=True))
        return
    if action == "post_clear":
        user_ids = getattr(instance, "_vmportal_cleared_user_ids", set())
    for user_id in user_ids:
        broadcast.user_access_changed(user_id)


def _group_deleting(sender, instance, **kwargs):
    # Its members lose the role with it; the membership rows go without an m2m signal.
    for user_id in instance.user_set.values_list("pk", flat=True):
        broadcast.user_access_changed(user_id)


def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        # The session is flushed after this signal: name it, so its sockets close without a race.
        broadcast.user_access_changed(user.pk, ended_session=request.session.session_key)


def connect_receivers() -> None:
    User = get_user_model()
    post_save.connect(_user_changed, sender=User, dispatch_uid="vmportal.socket_access.user_saved")
    post_delete.connect(_user_changed, sender=User, dispatch_uid="vmportal.socket_access.user_deleted")
    m2m_changed.connect(_membership_changed, sender=User.groups.through,
                        dispatch_uid="vmportal.socket_access.groups")
    pre_delete.connect(_group_deleting, sender=Group, dispatch_uid="vmportal.socket_access.group_deleted")
    user_logged_out.connect(_logged_out, dispatch_uid="vmportal.socket_access.logged_out")
