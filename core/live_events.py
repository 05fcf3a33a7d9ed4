"""What an inventory event says, how pending events merge, and what one socket may hear of them.

Pure functions, no I/O: core.broadcast merges the events it holds for a group with
``merge_inventory`` before sending them (at most every COALESCE_S), and each inventory socket
passes on ``visible_part`` of what arrives (hosts.consumers).

An inventory event (the channel-layer message and, narrowed, what a browser gets)::

    {"type": "inventory.changed",
     "host_ids": [3, 7],        # hosts whose rows changed (sorted)
     "hosts_changed": False,    # the set of hosts itself changed (added, removed, back in service)
     "everything": False,       # a change no host names (a calendar window): every page refreshes
     "hosts": {"3": {"status": "unreachable", "label": "Unreachable"}},        # host.status, last one
     "guests": {"41": {"host_id": 3, "state": "running", "label": "Running"}},  # vm.state, last one
     "changes": 5}              # how many events this one stands for

Ids are text keys in ``hosts`` and ``guests`` (JSON object keys are text anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

INVENTORY_EVENT = "inventory.changed"
# At most one message per group per this many seconds (core.broadcast).
COALESCE_S = 0.25


def inventory_event(
    *,
    host_id: int | None = None,
    hosts_changed: bool = False,
    host: Mapping[str, str] | None = None,
    guests: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One change as an event: ``host`` is host ``host_id``'s new status, ``guests`` the new state
    of each guest named (by id); no host at all means every page refreshes."""
    return {
        "type": INVENTORY_EVENT,
        "host_ids": [] if host_id is None else [host_id],
        "hosts_changed": bool(hosts_changed),
        "everything": host_id is None,
        "hosts": {} if host is None or host_id is None else {str(host_id): dict(host)},
        "guests": {str(vm_id): dict(state) for vm_id, state in (guests or {}).items()},
        "changes": 1,
    }


def merge_inventory(pending: Mapping[str, Any] | None, event: Mapping[str, Any]) -> dict[str, Any]:
    """``pending`` (None: nothing waiting) and the newer ``event`` as one event: the union of the
    hosts named, either flag if either has it, the newer status of a host and state of a guest."""
    if pending is None:
        return {**event, "host_ids": sorted(set(event.get("host_ids", ()))),
                "hosts": dict(event.get("hosts", {})), "guests": dict(event.get("guests", {}))}
    return {
        "type": INVENTORY_EVENT,
        "host_ids": sorted(set(pending.get("host_ids", ())) | set(event.get("host_ids", ()))),
        "hosts_changed": bool(pending.get("hosts_changed") or event.get("hosts_changed")),
        "everything": bool(pending.get("everything") or event.get("everything")),
        "hosts": {**pending.get("hosts", {}), **event.get("hosts", {})},
        "guests": {**pending.get("guests", {}), **event.get("guests", {})},
        "changes": int(pending.get("changes", 1)) + int(event.get("changes", 1)),
    }


def merge_all(events: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    merged = None
    for event in events:
        merged = merge_inventory(merged, event)
    return merged


def unseen_hosts(event: Mapping[str, Any], visible: set[int]) -> bool:
    """Does the event add hosts the socket does not know yet (it should read its hosts again)?"""
    return bool(event.get("hosts_changed")) and any(h not in visible for h in event.get("host_ids", ()))


def visible_part(event: Mapping[str, Any], visible: set[int]) -> dict[str, Any] | None:
    """What a socket whose user may see hosts ``visible`` hears of ``event``: only those hosts
    and their guests; None when nothing is left (an event about other users' hosts only)."""
    host_ids = [h for h in event.get("host_ids", ()) if h in visible]
    everything = bool(event.get("everything"))
    if not host_ids and not everything:
        return None
    hosts = {key: value for key, value in event.get("hosts", {}).items() if _int(key) in visible}
    guests = {key: value for key, value in event.get("guests", {}).items()
              if isinstance(value, Mapping) and value.get("host_id") in visible}
    return {
        "type": INVENTORY_EVENT,
        "host_ids": host_ids,
        "hosts_changed": bool(event.get("hosts_changed")),
        "everything": everything,
        "hosts": hosts,
        "guests": guests,
    }


def _int(key: Any) -> int | None:
    try:
        return int(key)
    except (TypeError, ValueError):
        return None
