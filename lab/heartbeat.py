"""Read a guest's heartbeat log: how long did the guest really stop?"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

from lab import config

_BEAT = re.compile(r"^HB (\d+)$")


@dataclass
class HeartbeatReport:
    guest: str
    beats: int
    first_beat: float | None
    last_beat: float | None
    max_gap_s: float
    max_gap_at: float | None
    continuous: bool
    first_counter: int | None
    last_counter: int | None
    last_beat_age_s: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def read_beats(guest: str, since: float = 0.0) -> list[tuple[float, int]]:
    path = config.paths().heartbeats / f"{guest}.log"
    beats = []
    try:
        with open(path) as f:
            for line in f:
                ts_text, _, text = line.rstrip("\n").partition(" ")
                try:
                    ts = float(ts_text)
                except ValueError:
                    continue
                if ts < since:
                    continue
                m = _BEAT.match(text)
                if m:
                    beats.append((ts, int(m.group(1))))
    except FileNotFoundError:
        pass
    return beats


def analyse(guest: str, beats: list[tuple[float, int]], now: float | None = None) -> HeartbeatReport:
    """Largest gap between consecutive beats, and whether the counter never skipped or restarted."""
    now = time.time() if now is None else now
    max_gap, max_gap_at = 0.0, None
    continuous = bool(beats)
    for (t0, n0), (t1, n1) in zip(beats, beats[1:]):
        if t1 - t0 > max_gap:
            max_gap, max_gap_at = t1 - t0, t0
        if n1 != n0 + 1:
            continuous = False
    return HeartbeatReport(
        guest=guest,
        beats=len(beats),
        first_beat=beats[0][0] if beats else None,
        last_beat=beats[-1][0] if beats else None,
        max_gap_s=round(max_gap, 4),
        max_gap_at=max_gap_at,
        continuous=continuous,
        first_counter=beats[0][1] if beats else None,
        last_counter=beats[-1][1] if beats else None,
        last_beat_age_s=round(now - beats[-1][0], 3) if beats else None,
    )


def report(guest: str, since: float = 0.0) -> HeartbeatReport:
    return analyse(guest, read_beats(guest, since))


def probe(guest: str, since: float) -> dict | None:
    """The guest's own view of a migration, for the portal's heartbeat hook.

    Returns ``{"max_gap_s", "continuous", "beats"}`` or None when the lab has
    no heartbeat log for this guest (not a lab guest).
    """
    beats = read_beats(guest, since)
    if not beats:
        return None
    rep = analyse(guest, beats)
    return {"max_gap_s": rep.max_gap_s, "continuous": rep.continuous, "beats": rep.beats}
