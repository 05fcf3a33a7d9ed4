"""What really happened to a migration, decided from where the guest is now.

Used after the worker died mid-job, or libvirt raised (or returned) and we no longer
trust what the job row says. The caller looks the guest up on both hosts and passes
what it found; :func:`settle` decides. Pure: no libvirt, no database.

Decisions worth knowing:

* Running on the destination while a paused copy remains on the source is
  **needs-attention**, not success: during post-copy the paused source still holds
  memory pages the destination is pulling, so "clean up the source" must wait for
  the job to end. The repair says so.
* A source paused by a failed **post-copy** is never resumed: after the switch-over its
  memory is stale (the guest ran on the destination and wrote to its disks). The
  repair is post-copy recovery or a cold restart, not ``virsh resume``.
* An unreachable host always means needs-attention: a guest we cannot see may be running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SUCCEEDED = "succeeded"
FAILED = "failed"
NEEDS_ATTENTION = "needs-attention"

_SERVING = frozenset({"running", "blocked", "shutdown"})  # "shutdown" = still running, shutting down


@dataclass(frozen=True)
class DomainPresence:
    """The guest as one host shows it now. ``state``/``reason`` are libvirt's names (running/migrating…)."""

    exists: bool
    state: str | None
    reason: str | None
    reachable: bool
    job_active: bool = False  # libvirt still reports a migration job for it (domjobinfo)


@dataclass(frozen=True)
class Outcome:
    status: str  # "succeeded" | "failed" | "needs-attention"
    reason: str
    repair: str | None = None


def ask_again(
    source: DomainPresence, destination: DomainPresence, *, elapsed_s: float, job_wait_s: float,
    unreachable_wait_s: float,
) -> bool:
    """Whether to ask both hosts again before settling, ``elapsed_s`` after the first question.

    A libvirt job still reported is waited for up to ``job_wait_s`` (post-copy finishing). A
    host that did not answer is asked again, on a new connection, up to ``unreachable_wait_s``:
    a restarted libvirtd answers again within seconds, and settling at once would call a guest
    that is fine "needs attention".
    """
    if (source.job_active or destination.job_active) and elapsed_s < job_wait_s:
        return True
    return (not source.reachable or not destination.reachable) and elapsed_s < unreachable_wait_s


def _reason(presence: DomainPresence) -> str:
    """libvirt reason names, accepting the spellings people type ("post-copy failed", "migration")."""
    text = (presence.reason or "").strip().lower().replace("-", "_").replace(" ", "_")
    return {
        "migration": "migrating",
        "post_copy": "postcopy",
        "post_copy_failed": "postcopy_failed",
    }.get(text, text)


def _kind(presence: DomainPresence) -> str:
    """absent | running | paused | shutoff | other."""
    if not presence.exists:
        return "absent"
    state = (presence.state or "").strip().lower()
    if state in _SERVING:
        return "running"
    if state in ("paused", "shutoff"):
        return state
    return "other"


def _postcopy(presence: DomainPresence) -> bool:
    return _reason(presence) in ("postcopy", "postcopy_failed")


def guest_location(
    source: DomainPresence, destination: DomainPresence
) -> Literal["source", "destination", "both", "neither", "unknown"]:
    """Where the guest is running now. "unknown" if a host could not be asked."""
    if not source.reachable or not destination.reachable:
        return "unknown"
    on_source, on_destination = _kind(source) == "running", _kind(destination) == "running"
    if on_source and on_destination:
        return "both"
    if on_destination:
        return "destination"
    if on_source:
        return "source"
    return "neither"


