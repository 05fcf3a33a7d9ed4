"""The verdict vocabulary (pure): pass, warn or fail, how bad each is, and the worst of many.

The live preflight, the cold migration's checks, stored preflight runs and the pages all
speak this one vocabulary; ``choices.VerdictStatusChoices`` gives its values to the model
field. No Django here: the pure checks (preflight.py, cold.py) import it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class VerdictStatus(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_SEVERITY = {VerdictStatus.PASS: 0, VerdictStatus.WARN: 1, VerdictStatus.FAIL: 2}


def severity(status: str) -> int:
    """0 for a pass, 1 for a warning, 2 for a failure; a value we do not know counts as a failure."""
    try:
        return _SEVERITY[VerdictStatus(status)]
    except ValueError:
        return _SEVERITY[VerdictStatus.FAIL]


def worst(statuses: Iterable[str]) -> VerdictStatus:
    """The worst of ``statuses``; none at all means nothing was checked, which is not a pass."""
    found = [VerdictStatus(s) for s in statuses]
    if not found:
        return VerdictStatus.FAIL
    return max(found, key=_SEVERITY.__getitem__)


def verdicts_overall(verdicts: Sequence[Mapping[str, Any]]) -> VerdictStatus:
    """Worst status of stored verdicts (dicts); nothing checked is not a pass."""
    statuses = {v.get("status") for v in verdicts}
    if not verdicts or VerdictStatus.FAIL in statuses:
        return VerdictStatus.FAIL
    if VerdictStatus.WARN in statuses:
        return VerdictStatus.WARN
    return VerdictStatus.PASS


def verdict_dicts(verdicts: Iterable[Any]) -> list[dict]:
    """Verdicts as stored on a run or a migration: check, status, reason, fix (and repairs if any)."""
    rows = []
    for v in verdicts:
        row = {"check": v.check, "status": v.status, "reason": v.reason, "fix": v.fix}
        if getattr(v, "repairs", ()):
            row["repairs"] = [list(r) for r in v.repairs]
        rows.append(row)
    return rows
