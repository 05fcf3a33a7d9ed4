"""The periodic re-check of one ASGI process's open websockets, all of them together.

Every open socket must be checked again every VMPORTAL_WS_RECHECK_SECONDS (its session, its
user, their role and the object it follows; core.socket_access). One socket checking itself
costs several queries on the one thread sync code shares, so a thousand sockets each doing
it every 5 s take a core and fall behind their events. Instead each event loop (one per ASGI
process) keeps one ``SocketRecheck``: sockets join it once open and leave it when they end;
its one task, started by the first socket and stopped when the last leaves, wakes every
interval, hands the sockets open then to ``check`` (sync, run through
``database_sync_to_async``: a few queries for all of them) and closes just the ones it
names. A round that outlasts the interval delays the next one: rounds never pile up.

A change to one user's access (logout, a role lost, …) still closes that user's sockets at
once: they hear it on their user's group (core.consumers.RoleGatedConsumer.access_changed).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

# The close code when a round could not check (the database away, a bug): a socket that cannot
# be checked does not stay open, as one whose own check raised did not (daphne closes it 1011).
CLOSE_CHECK_FAILED = 1011

# When the open sockets fall to half of the most there were (and that was at least this many),
# the memory they held goes back to the system, a moment after the last of them left.
SHRINK_FROM = 100
SHRINK_DELAY_S = 1.0


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def return_freed_memory() -> None:
    """Hand the memory of sockets that closed back to the system: Python gives its emptied arenas
    back to malloc, but glibc's malloc keeps freed pages for later unless trimmed, so after a
    thousand sockets have come and gone the process stays at its peak (measured: +24 % RSS)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class SocketRecheck:
    """The sockets of one event loop and the task that re-checks them.

    ``check(sockets) -> {socket: close code}`` (sync) names the sockets to close; every socket
    has ``close_for_access(code)`` and ``access_rechecked()`` (coroutines), called after each
    round for the ones closed and for the ones kept."""

    def __init__(self, check: Callable[[list], dict], interval: Callable[[], float],
                 shrunk: Callable[[], None] = return_freed_memory):
        self.check = check
        self.interval = interval
        self.shrunk = shrunk
        self.sockets: set = set()
        self.task: asyncio.Task | None = None
        self.rounds = 0
        self.peak = 0  # the most sockets open at once since memory was last handed back
        self._shrink: asyncio.TimerHandle | None = None

    def add(self, socket) -> None:
        """A socket is open (call in its event loop): it is checked from the next round on."""
        self.sockets.add(socket)
        self.peak = max(self.peak, len(self.sockets))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="vmportal-socket-recheck")

    def discard(self, socket) -> None:
        """A socket ended; the last one to go stops the task. When half or more of the most
        sockets open at once have gone, their memory goes back to the system (``shrunk``)."""
        self.sockets.discard(socket)
        if not self.sockets and self.task is not None:
            self.task.cancel()
            self.task = None
        if self._shrink is not None or (self.peak >= SHRINK_FROM and len(self.sockets) <= self.peak // 2):
            # A moment after the last of a run of closes: by then the server has dropped its
            # closed connections too (daphne: every second).
            if self._shrink is not None:
                self._shrink.cancel()
            self._shrink = asyncio.get_running_loop().call_later(SHRINK_DELAY_S, self._shrunk)

    def _shrunk(self) -> None:
        self._shrink = None
        self.peak = len(self.sockets)
        try:
            self.shrunk()
        except Exception:  # noqa: BLE001 - only memory is at stake
            logger.exception("could not hand freed memory back")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            await self.check_now()

    async def check_now(self) -> dict:
        """One round: check the sockets open now, close those the check names (all of them, with
        CLOSE_CHECK_FAILED, if it raised). Returns {socket: code} of the ones closed."""
        sockets = list(self.sockets)
        if not sockets:
            return {}
        self.rounds += 1
        try:
            closing = await database_sync_to_async(self.check)(sockets)
        except Exception:  # noqa: BLE001 - the round must not end the task; the sockets are closed
            logger.exception("websocket re-check of %d sockets failed: closing them", len(sockets))
            closing = dict.fromkeys(sockets, CLOSE_CHECK_FAILED)
        for socket in sockets:
            if socket not in self.sockets:  # ended while the round read the database
                continue
            code = closing.get(socket)
            try:
                if code is not None:
                    await socket.close_for_access(code)
                else:
                    await socket.access_rechecked()
            except Exception:  # noqa: BLE001 - one socket's failure must not stop the others' round
                logger.exception("websocket re-check could not finish for one socket")
        return {socket: code for socket, code in closing.items() if code is not None}
