"""The one module that sends events to browsers (Channels groups).

Every function here schedules its group_send with transaction.on_commit, so a page never
hears about a change that was rolled back. Group names are short and dotted:
"inventory", "audit", "job.<id>", "migration.<id>".

Events to the inventory group (which every open inventory, host and guest page hears) are
coalesced: this process holds what it has to send and sends it merged (core.live_events) at
most every COALESCE_S per group — the first event of a quiet spell at once, the rest of a burst
together a moment later. Each process (daphne, the worker, each RQ work horse, a command)
coalesces its own events and sends what it holds before it ends (``flush_pending``: after
each job in a work horse, and at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

from .live_events import COALESCE_S, inventory_event, merge_inventory

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

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="broadcast-loop", daemon=True).start()
            return self._loop

    def run(self, coroutine, *, timeout: float):
        loop = self.loop()
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_process_loop = _ProcessLoop()


def _main_event_loop() -> asyncio.AbstractEventLoop | None:
    """The live event loop this thread is run for (a sync view under the ASGI server,
    ``sync_to_async``), else None."""
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if (getattr(local, "main_event_loop_pid", None) == os.getpid() and loop is not None
            and loop.is_running() and not loop.is_closed()):
        return loop
    return None


def _under_an_event_loop() -> bool:
    """Is this thread run for a live event loop (a sync view under the ASGI server, ``sync_to_async``)?"""
    return _main_event_loop() is not None


def _send_failed(group: str, event: Mapping[str, Any], exc: BaseException) -> None:
    global _last_send_warning
    # A missed live update is not worth failing the change for: pages catch up on reconnect.
    now = time.monotonic()
    if now - _last_send_warning >= SEND_WARNING_INTERVAL_S:
        _last_send_warning = now
        logger.warning("live event %s to %s not sent: %s (further failures for %.0f s at debug level)",
                       event.get("type"), group, exc, SEND_WARNING_INTERVAL_S)
    else:
        logger.debug("live event %s to %s not sent: %s", event.get("type"), group, exc)


def _send(group: str, event: dict[str, Any]) -> None:
    if group in COALESCED_GROUPS:
        _coalescer.add(group, event)
        return
    _send_now(group, event)


def _send_now(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if _under_an_event_loop():
            # That loop's connection is reused already, and consumers of an in-memory layer wait on it.
            async_to_sync(layer.group_send)(group, event)
        else:
            _process_loop.run(layer.group_send(group, event), timeout=SEND_TIMEOUT_S)
    except (RedisError, OSError, ChannelFull, TimeoutError) as exc:
        _send_failed(group, event, exc)


class _Coalescer:
    """Events this process holds for coalesced groups, merged, and the sends that empty it.

    Held per (event loop, group): what a sync view under daphne sends goes out on daphne's loop
    (an in-memory layer's consumers wait on it), what a plain thread sends on the process loop.
    A group that sent nothing for COALESCE_S sends at once; otherwise its next send waits for
    the rest of the window and takes everything that came meanwhile.
    """

    def __init__(self, merges: Mapping[str, Callable[[Any, Any], dict]], *, window_s: float) -> None:
        self._merges = merges
        self._window_s = window_s
        self._forget()

    def _forget(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: dict[tuple[asyncio.AbstractEventLoop, str], dict[str, Any]] = {}
        self._last_sent: dict[tuple[asyncio.AbstractEventLoop, str], float] = {}
        self._timers: dict[tuple[asyncio.AbstractEventLoop, str], object] = {}  # the send each key waits for
        self._in_flight: set[asyncio.Future] = set()

    def _in_this_process(self) -> None:
        # A forked work horse inherits what its parent held, for a loop no thread runs here (and
        # perhaps a lock held by a thread that is not here): it starts empty.
        if self._pid != os.getpid():
            self._forget()

    def add(self, group: str, event: dict[str, Any]) -> None:
        self._in_this_process()
        loop = _main_event_loop() or _process_loop.loop()
        key = (loop, group)
        with self._lock:
            scheduled = key in self._pending
            self._pending[key] = self._merges[group](self._pending.get(key), event)
            if scheduled:
                return  # the send already scheduled takes this one along
            delay = max(0.0, self._last_sent.get(key, 0.0) + self._window_s - time.monotonic())
            token = self._timers[key] = object()
        loop.call_soon_threadsafe(self._schedule, key, delay, token)

    def _schedule(self, key, delay: float, token: object) -> None:
        loop = key[0]
        loop.call_later(delay, lambda: self._track(loop.create_task(self._flush(key, token))))

    def _track(self, task: asyncio.Future) -> None:
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _flush(self, key, token: object | None = None) -> None:
        """Send what ``key`` holds: its timer's send (``token``), or at once (``flush``)."""
        loop, group = key
        with self._lock:
            if token is not None and self._timers.get(key) is not token:
                return  # sent by flush() already; a later event has a timer of its own
            self._timers.pop(key, None)
            event = self._pending.pop(key, None)
            self._last_sent[key] = time.monotonic()
        if event is None:
            return
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            await asyncio.wait_for(layer.group_send(group, event), SEND_TIMEOUT_S)
        except (RedisError, OSError, ChannelFull, TimeoutError) as exc:
            _send_failed(group, event, exc)

    def flush(self, *, timeout: float) -> None:
        """Send what this process holds now, and wait (up to ``timeout``) for it to be sent."""
        self._in_this_process()
        with self._lock:
            held = list(self._pending)
        deadline = time.monotonic() + timeout
        for key in held:
            loop = key[0]
            if loop.is_closed() or not loop.is_running():
                with self._lock:
                    self._pending.pop(key, None)
                    self._timers.pop(key, None)
                continue
            if loop is _main_event_loop():
                continue  # its own loop runs the send once this thread hands back; nothing to wait on here
            self._wait(self._flush(key), loop, deadline, what=key[1])
        # Sends already under way (taken from the pending set a moment ago) finish too.
        main = _main_event_loop()
        for task in list(self._in_flight):
            loop = task.get_loop()
            if loop is not main and loop.is_running():
                self._wait(asyncio.wait([task]), loop, deadline, what="the inventory")

    @staticmethod
    def _wait(coroutine, loop, deadline: float, *, what: str) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            future.result(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            future.cancel()
            logger.warning("live events to %s not sent in time", what)


COALESCED_GROUPS: dict[str, Callable[[Any, Any], dict]] = {INVENTORY_GROUP: merge_inventory}
_coalescer = _Coalescer(COALESCED_GROUPS, window_s=COALESCE_S)


def flush_pending(timeout: float = SEND_TIMEOUT_S) -> None:
    """Send the coalesced events this process still holds (a work horse after its job, a command at exit)."""
    _coalescer.flush(timeout=timeout)


atexit.register(flush_pending)


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


def inventory_changed(
    *,
    host_id: int | None = None,
    hosts_changed: bool = False,
    host_status: tuple[str, str] | None = None,
    guests: Mapping[int, tuple[str, str]] | None = None,
) -> None:
    """Something of host ``host_id`` changed (its status, facts or guests): pages showing that
    host refresh the rows they show, the others ignore it. ``hosts_changed``: the set of hosts
    itself changed (added, decommissioned, back in service, removed), so every list of hosts
    refreshes. No host at all: every inventory page refreshes.

    ``host_status`` (status, label) is the host's new status (``host.status``), ``guests`` maps
    guest ids of that host to their new (state, label) (``vm.state``): pages patch those rows
    at once. Coalesced with the group's other events (see the module's docstring)."""
    _send_on_commit(INVENTORY_GROUP, inventory_event(
        host_id=host_id, hosts_changed=hosts_changed,
        host=None if host_status is None else {"status": host_status[0], "label": host_status[1]},
        guests={vm_id: {"host_id": host_id, "state": state, "label": label}
                for vm_id, (state, label) in (guests or {}).items()},
    ))


def host_status(host) -> None:
    """host.status: ``host``'s status (and whatever else of it) changed."""
    inventory_changed(host_id=host.pk, host_status=(host.status, host.get_status_display()))


def vm_state(vm) -> None:
    """vm.state: guest ``vm`` changed state."""
    inventory_changed(host_id=vm.host_id, guests={vm.pk: (vm.state, vm.get_state_display())})


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
