"""The state machine of one occurrence: given what is true now, the next step to take.

Pure: ``next_step(facts, now)`` takes an ``OccurrenceFacts`` (the occurrence's times, status and
the flags of steps already done, plus what its evacuations are doing) and returns the one
``Step`` due now, or None. The tick (ticker.py) claims a step with a compare-and-set on the
occurrence's status and flag, so each step runs once even with several processes ticking.

    scheduled → preparing (dry run at T − lead) → evacuating (start) → in maintenance
              → returning (end) → done | incomplete | overran
    scheduled/preparing past the cutoff without a start → missed;  any waiting one → cancelled
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .choices import OccurrenceStatusChoices as S, OnStartChoices

END_SOON = timedelta(minutes=15)


@dataclass(frozen=True)
class OccurrenceFacts:
    status: str
    start: datetime
    end: datetime
    cutoff_at: datetime  # no new evacuation starts after this
    check_at: datetime  # the dry run (start − lead)
    on_start: str = OnStartChoices.EVACUATE
    checked: bool = False
    cut_off: bool = False
    warned_end_soon: bool = False
    warned_end: bool = False
    overran: bool = False
    # Of this occurrence's evacuations (one per host): all settled (ended, or paused with nothing
    # running), all succeeded; the same for the return runs.
    evacuations_settled: bool = True
    evacuations_ok: bool = True
    returns_settled: bool = True
    returns_ok: bool = True
    late_grace: timedelta = field(default=timedelta(seconds=60))


# Step names: the tick knows what each does.
CHECK = "check"
START = "start"
MISS = "miss"
CUTOFF = "cutoff"
END_SOON_WARNING = "end_soon"
OVERRUN_WARNING = "overrun"
EVACUATED = "evacuated"
END = "end"
FINISH = "finish"


@dataclass(frozen=True)
class Step:
    name: str
    from_status: str
    to_status: str
    flag: str | None = None  # the occurrence's boolean set by the same compare-and-set
    late: bool = False
    reason: str = ""


def _fmt(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def final_status(f: OccurrenceFacts) -> str:
    """How an occurrence that has run ended: ran past its end, left a guest behind, or done."""
    if f.overran:
        return S.OVERRAN
    if not (f.evacuations_ok and f.returns_ok):
        return S.INCOMPLETE
    return S.DONE


def _end_soon(f: OccurrenceFacts) -> datetime:
    """When "may overrun" is said: 15 min before the end, and not before the cutoff (until then the
    evacuation may still finish in time; a short window hears of it at its end)."""
    return max(f.end - END_SOON, f.cutoff_at)


def next_step(f: OccurrenceFacts, now: datetime) -> Step | None:
    """The step due at ``now`` for an occurrence in the state ``f`` (None: nothing to do yet)."""
    s = f.status
    if s in (S.SCHEDULED, S.PREPARING):
        if now >= f.start:
            if now >= f.cutoff_at:
                return Step(MISS, s, S.MISSED, reason=(
                    f"The portal was not running at the start ({_fmt(f.start)}) and the cutoff "
                    f"({_fmt(f.cutoff_at)}) has passed: nothing was moved."))
            late = now - f.start > f.late_grace
            to = S.EVACUATING if f.on_start == OnStartChoices.EVACUATE else S.IN_MAINTENANCE
            return Step(START, s, to, late=late, reason=(
                f"Started late, at {_fmt(now)} instead of {_fmt(f.start)} (the portal was not running)." if late
                else ""))
        if s == S.SCHEDULED and now >= f.check_at and not f.checked:
            return Step(CHECK, s, S.PREPARING, flag="checked")
        return None
    if s == S.EVACUATING:
        if f.evacuations_settled:
            return Step(EVACUATED, s, S.IN_MAINTENANCE)
        if now >= f.end and not f.warned_end:
            return Step(OVERRUN_WARNING, s, s, flag="warned_end", reason="still being emptied at the end")
        if now >= f.cutoff_at and not f.cut_off:
            return Step(CUTOFF, s, s, flag="cut_off")
        if now >= _end_soon(f) and not f.warned_end_soon:
            return Step(END_SOON_WARNING, s, s, flag="warned_end_soon", reason="still being emptied")
        return None
    if s == S.IN_MAINTENANCE:
        if now >= f.end:
            if f.on_start == OnStartChoices.WARN:
                return Step(FINISH, s, S.DONE)
            if not f.evacuations_ok and not f.warned_end:
                # The host still runs guests at its end: everyone hears it, then the window ends.
                return Step(OVERRUN_WARNING, s, s, flag="warned_end", reason="not empty at the end")
            return Step(END, s, S.RETURNING)
        if (now >= _end_soon(f) and not f.warned_end_soon and not f.evacuations_ok
                and f.on_start == OnStartChoices.EVACUATE):
            return Step(END_SOON_WARNING, s, s, flag="warned_end_soon", reason="not empty")
        return None
    if s == S.RETURNING:
        if f.returns_settled:
            return Step(FINISH, s, final_status(f))
        return None
    return None
