"""May this guest of a dead host be started on its destination now? A pure decision.

The recovery's check proved the host gone when it ran; a guest's start may come minutes later
(items queue behind each other and behind other work). So right before each start the dead host
is asked again, the destination is asked whether it runs the guest already, and every disk's
QEMU image lock is read from the destination. Any doubt stops that guest: a guest started twice
on the same disks corrupts them, a guest not started yet can still be recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hosts.choices import VM_ACTIVE_STATES


@dataclass(frozen=True)
class StartFacts:
    guest: str
    dead_host: str
    destination: str
    dead_host_answer: str | None  # how the dead host answered just now; None: silent over SSH and libvirt
    on_destination: str | None  # libvirt's state of a guest with this UUID there; None: not there
    disk_problems: tuple[str, ...] = field(default_factory=tuple)  # why a disk may not be used, one per disk


def start_verdict(facts: StartFacts) -> str | None:
    """None: start it. Else why not, in words for the item's record and the page."""
    if facts.dead_host_answer:
        return (f"{facts.dead_host} answered again before {facts.guest} was started ({facts.dead_host_answer}) "
                f"Nothing was started: a host that answers may still run its guests. Check {facts.dead_host}; "
                "if it is really broken, power it off and recover again.")
    if facts.on_destination in VM_ACTIVE_STATES:
        return f"{facts.guest} already runs on {facts.destination} ({facts.on_destination}); nothing was changed."
    if facts.disk_problems:
        return f"{facts.guest} was not started: " + " ".join(facts.disk_problems)
    return None
