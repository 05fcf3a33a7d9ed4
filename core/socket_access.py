"""Whether an open websocket may still hear the portal: its session and its user's role.

A socket is authorised at connect, but a page can stay open for days. Every socket
(core.consumers.RoleGatedConsumer) is therefore checked again every VMPORTAL_WS_RECHECK_SECONDS
(all of one process's sockets together, core.socket_recheck: ``access_facts`` reads their
sessions, users and roles in a few queries and ``close_codes`` decides), and at once when its
user's access changes: it joins its user's group, and the receivers below tell that group when
the user logs out, is deactivated, changes password, gains or loses a group, or is deleted
(sent through core.broadcast, after the commit); that socket then checks itself alone
(``access_close_code``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.core.exceptions import ValidationError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from . import broadcast
from .choices import ROLE_ORDER, RoleChoices
from .roles import load_role_facts, user_has_role, user_role_rank

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


@dataclass(frozen=True)
class SocketFacts:
    """Who an open socket was opened for and what it needs."""

    user_id: int
    session_key: str | None
    required_role: RoleChoices


@dataclass(frozen=True)
class SessionFacts:
    """What a stored, unexpired session says: the user it logs in (None: none, or not an id),
    the backend that logged them in and the hash of their password at login."""

    user_id: int | None
    backend: str | None
    auth_hash: str


@dataclass(frozen=True)
class UserFacts:
    """A user as they are now: active, their session hash now (changes with the password), and
    the highest role they hold (core.roles.user_role_rank: -1 none)."""

    is_active: bool
    auth_hash: str
    rank: int


def close_codes(sockets: Mapping[Hashable, SocketFacts], *, sessions: Mapping[str, SessionFacts],
                users: Mapping[int, UserFacts], backends: Sequence[str]) -> dict[Hashable, int | None]:
    """Pure: for each socket, None while it may stay open, else the code to close it with — the
    same answer ``access_close_code`` gives one socket, given the facts read for all of them
    (``sessions``: the stored, unexpired ones by key; ``users``: those the sessions name)."""
    codes: dict[Hashable, int | None] = {}
    for key, socket in sockets.items():
        session = sessions.get(socket.session_key) if socket.session_key else None
        if session is None or session.user_id is None or session.backend not in backends:
            codes[key] = CLOSE_UNAUTHENTICATED
            continue
        user = users.get(session.user_id)
        if (user is None or not user.is_active or session.user_id != socket.user_id
                or not constant_time_compare(session.auth_hash, user.auth_hash)):
            codes[key] = CLOSE_UNAUTHENTICATED
        elif user.rank < ROLE_ORDER.index(socket.required_role):
            codes[key] = CLOSE_FORBIDDEN
        else:
            codes[key] = None
    return codes


# Keys (and ids) in one IN (...) list: well inside SQLite's limit on a statement's parameters.
IN_LIST_CHUNK = 500


def _chunks(values: list, size: int = IN_LIST_CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _session_facts(data: Mapping) -> SessionFacts:
    User = get_user_model()
    try:
        user_id = None if data.get(SESSION_KEY) is None else User._meta.pk.to_python(data.get(SESSION_KEY))
    except (ValidationError, ValueError):  # not an id: the session logs nobody in
        user_id = None
    return SessionFacts(user_id=user_id, backend=data.get(BACKEND_SESSION_KEY),
                        auth_hash=data.get(HASH_SESSION_KEY) or "")


def stored_sessions(session_keys: Iterable[str]) -> dict[str, SessionFacts]:
    """The unexpired sessions among ``session_keys``: one query per IN_LIST_CHUNK keys with a
    database session engine (db, cached_db: the database holds every session), else one load
    per session (a cache or cookie engine reads no database)."""
    keys = sorted({key for key in session_keys if key})
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    found: dict[str, SessionFacts] = {}
    if issubclass(engine, DatabaseSessionStore):
        decoder = engine()
        for chunk in _chunks(keys):
            rows = engine.get_model_class().objects.filter(session_key__in=chunk, expire_date__gt=timezone.now())
            for key, data in rows.values_list("session_key", "session_data"):
                found[key] = _session_facts(decoder.decode(data))
        return found
    for key in keys:
        session = engine(key)
        if session.exists(key):
            data = session.load()
            if data:
                found[key] = _session_facts(data)
    return found


def access_facts(sockets: Mapping[Hashable, SocketFacts]) -> tuple[dict[str, SessionFacts], dict[int, object]]:
    """The sessions of ``sockets`` and the users they log in (fresh rows, their roles and the
    higher apps' grants read with them: core.roles.load_role_facts), in a few queries whatever
    the number of sockets. Returns (sessions by key, users by id)."""
    sessions = stored_sessions(socket.session_key for socket in sockets.values())
    user_ids = sorted({session.user_id for session in sessions.values() if session.user_id is not None})
    User = get_user_model()
    users = {}
    for chunk in _chunks(user_ids):
        users.update((user.pk, user) for user in User._default_manager.filter(pk__in=chunk))
    load_role_facts(list(users.values()))
    return sessions, users


def user_facts(user) -> UserFacts:
    """``UserFacts`` of a user from ``access_facts`` (no query: its roles were read with it)."""
    return UserFacts(is_active=user.is_active, auth_hash=user.get_session_auth_hash(), rank=user_role_rank(user))


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
