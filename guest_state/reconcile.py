"""What really became of a save or a restore whose job died: pure decisions over what the host shows.

A save or restore job can die (its work horse killed, its worker gone) anywhere: before libvirt
was called, while libvirtd writes or reads the state file (libvirtd goes on without its
client), or after libvirt returned but before the record was written. What the record then
says is decided from the host alone — the guest's state there, any libvirt job still running on
it, and the state file's header — never from where the job is thought to have stopped.

libvirt writes a state file's header with the magic ``LibvirtQemudPart`` first and rewrites it
as ``LibvirtQemudSave`` only once QEMU has written all of the guest's memory and devices (a
restore refuses a "Part" file as incomplete): that header, not a size guessed beforehand, says
whether the file is whole.

``reconciler.py`` gathers these facts on the host and records what these functions decide.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.choices import JOB_TERMINAL_STATES
from core.jobs import RQ_DEAD_STATES

# libvirt's magic at the start of a state file (src/qemu/qemu_saveimage.h, an ABI).
MAGIC_COMPLETE = "LibvirtQemudSave"
MAGIC_PARTIAL = "LibvirtQemudPart"
MAGIC_LEN = len(MAGIC_COMPLETE)

# A guest in one of these states is still there: a save did not take it away.
GUEST_PRESENT_STATES = frozenset({"running", "paused", "blocked", "pmsuspended", "shutdown"})
# libvirt pauses the guest while it saves it, and keeps a restored one paused until it has read the file.
_IN_PROGRESS_REASONS = {("paused", "saving"): "saving it", ("paused", "starting_up"): "starting it"}

SAVED, FAILED, WAIT = "saved", "failed", "wait"
RESTORED = "restored"


@dataclass(frozen=True)
class GuestOnHost:
    """The guest as its host shows it now (libvirt's state and reason names)."""

    reachable: bool
    exists: bool = False
    state: str | None = None
    reason: str | None = None
    job_active: bool = False

    @property
    def present(self) -> bool:
        return self.exists and self.state in GUEST_PRESENT_STATES

    def busy(self) -> str | None:
        """What libvirt is still doing to the guest, in words, or None."""
        found = _IN_PROGRESS_REASONS.get((self.state or "", self.reason or ""))
        return found or ("running a job on it" if self.job_active else None)

    def describe(self) -> str:
        if not self.exists:
            return "not defined"
        return f"{self.state} ({self.reason})" if self.reason and self.reason != "unknown" else str(self.state)


@dataclass(frozen=True)
class StateFile:
    """The state file as the host shows it: there at all, its header's magic, its size."""

    present: bool
    magic: str = ""
    size: int = 0

    @property
    def complete(self) -> bool:
        return self.present and self.magic == MAGIC_COMPLETE

    def describe(self) -> str:
        if not self.present:
            return "no state file"
        if self.complete:
            return f"a complete state file ({self.size} bytes)"
        if self.magic == MAGIC_PARTIAL:
            return f"an incomplete state file ({self.size} bytes, libvirt never finished it)"
        return f"a file that is not a libvirt state file ({self.size} bytes)"


@dataclass(frozen=True)
class Settlement:
    """What to record: ``outcome`` (saved/restored, failed, or wait = leave the record for the
    next sweep), why in words, whether to remove an incomplete file, whether it needs an admin."""

    outcome: str
    why: str
    remove_partial: bool = False
    attention: bool = False


def orphan_reason(*, job_id: int | None, job_status: str | None, job_error: str = "",
                  rq_state: str | None) -> str | None:
    """Why nobody will end this save or restore record any more, or None when its job may still run."""
    if job_id is None:
        return "its job no longer exists"
    if job_status in JOB_TERMINAL_STATES:
        return f"its job #{job_id} ended as {job_status}" + (f": {job_error}" if job_error else "")
    if rq_state in RQ_DEAD_STATES:
        return f"its job #{job_id} is {rq_state} in the queue"
    return None


def _unanswered(host: str, *, lost_for_s: float, attention_after_s: float) -> Settlement:
    attention = lost_for_s >= attention_after_s
    why = f"{host} did not answer, so what happened is not known; the sweep asks it again"
    if attention:
        why = (f"Needs attention: {host} has not answered for {int(lost_for_s)} s since the job was lost; "
               "the guest stays held until the host answers (check it, then the sweep settles this)")
    return Settlement(WAIT, why, attention=attention)


def save_outcome(*, host: str, guest: GuestOnHost, file: StateFile | None, lost_for_s: float = 0.0,
                 attention_after_s: float = 300.0) -> Settlement:
    """What became of a save on ``host``, from the guest's state there and the state file.

    An incomplete file is removed only while the guest still runs with no libvirt job on it:
    then nothing writes the file any more, libvirt would refuse to restore it, and the guest's
    state is safe in the guest itself. With the guest gone the file is left for the admin to
    look at — it is what remains of the guest's memory.
    """
    if not guest.reachable or file is None:
        return _unanswered(host, lost_for_s=lost_for_s, attention_after_s=attention_after_s)
    busy = guest.busy()
    if busy:
        return Settlement(WAIT, f"libvirt on {host} is still {busy}; the sweep asks again")
    seen = f"the guest is {guest.describe()} on {host}, with {file.describe()}"
    if guest.present:
        if file.complete:
            return Settlement(FAILED, f"The save did not stop the guest: {seen}. The file is left in place; "
                                      "restoring it while the guest runs would run it twice.", attention=True)
        if file.present:
            return Settlement(FAILED, f"The save did not happen: {seen}. The incomplete file is removed.",
                              remove_partial=True)
        return Settlement(FAILED, f"The save did not happen: {seen}.")
    if file.complete and file.size > 0:
        return Settlement(SAVED, f"The save happened: {seen}.")
    return Settlement(FAILED, f"Needs attention: {seen}; its memory state is lost. Start it from its disk. "
                              + ("The incomplete file is left for inspection." if file.present else ""),
                      attention=True)


def restore_outcome(*, host: str, started: bool, guest: GuestOnHost, lost_for_s: float = 0.0,
                    attention_after_s: float = 300.0) -> Settlement:
    """What became of a restore on ``host``. ``started``: the runner had begun (the record said
    "restoring"); a restore still queued never reached libvirt whatever the host shows."""
    if not started:
        where = f" (the guest is {guest.describe()} on {host})" if guest.reachable else ""
        return Settlement(FAILED, f"The restore never started{where}. The saved state is still usable.")
    if not guest.reachable:
        return _unanswered(host, lost_for_s=lost_for_s, attention_after_s=attention_after_s)
    busy = guest.busy()
    if busy:
        return Settlement(WAIT, f"libvirt on {host} is still {busy}; the sweep asks again")
    if guest.exists and guest.state in ("running", "paused"):
        return Settlement(RESTORED, f"The restore happened: the guest is {guest.describe()} on {host}.")
    return Settlement(FAILED, f"The restore did not happen: the guest is {guest.describe()} on {host}. "
                              "The saved state is still usable.")


# --- Managed saves and state-file deletions whose job died ------------------------------------
# Their job (a core Job) holds the guest's lease and has no record of its own: what is settled is
# the audit row saying what happened, and the inventory's view of the guest (its state, whether
# it has a managed save) or the saved state's record (deleted or not).

DONE, NOT_DONE = "done", "not_done"


def managed_save_outcome(*, host: str, remove: bool, guest: GuestOnHost, has_image: bool | None) -> Settlement:
    """What became of a managed save (or, ``remove``, the discarding of one) on ``host``.

    ``has_image``: libvirt's hasManagedSaveImage now (None: not known, the host did not answer)."""
    if not guest.reachable or has_image is None:
        return Settlement(WAIT, f"{host} did not answer, so what happened is not known; the host's next "
                                "refresh shows the guest's state and whether it has a managed save")
    busy = guest.busy()
    if busy:
        return Settlement(WAIT, f"libvirt on {host} is still {busy}; its next refresh shows how it ended")
    seen = f"the guest is {guest.describe()} on {host}, " + ("with" if has_image else "without") + " a managed save"
    if remove:
        if has_image:
            return Settlement(NOT_DONE, f"The managed save was not discarded: {seen}. Discard it again if wanted.")
        return Settlement(DONE, f"The managed save was discarded: {seen}.")
    if has_image and not guest.present:
        return Settlement(DONE, f"The managed save happened: {seen}; its next start resumes it.")
    if guest.present:
        return Settlement(NOT_DONE, f"The managed save did not happen: {seen}.")
    return Settlement(NOT_DONE, f"Needs attention: {seen}; its memory state is lost. Start it from its disk.",
                      attention=True)


def state_delete_outcome(*, host: str, path: str, file_present: bool | None) -> Settlement:
    """What became of deleting the state file ``path`` on ``host`` (``file_present`` None: not known)."""
    if file_present is None:
        return Settlement(WAIT, f"{host} did not answer, so whether {path} is gone is not known; the state is "
                                "kept as saved (a restore checks the file first). Delete it again once the host answers")
    if file_present:
        return Settlement(NOT_DONE, f"{path} is still on {host}: the state was not deleted. Delete it again.")
    return Settlement(DONE, f"{path} is gone from {host}: the state is deleted.")
