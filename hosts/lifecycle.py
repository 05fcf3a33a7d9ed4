"""A host's life in the inventory, as pure decisions (tested with tables).

in service → decommissioned (takes no guests, is not watched, history kept) → removed (a
tombstone: name, id, when and by whom; every record pointing at it still does).
An edit of how the portal reaches a host is checked before it is saved.
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import HostLifecycleChoices

# The settings that decide how the portal reaches the host: changing any is checked first.
CONNECTION_FIELDS = ("address", "ssh_port", "ssh_user", "auth_method", "libvirt_uri")
# Saved at once: nothing about reaching the host depends on them.
DESCRIPTIVE_FIELDS = ("name", "notes", "tags")


@dataclass(frozen=True)
class Refusal:
    message: str
    hint: str
    # Where the hint's fix is: "maintenance" (Enter maintenance), "decommission", "refresh" or "".
    fix: str = ""


def connection_changes(current: dict, proposed: dict, *, new_secret: bool) -> tuple[str, ...]:
    """The connection settings a proposed edit changes (a new key or password counts as "secret")."""
    changed = tuple(field for field in CONNECTION_FIELDS if field in proposed and proposed[field] != current.get(field))
    return changed + (("secret",) if new_secret else ())


def descriptive_changes(current: dict, proposed: dict) -> tuple[str, ...]:
    return tuple(field for field in DESCRIPTIVE_FIELDS if field in proposed and proposed[field] != current.get(field))


def decommission_refusal(
    *, lifecycle: str, name: str, running_guests: int, busy_guests: int
) -> Refusal | None:
    """Why the host may not be decommissioned now, or None when it may.

    running_guests: guests the inventory shows running (or paused…) there; busy_guests: guests
    of the host held by an operation (a migration still moving one away).
    """
    if lifecycle == HostLifecycleChoices.DECOMMISSIONED:
        return Refusal(f"{name} is already decommissioned.", "Nothing to do.")
    if lifecycle == HostLifecycleChoices.REMOVED:
        return Refusal(f"{name} has been removed.", "A removed host cannot change any more.")
    if running_guests:
        return Refusal(
            f"{name} still runs {running_guests} guest{'s' if running_guests != 1 else ''}.",
            "Enter maintenance to move them to other hosts first, then decommission it.",
            fix="maintenance",
        )
    if busy_guests:
        return Refusal(
            f"An operation still holds {busy_guests} guest{'s' if busy_guests != 1 else ''} of {name}.",
            "Wait for it to end (the guest's page links to it), then decommission the host.",
        )
    return None


def remove_refusal(*, lifecycle: str, name: str, defined_guests: int, busy_guests: int) -> Refusal | None:
    """Why the host may not be removed now, or None when it may."""
    if lifecycle == HostLifecycleChoices.REMOVED:
        return Refusal(f"{name} has been removed already.", "Nothing to do.")
    if lifecycle != HostLifecycleChoices.DECOMMISSIONED:
        return Refusal(
            f"{name} is still in service.", "Decommission it first (it must run no guests).", fix="decommission"
        )
    if defined_guests or busy_guests:
        count = max(defined_guests, busy_guests)
        return Refusal(
            f"{name} still has {count} guest{'s' if count != 1 else ''} defined.",
            "Move or undefine them on the host, refresh it, then remove it.",
            fix="refresh",
        )
    return None


def may_edit(lifecycle: str) -> bool:
    return lifecycle != HostLifecycleChoices.REMOVED
