"""What a libvirt lifecycle event says a guest's state now is (pure, no Django).

The event watcher applies this at once, so a page shows a guest that was started, paused,
resumed or stopped within moments; the debounced refresh that follows re-reads everything
else. Events that say nothing certain about the state on that host answer ``None`` and are
left to the refresh: a definition added or removed, a shutdown that has only begun (its
"stopped" event follows), and the steps of a migration (the guest leaves or arrives; the
migration's own record and its refresh of both hosts tell that story).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ObservedState:
    state: str  # a libvirt state name, as hosts.adapters.libvirt.state_name() gives it
    reason: str


# (event, detail) -> state and the reason libvirt itself reports for it (virDomainGetState).
_PAUSED_REASON = {"paused": "user", "io_error": "ioerror", "watchdog": "watchdog",
                  "from_snapshot": "from_snapshot", "api_error": "api_error", "restored": "from_snapshot"}
_MIGRATION_DETAILS = {"migrated", "postcopy", "postcopy_failed"}


def state_after_event(event: str, detail: str) -> ObservedState | None:
    """The state guest is in on the host that sent lifecycle event ``event``/``detail``."""
    if detail in _MIGRATION_DETAILS:
        return None
    if event == "started":
        return ObservedState("running", "booted" if detail == "booted" else detail)
    if event == "resumed":
        return ObservedState("running", "unpaused" if detail == "unpaused" else detail)
    if event == "suspended":
        return ObservedState("paused", _PAUSED_REASON.get(detail, "unknown"))
    if event == "stopped":
        return ObservedState("shutoff", detail)
    if event == "crashed":
        return ObservedState("crashed", "panicked" if detail == "panicked" else "unknown")
    if event == "pmsuspended":
        return ObservedState("pmsuspended", "unknown")
    return None  # defined, undefined, shutdown (begun), unknown events


def read_is_newer(*, read_at: datetime, state_at: datetime | None) -> bool:
    """May a refresh that read the host at ``read_at`` write a guest's state recorded as of ``state_at``?

    Not when the recorded state is newer: with several workers, a refresh that read libvirt
    before a lifecycle event arrived can save after the event's state was written, and must not
    put the older state back (its debounced follow-up refresh reads the host again).
    """
    return state_at is None or read_at >= state_at
