"""Websocket consumers for job pages and the audit page, and the base every consumer uses.

Each consumer checks the user's role on connect (closing with 4401/4403 otherwise) and that
the user may see the object it follows (``object_allowed``: a job, a migration, an evacuation
of hosts outside the user's host groups is refused with 4403), joins one group and sends the
current state first, so a page that reconnects catches up. While open it checks its session,
role and object again every VMPORTAL_WS_RECHECK_SECONDS — all of the process's sockets in one
round of a few queries (core.socket_recheck, ``recheck_sockets``) — and at once on its own
whenever its user's access changes, and closes when any is gone.
"""

import asyncio
import logging
import time
import weakref

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from .broadcast import AUDIT_GROUP, WARNINGS_GROUP, job_group, job_state_payload, user_group
from .choices import RoleChoices
from .models import AuditEvent, Job
from .roles import targets_visible, user_has_role
from .socket_access import (
    CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, SocketFacts, access_close_code, access_facts, close_codes, user_facts,
)
from .socket_recheck import SocketRecheck

CLOSE_NOT_FOUND = 4404
# How often an open socket joins its groups again: well inside the channel layer's group_expiry.
GROUP_RENEW_S = 3600.0

# Channel-layer calls the sockets of one process make at once (joining and leaving groups, the
# re-check's send): well below the Redis pool's 100 connections, which redis-py does not wait
# for once all are in use ("Too many connections"). A thousand sockets closing together (a
# proxy restart, a client's network) then leave their groups in turn instead of failing to.
LAYER_CALLS_AT_ONCE = 32
_layer_gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_rechecks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

logger = logging.getLogger(__name__)


def _layer_gate() -> asyncio.Semaphore:
    """This event loop's gate (one per loop: a semaphore belongs to the loop it first waits in)."""
    loop = asyncio.get_running_loop()
    gate = _layer_gates.get(loop)
    if gate is None:
        gate = _layer_gates[loop] = asyncio.Semaphore(LAYER_CALLS_AT_ONCE)
    return gate


def _socket_recheck() -> SocketRecheck:
    """This event loop's (this ASGI process's) re-check of its open sockets."""
    loop = asyncio.get_running_loop()
    recheck = _rechecks.get(loop)
    if recheck is None:
        recheck = _rechecks[loop] = SocketRecheck(recheck_sockets, lambda: settings.VMPORTAL_WS_RECHECK_SECONDS)
    return recheck


def forget_cached_access(user) -> None:
    """Drop the roles and grants a (scope's) user object keeps, so they are read afresh."""
    target = getattr(user, "_wrapped", user)  # the scope's user is a lazy object
    for cached in [name for name in getattr(target, "__dict__", {}) if name.startswith("_vmportal_")]:
        delattr(target, cached)


