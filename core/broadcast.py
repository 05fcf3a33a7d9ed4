"""The one module that sends events to browsers (Channels groups).

Every function here schedules its group_send with transaction.on_commit, so a page never
hears about a change that was rolled back. Group names are short and dotted:
"inventory", "audit", "job.<id>", "migration.<id>".
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .models import AuditEvent, Job

logger = logging.getLogger(__name__)

INVENTORY_GROUP = "inventory"
AUDIT_GROUP = "audit"
WARNINGS_GROUP = "warnings"  # every open page listens: warnings that must not wait for a reload


def job_group(job_id: int) -> str:
    return f"job.{job_id}"


def migration_group(migration_id: int) -> str:
    return f"migration.{migration_id}"


# One warning per this many seconds when events cannot be sent (a CLI run without Redis
# would otherwise print one per event); the rest go to the debug log.
SEND_WARNING_INTERVAL_S = 60.0
_last_send_warning = 0.0


# Longest a send may hold up its sender (a worker, a job) before it is given up.
SEND_TIMEOUT_S = 5.0


class _ProcessLoop:
    """This process's own event loop, in a daemon thread, for sends from threads without one.

    ``async_to_sync`` from a plain thread (workers, jobs, commands) runs each call in a new
    event loop, so the channel layer opens a new connection to Redis for every event — tens
    of milliseconds each on a busy host, a dozen of them between a confirm and libvirt's
    migrate call. Sends through this loop share its connection. A forked process (an RQ
    work horse) starts a loop of its own: threads do not survive a fork.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def run(self, coroutine, *, timeout: float):
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="broadcast-loop", daemon=True).start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_process_loop = _ProcessLoop()


def _under_an_event_loop() -> bool:
    """Is this thread run for a live event loop (a sync view under the ASGI server, ``sync_to_async``)?"""
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    return (getattr(local, "main_event_loop_pid", None) == os.getpid() and loop is not None
            and loop.is_running() and not loop.is_closed())


def _send(group: str, event: dict[str, Any]) -> None:
    global _last_send_warning
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if _under_an_event_loop():
            # That loop's connection is reused already, and consumers of an in-memory layer wait on it.
            async_to_sync(layer.group_send)(group, event)
        else:
            _process_loop.run(layer.group_send(group, event), timeout=SEND_TIMEOUT_S)
    except (RedisError, OSError, ChannelFull) as exc:
        # A missed live update is not worth failing the change for: pages catch up on reconnect.
        now = time.monotonic()
        if now - _last_send_warning >= SEND_WARNING_INTERVAL_S:
            _last_send_warning = now
            logger.warning("live event %s to %s not sent: %s (further failures for %.0f s at debug level)",
                           event.get("type"), group, exc, SEND_WARNING_INTERVAL_S)
        else:
            logger.debug("live event %s to %s not sent: %s", event.get("type"), group, exc)


def _send_on_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: _send(group, event))


def job_state_payload(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": job.get_status_display(),
        "progress": job.progress,
        "error": job.error,
        "error_hint": job.error_hint,
        "result": job.result,
        "started": job.started.isoformat() if job.started else None,
        "ended": job.ended.isoformat() if job.ended else None,
        "terminal": job.is_terminal,
    }


def job_changed(job: Job) -> None:
    _send_on_commit(job_group(job.pk), {"type": "job.status", "job": job_state_payload(job)})


def job_log(job: Job, entry: dict[str, Any]) -> None:
    _send_on_commit(job_group(job.pk), {"type": "job.log", "entry": entry})


def inventory_changed(*, host_id: int | None = None, hosts_changed: bool = False) -> None:
    """Something of host ``host_id`` changed (its status, facts or guests): pages showing that
    host refresh the rows they show, the others ignore it. ``hosts_changed``: the set of hosts
    itself changed (added, decommissioned, back in service, removed), so every list of hosts
    refreshes. No host at all: every inventory page refreshes."""
    _send_on_commit(INVENTORY_GROUP, {"type": "inventory.changed", "host_id": host_id,
                                      "hosts_changed": hosts_changed})


def audit_recorded(event: AuditEvent) -> None:
    _send_on_commit(AUDIT_GROUP, {"type": "audit.recorded", "event_id": event.pk})


def migration_status(migration_id: int, state: dict[str, Any]) -> None:
    """A migration changed status or phase; ``state`` is migrations_app's state payload."""
    _send_on_commit(migration_group(migration_id), {"type": "migration.status", "migration": state})


def migration_progress(migration_id: int, sample: dict[str, Any]) -> None:
    """One progress sample of a running migration (sent at once when outside a transaction)."""
    # The id goes along: an evacuation's page follows several migrations on one socket.
    _send_on_commit(migration_group(migration_id), {"type": "migration.progress", "migration_id": migration_id,
                                                    "sample": sample})


def evacuation_group(evacuation_id: int) -> str:
    return f"evacuation.{evacuation_id}"


def evacuation_status(evacuation_id: int, state: dict[str, Any]) -> None:
    """An evacuation or one of its items changed; ``state`` is maintenance's evacuation payload."""
    _send_on_commit(evacuation_group(evacuation_id), {"type": "evacuation.status", "evacuation": state})


def user_group(user_id: int) -> str:
    """Every open socket of one user (core.socket_access)."""
    return f"user.{user_id}"


def user_access_changed(user_id: int, *, ended_session: str | None = None) -> None:
    """The user's sessions or roles may have changed: each of their sockets checks again at once.

    ``ended_session`` names a session that is ending (a logout): its sockets close without asking.
    """
    _send_on_commit(user_group(user_id), {"type": "access.changed", "ended_session": ended_session})


def warning_announced(*, title: str, message: str, url: str = "", kind: str = "") -> None:
    """A warning every open page shows at once (base.html's banner; live.js fills it as text)."""
    _send_on_commit(WARNINGS_GROUP, {"type": "warning.announced", "warning": {
        "title": title, "message": message, "url": url, "kind": kind}})
