"""Keep the inventory fresh (run by `manage.py watch_hosts`, exactly one per installation).

One event connection per trusted host, through the adapter's EventWatcher. Its callbacks run
in libvirt's event thread, so they only put items on a queue; this loop (the main thread)
does all database work: it shows the state a lifecycle event tells of at once (hosts.live_state),
debounces bursts of events into one refresh per host, reconnects
lost hosts with exponential backoff, picks up hosts added or re-trusted meanwhile, and every
VMPORTAL_INVENTORY_REFRESH_SECONDS queues a full refresh of every host (events can be missed).
It also runs the periodic work other apps registered in core.registry (the migrations app:
hand free slots to waiting migrations, reconcile those whose worker died), at start and then
at each task's interval.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from core.actors import Actor
from core.registry import PeriodicSchedule, periodic_tasks
from hosts.adapters.errors import AdapterError, HostKeyMismatch
from hosts.adapters.libvirt import EventWatcher

from . import access, services
from .jobs import inventory_refresh_all
from .live_state import state_after_event
from .models import Host

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


def reconnect_delay(failures: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before the next connection attempt after `failures` failures in a row."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures - 1))


@dataclass
class _Peer:
    host_id: int
    name: str
    uri: str
    failures: int = 0
    next_attempt: float = 0.0
    connected: bool = False


class HostEventWatch:
    def __init__(
        self,
        *,
        watcher: EventWatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        debounce_s: float = 1.0,
        resync_s: float = 30.0,
        full_refresh_s: float | None = None,
    ):
        self.watcher = watcher if watcher is not None else EventWatcher()
        self.clock = clock
        self.debounce_s = debounce_s
        self.resync_s = resync_s
        self.inbox: queue.Queue = queue.Queue()
        self.peers: dict[int, _Peer] = {}
        self.pending: dict[int, float] = {}
        self.next_resync = 0.0
        self.full_refresh_s = (
            full_refresh_s if full_refresh_s is not None else settings.VMPORTAL_INVENTORY_REFRESH_SECONDS
        )
        self.next_full_refresh = clock() + self.full_refresh_s
        self.periodic = PeriodicSchedule(periodic_tasks(), now=clock())
        self.actor = Actor.system()

    # Called from libvirt's event thread: only hand over.
    def on_event(self, uri, event) -> None:
        self.inbox.put(("event", uri, event))

    def on_disconnect(self, uri, reason) -> None:
        self.inbox.put(("disconnect", uri, reason))

    def _peer_for_uri(self, uri: str) -> _Peer | None:
        return next((peer for peer in self.peers.values() if peer.uri == uri), None)

    def sync_hosts(self) -> None:
        """Watch every connectable host; drop hosts removed, untrusted or whose URI changed."""
        close_old_connections()
        wanted = {host.pk: host for host in Host.objects.all() if host.is_connectable}
        for host_id, peer in list(self.peers.items()):
            host = wanted.get(host_id)
            if host is None or host.effective_libvirt_uri != peer.uri:
                self._drop(peer)
        for host_id, host in wanted.items():
            if host_id in self.peers:
                continue
            uri = host.effective_libvirt_uri
            if self._peer_for_uri(uri) is not None:
                logger.warning("%s has the same libvirt URI as another host; not watching it twice", host.name)
                continue
            self.peers[host_id] = _Peer(host_id=host_id, name=host.name, uri=uri)

    def _drop(self, peer: _Peer) -> None:
        self.watcher.unwatch(peer.uri)
        self.peers.pop(peer.host_id, None)
        self.pending.pop(peer.host_id, None)

    def connect_due(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if peer.connected or peer.next_attempt > now:
                continue
            host = Host.objects.filter(pk=peer.host_id).first()
            if host is None:
                self._drop(peer)
                continue
            try:
                self.watcher.watch(
                    peer.uri, self.on_event, self.on_disconnect, ssh_target=access.ssh_target_for(host)
                )
            except AdapterError as exc:
                peer.failures += 1
                peer.next_attempt = now + reconnect_delay(peer.failures)
                logger.warning(
                    "cannot watch %s (attempt %d, next in %.0f s): %s",
                    peer.name, peer.failures, peer.next_attempt - now, exc.message,
                )
                services.host_contact_failed(
                    host=host, error=exc.message, hint=exc.hint,
                    key_mismatch=isinstance(exc, HostKeyMismatch), actor=self.actor,
                )
                if isinstance(exc, HostKeyMismatch):
                    self._drop(peer)
                continue
            logger.info("watching %s at %s", peer.name, peer.uri)
            peer.connected = True
            peer.failures = 0
            # Events may have been missed while disconnected: catch up with one refresh.
            self.pending.setdefault(peer.host_id, now)

    def handle(self, item, now: float) -> None:
        kind, uri, payload = item
        peer = self._peer_for_uri(uri)
        if peer is None:
            return
        if kind == "event":
            logger.info("%s: %s %s %s", peer.name, payload.domain_name, payload.event, payload.detail)
            self.apply_state(peer, payload)
            self.pending.setdefault(peer.host_id, now)
        elif kind == "disconnect":
            logger.warning("lost the event connection to %s (%s); reconnecting", peer.name, payload)
            self.watcher.unwatch(uri)
            peer.connected = False
            peer.failures += 1
            peer.next_attempt = now + reconnect_delay(peer.failures)

    def apply_state(self, peer: _Peer, event) -> None:
        """Show the state the event tells of at once; the refresh after the debounce does the rest."""
        observed = state_after_event(event.event, event.detail)
        if observed is None:
            return
        host = Host.objects.filter(pk=peer.host_id).first()
        if host is not None:
            services.vm_state_observed(host=host, domain_uuid=event.domain_uuid, state=observed.state,
                                       reason=observed.reason)

    def flush_due(self, now: float) -> list[int]:
        """Queue one refresh per host whose first pending event is older than the debounce."""
        due = [host_id for host_id, since in self.pending.items() if now - since >= self.debounce_s]
        for host_id in due:
            self.pending.pop(host_id)
            host = Host.objects.filter(pk=host_id).first()
            if host is not None:
                # Routine: a new disk path is read on the host, known ones keep their placement.
                services.host_refresh_request(host=host, actor=self.actor, full=False)
        return due

    def step(self, timeout: float) -> None:
        """One loop turn: wait for events up to `timeout`, then do whatever is due."""
        try:
            items = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            items = []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        now = self.clock()
        for item in items:
            self.handle(item, now)
        if now >= self.next_resync:
            self.sync_hosts()
            self.next_resync = now + self.resync_s
        self.connect_due(now)
        self.flush_due(now)
        if now >= self.next_full_refresh:
            queued = inventory_refresh_all()
            logger.info("periodic refresh: queued %d host(s)", queued)
            self.next_full_refresh = now + self.full_refresh_s
        self.periodic.run_due(now)

    def run(self, stop: threading.Event, *, tick_s: float = 0.5) -> None:
        try:
            while not stop.is_set():
                self.step(tick_s)
        finally:
            self.watcher.close()