def recheck_sockets(sockets: list) -> dict:
    """{socket: close code} of the open ``sockets`` whose session is gone, whose user is gone,
    inactive or changed password, whose role is gone (CLOSE_UNAUTHENTICATED / CLOSE_FORBIDDEN,
    core.socket_access.close_codes) or whose record the user may no longer see (CLOSE_FORBIDDEN,
    ``refused_among``); ``access_kept`` runs for the others. Sync; a few queries however many
    sockets (one more per user for sockets that follow a record)."""
    facts = {}
    for socket in sockets:
        session = socket.scope.get("session")
        facts[socket] = SocketFacts(user_id=socket.scope["user"].pk,
                                    session_key=session.session_key if session is not None else None,
                                    required_role=socket.required_role)
    sessions, users = access_facts(facts)
    codes = close_codes(facts, sessions=sessions, users={pk: user_facts(user) for pk, user in users.items()},
                        backends=settings.AUTHENTICATION_BACKENDS)
    for socket in sockets:
        # What the socket's own user object keeps is read afresh when it next needs it.
        forget_cached_access(socket.scope["user"])
    kept_by_class: dict[type, list] = {}
    for socket in sockets:
        if codes[socket] is None:
            kept_by_class.setdefault(type(socket), []).append(socket)
    for cls, kept in kept_by_class.items():
        for socket in cls.refused_among(kept, users):
            codes[socket] = CLOSE_FORBIDDEN
    return {socket: code for socket, code in codes.items() if code is not None}


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any websocket path no app routes: refused at the handshake, not a routing error."""

    async def connect(self):
        await self.close(code=CLOSE_NOT_FOUND)


class RoleGatedConsumer(AsyncJsonWebsocketConsumer):
    """Async: an event is passed on in the server's event loop, without a thread per message;
    what reads the database (``get_group``, ``object_allowed``, ``access_kept``,
    ``current_state``, the access check) stays plain sync code, run through
    ``database_sync_to_async``."""

    required_role = RoleChoices.VIEWER
    group = ""

    async def __call__(self, scope, receive, send):
        try:
            return await super().__call__(scope, receive, send)
        finally:
            _socket_recheck().discard(self)

    async def dispatch(self, message):
        """As Channels' own, without its ``aclose_old_connections()`` before every handler: that is
        a hop to the one thread sync code shares, for every event on every socket, so 200 sockets
        hearing one event queued 200 hops behind each other (seconds under 50 events/s). Every
        database read here goes through ``database_sync_to_async``, which closes stale
        connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def _access_close_code(self) -> int | None:
        """None while the socket may stay open (sync: reads the session, roles and grants). The
        check of this one socket, when its user's access changed; the periodic one checks all of
        the process's sockets together (``recheck_sockets``) and gives the same answers."""
        user = self.scope.get("user")
        session = self.scope.get("session")
        code = access_close_code(
            user_id=user.pk, session_key=session.session_key if session is not None else None,
            role=self.required_role,
        )
        forget_cached_access(user)  # roles and grants are read afresh
        if code is None and not self.object_allowed(user):
            code = CLOSE_FORBIDDEN
        if code is None:
            self.access_kept(user)
        return code

    async def _close_if_access_gone(self) -> None:
        if getattr(self, "closing", False):
            return
        code = await database_sync_to_async(self._access_close_code)()
        if code is not None:
            await self.close_for_access(code)

    async def close_for_access(self, code: int) -> None:
        """Close with ``code``: the session, the role or the object is gone (or, CLOSE_CHECK_FAILED,
        could not be checked)."""
        if not getattr(self, "closing", False):
            self.closing = True
            await self.close(code=code)

    async def access_rechecked(self) -> None:
        """The periodic re-check kept this socket open."""
        if not getattr(self, "closing", False):
            await self._renew_membership()

    # A consumer that follows one record (a job, a migration, an evacuation) names its model,
    # gives the record's id (``record_id``, after ``get_group``) and ``visible_records``: the
    # default ``object_allowed`` asks whether the user may still see it, and the periodic
    # re-check asks it for all of one user's sockets of that kind in one query.
    record_model = None

    def record_id(self):
        return None

    @classmethod
    def visible_records(cls, user, rows):
        """``rows`` (of ``record_model``) narrowed to those the user may see."""
        return rows

    def object_allowed(self, user) -> bool:
        """Whether the user may see what this socket follows (after ``get_group``): the record it
        follows, if any, through ``visible_records``."""
        if self.record_model is None:
            return True
        return self.visible_records(user, self.record_model.objects.filter(pk=self.record_id())).exists()

    def access_kept(self, user) -> None:
        """The user still may listen; a consumer that filters its events by host reloads them."""

    @classmethod
    def refused_among(cls, sockets: list, users: dict) -> set:
        """Of ``sockets`` (all of this class, their session and role still good; ``users``: their
        users by id, as ``recheck_sockets`` read them), those whose record the user may no longer
        see; ``access_kept`` has run for the others. Sync: no query for sockets that follow no
        record, one per user for those that do. A consumer whose ``access_kept`` reads
        overrides this to read for all its sockets together."""
        refused: set = set()
        if cls.record_model is None:  # object_allowed is then True unless a consumer says otherwise
            for socket in sockets:
                user = users[socket.scope["user"].pk]
                if socket.object_allowed(user):
                    socket.access_kept(user)
                else:
                    refused.add(socket)
            return refused
        by_user: dict[int, list] = {}
        for socket in sockets:
            by_user.setdefault(socket.scope["user"].pk, []).append(socket)
        for user_id, own in by_user.items():
            user = users[user_id]
            rows = cls.visible_records(user, cls.record_model.objects.filter(pk__in={s.record_id() for s in own}))
            seen = {str(pk) for pk in rows.values_list("pk", flat=True)}
            for socket in own:
                if str(socket.record_id()) in seen:
                    socket.access_kept(user)
                else:
                    refused.add(socket)
        return refused

    async def _renew_membership(self) -> None:
        # The channel layer forgets a member after its group_expiry (so a socket whose server
        # died stops being sent to); an open socket joins again well before that.
        now = time.monotonic()
        if now - getattr(self, "joined_at", now) < GROUP_RENEW_S:
            return
        self.joined_at = now
        await self.join_groups(self.joined_group, user_group(self.scope["user"].pk))

    async def join_groups(self, *groups: str) -> None:
        async with _layer_gate():
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)

    async def leave_groups(self, *groups: str) -> None:
        async with _layer_gate():
            for group in groups:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def access_changed(self, event):
        session = self.scope.get("session")
        ended = event.get("ended_session")
        if ended and session is not None and session.session_key == ended:
            if not getattr(self, "closing", False):
                self.closing = True
                await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self._close_if_access_gone()

    def get_group(self) -> str | None:
        """Group to join, or None if the target does not exist."""
        return self.group

    def current_state(self) -> dict:
        raise NotImplementedError

    def _admission(self) -> tuple[int | None, str | None]:
        """(close code, None) to refuse the socket, or (None, the group to join) (sync)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED, None
        if not user_has_role(user, self.required_role):
            return CLOSE_FORBIDDEN, None
        group = self.get_group()
        if group is None:
            return CLOSE_NOT_FOUND, None
        if not self.object_allowed(user):
            return CLOSE_FORBIDDEN, None
        self.access_kept(user)
        return None, group

    async def connect(self):
        code, group = await database_sync_to_async(self._admission)()
        if code is not None:
            await self.close(code=code)
            return
        self.joined_group = group
        self.joined_at = time.monotonic()
        await self.join_groups(group, user_group(self.scope["user"].pk))
        await self.groups_joined()
        await self.accept()
        await self.send_json(await database_sync_to_async(self.current_state)())
        _socket_recheck().add(self)

    async def groups_joined(self) -> None:
        """Joined its groups, the state not yet sent: a consumer that follows more groups joins
        them here, so nothing sent to them after the state is missed."""

    async def disconnect(self, code):
        group = getattr(self, "joined_group", None)
        if group:
            await self.leave_groups(group, user_group(self.scope["user"].pk))

    async def receive_json(self, content, **kwargs):
        # Pages only listen; anything they send is ignored.
        return

    async def send_json(self, content, close=False):
        # A live event can reach a page that closed an instant earlier (its disconnect is still
        # queued behind this event): there is nobody left to tell, which is not an error.
        try:
            await super().send_json(content, close=close)
        except Disconnected:
            pass


class JobConsumer(RoleGatedConsumer):
    record_model = Job

    def get_group(self):
        self.job_id = self.scope["url_route"]["kwargs"]["job_id"]
        if not Job.objects.filter(pk=self.job_id).exists():
            return None
        return job_group(self.job_id)

    def record_id(self):
        return self.job_id

    @classmethod
    def visible_records(cls, user, rows):
        return targets_visible(user, rows)

    def current_state(self):
        job = Job.objects.get(pk=self.job_id)
        return {"type": "job.state", "job": job_state_payload(job), "log": job.log}

    async def job_status(self, event):
        await self.send_json({"type": "job.status", "job": event["job"]})

    async def job_log(self, event):
        await self.send_json({"type": "job.log", "entry": event["entry"]})


class AuditConsumer(RoleGatedConsumer):
    group = AUDIT_GROUP

    def current_state(self):
        latest = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        return {"type": "audit.state", "latest_id": latest}

    async def audit_recorded(self, event):
        await self.send_json({"type": "audit.recorded", "event_id": event["event_id"]})


class WarningConsumer(RoleGatedConsumer):
    """Every page's banner of live warnings (an overrunning maintenance window, …)."""

    group = WARNINGS_GROUP

    def current_state(self):
        return {"type": "warnings.state"}

    async def warning_announced(self, event):
        await self.send_json({"type": "warning.announced", "warning": event["warning"]})