def settle(
    source: DomainPresence,
    destination: DomainPresence,
    job_status: str,
    *,
    guest: str = "the guest",
    source_host: str = "the source",
    destination_host: str = "the destination",
    offline: bool = False,
) -> Outcome:
    """The true outcome of a migration from where the guest is now.

    ``job_status`` is what the job row said when we lost track (running, failed, …); it
    is quoted in the reason but the hosts decide. ``offline`` = only the definition moved.
    """
    note = f" (the job was {job_status!r} when we lost track)" if job_status else ""
    for presence, host in ((source, source_host), (destination, destination_host)):
        if not presence.reachable:
            return Outcome(
                NEEDS_ATTENTION,
                f"Cannot verify: {host} did not answer, so {guest} may be running there{note}.",
                f"Bring {host} back, then reconcile again; do not start {guest} anywhere until then.",
            )
    if source.job_active or destination.job_active:
        where = source_host if source.job_active else destination_host
        return Outcome(
            NEEDS_ATTENTION,
            f"libvirt on {where} still reports a migration job for {guest}: it is still in progress{note}.",
            f"Wait for it to end (virsh domjobinfo {guest} on {where}), or abort it "
            f"(virsh domjobabort {guest}), then reconcile again.",
        )
    src, dst = _kind(source), _kind(destination)

    if src == "absent" and dst == "absent":
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} is on neither {source_host} nor {destination_host}: it is lost{note}.",
            f"Look for it on other hosts (virsh list --all); if it is gone, define it again from its last "
            f"known XML and start it from its disks.",
        )
    if offline:
        return _settle_offline(src, dst, guest, source_host, destination_host, note)

    if dst == "running" and src == "running":
        return Outcome(
            NEEDS_ATTENTION,
            f"Split brain: {guest} is running on both {source_host} and {destination_host}{note}; "
            "both may be writing to the same disks.",
            f"Destroy the copy on {destination_host} after checking which one is serving "
            f"(virsh destroy {guest} there), then check the guest's filesystems.",
        )
    if dst == "running":
        if src == "absent":
            return Outcome(SUCCEEDED, f"{guest} runs on {destination_host} and is gone from {source_host}{note}.")
        if src == "shutoff":
            return Outcome(
                SUCCEEDED,
                f"{guest} runs on {destination_host}; {source_host} keeps a shut-off definition "
                f"(expected unless undefine-source was chosen){note}.",
                None,
            )
        if src == "paused":
            return Outcome(
                NEEDS_ATTENTION,
                f"{guest} runs on {destination_host} but a paused copy remains on {source_host}{note}. "
                "During post-copy that copy still holds memory the destination is fetching.",
                f"Wait until virsh domjobinfo {guest} on {source_host} shows no job, then undefine the paused "
                f"source copy (virsh destroy {guest}; virsh undefine {guest} on {source_host}, keep the disks).",
            )
        return _unclear(source, destination, guest, source_host, destination_host, note)

    if src == "running":
        if dst == "absent":
            return Outcome(FAILED, f"{guest} stayed on {source_host}; it never arrived on {destination_host}{note}.")
        if dst == "shutoff":
            return Outcome(
                FAILED,
                f"{guest} stayed on {source_host}; {destination_host} has only a shut-off definition of it{note}.",
                f"If that definition was left by this migration, remove it: virsh undefine {guest} on {destination_host}.",
            )
        if dst == "paused":
            return Outcome(
                FAILED,
                f"{guest} stayed on {source_host}; a paused, never-started incoming copy remains on "
                f"{destination_host}{note}.",
                f"Remove the incoming copy: virsh destroy {guest} on {destination_host} (it is not serving).",
            )
        return _unclear(source, destination, guest, source_host, destination_host, note)

    if src == "paused" and dst in ("absent", "shutoff"):
        if _postcopy(source):
            return Outcome(
                NEEDS_ATTENTION,
                f"Post-copy failed: {guest} is paused on {source_host} and its running half on "
                f"{destination_host} is gone{note}. The source copy is stale; resuming it would corrupt its disks.",
                f"Do not resume it. Destroy it (virsh destroy {guest} on {source_host}), start it again from its "
                "disks and check its filesystems.",
            )
        leftover = f"; then virsh undefine {guest} on {destination_host}" if dst == "shutoff" else ""
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} is paused on {source_host} ({_reason(source) or 'no reason'}) and did not start on "
            f"{destination_host}{note}.",
            f"Resume on source: virsh resume {guest} on {source_host}{leftover}.",
        )
    if src == "paused" and dst == "paused":
        if _postcopy(source) or _postcopy(destination):
            return Outcome(
                NEEDS_ATTENTION,
                f"Post-copy failed: {guest} is paused on both hosts and its memory is split between them{note}.",
                f"Recover with virsh migrate --postcopy-resume {guest} (same destination) once the network is back; "
                f"if that cannot work, destroy both copies and start {guest} from its disks.",
            )
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} is paused on both {source_host} and {destination_host}{note}.",
            f"Destroy the incoming copy on {destination_host} (virsh destroy {guest}), then resume on source "
            f"(virsh resume {guest} on {source_host}).",
        )
    if src == "absent" and dst == "paused":
        if _postcopy(destination):
            return Outcome(
                NEEDS_ATTENTION,
                f"Post-copy failed: {guest} is paused on {destination_host} and its source copy is gone{note}.",
                f"Destroy it (virsh destroy {guest} on {destination_host}), start it again from its disks and "
                "check its filesystems.",
            )
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} arrived on {destination_host} but was left paused; {source_host} no longer has it{note}.",
            f"Resume on destination: virsh resume {guest} on {destination_host}.",
        )
    if src in ("absent", "shutoff") and dst in ("absent", "shutoff"):
        where = " and ".join(h for h, k in ((source_host, src), (destination_host, dst)) if k == "shutoff")
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} is not running anywhere: shut off on {where}{note}.",
            f"Start it where its disks are meant to be (virsh start {guest}); remove the other definition if any.",
        )
    return _unclear(source, destination, guest, source_host, destination_host, note)


def _describe(presence: DomainPresence) -> str:
    if not presence.exists:
        return "absent"
    reason = _reason(presence)
    return f"{presence.state or 'unknown'}" + (f" ({reason})" if reason else "")


def _unclear(
    source: DomainPresence, destination: DomainPresence, guest: str, source_host: str, destination_host: str, note: str
) -> Outcome:
    return Outcome(
        NEEDS_ATTENTION,
        f"{guest} is {_describe(source)} on {source_host} and {_describe(destination)} on {destination_host}{note}.",
        f"Inspect both (virsh domstate --reason {guest}) and keep exactly one copy running.",
    )


def _settle_offline(src: str, dst: str, guest: str, source_host: str, destination_host: str, note: str) -> Outcome:
    """Offline migration moves only the definition: success is "defined on the destination"."""
    if "running" in (src, dst) or "paused" in (src, dst) or "other" in (src, dst):
        return Outcome(
            NEEDS_ATTENTION,
            f"{guest} was migrated offline but is now active (source {src}, destination {dst}){note}.",
            f"Check who started it; keep one copy (virsh domstate --reason {guest} on both).",
        )
    if dst == "shutoff":
        extra = f"; {source_host} still has its definition" if src == "shutoff" else ""
        return Outcome(SUCCEEDED, f"{guest} is defined on {destination_host}{extra}{note}.")
    return Outcome(FAILED, f"{guest} is still defined only on {source_host}{note}.")
