"""When a refresh asks the host itself (over SSH) what libvirt cannot tell: a pure decision.

libvirt gives a refresh the host's facts, its guests and their disks. Two facts need a command on
the host: its os-release and where each disk file lives (shared or local storage:
``hosts.adapters.facts.probe_host``, one SSH exec). Both change rarely — an OS upgrade, a mount —
while the exec is the costliest step of a routine refresh (a remote shell start per exec). So:

- a refresh someone asked for (a Refresh click, a new key trusted, after a migration) always asks;
- the periodic refresh asks when the host was never asked, when the last answer is older than
  ``VMPORTAL_HOST_PROBE_SECONDS``, or when a disk path is not placed yet (a new guest, a disk
  moved), and otherwise keeps what is recorded.

Migrations never rely on these recorded placements: their preflight checks storage on both hosts
itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta


def probe_due(
    *,
    full: bool,
    paths: Iterable[str],
    placed: Collection[str],
    probed_at: datetime | None,
    now: datetime,
    max_age: timedelta,
) -> str | None:
    """Why this refresh must ask the host, in words for its log; None: what is recorded stands."""
    if full:
        return "a full refresh was asked for"
    if probed_at is None:
        return "the host was never asked"
    if probed_at > now:
        return "the last answer is dated in the future (clock change)"
    if now - probed_at >= max_age:
        return f"the last answer is older than {_words(max_age)}"
    new = [path for path in paths if path not in placed]
    if new:
        return f"{len(new)} disk path(s) not placed yet"
    return None


def _words(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"
