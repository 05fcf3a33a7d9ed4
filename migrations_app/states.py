"""Which status may follow which, and what status a settled outcome means (pure).

    queued → checking → migrating → completing → succeeded | failed | aborted | needs-attention

Any active status may end directly (a preflight failure ends "checking", an abort ends
"queued", the reconciler ends whatever a dead worker left). "needs-attention" can be
reconciled again once the admin has repaired things; the other ends are final.

Also what a person may do to a migration in its status (the pages offer exactly these; the
services enforce the same rules).
"""

from __future__ import annotations

from . import reconcile
from .choices import MIGRATION_TERMINAL_STATES, MigrationStatusChoices as S

_NEXT = {
    S.QUEUED: {S.CHECKING},
    S.CHECKING: {S.MIGRATING},
    S.MIGRATING: {S.COMPLETING},
    S.COMPLETING: set(),
}


def can_transition(current: str, new: str) -> bool:
    """True when a migration in status ``current`` may move to ``new``."""
    current, new = S(current), S(new)
    if current in (S.SUCCEEDED, S.FAILED, S.ABORTED):
        return False
    if current == S.NEEDS_ATTENTION:
        return new in MIGRATION_TERMINAL_STATES
    return new in _NEXT[current] or new in MIGRATION_TERMINAL_STATES


def sources_for(new: str) -> list[str]:
    """Every status from which ``new`` may be reached (for conditional updates)."""
    return [s.value for s in S if can_transition(s, new)]


# Aborted by the runner on request (a queued migration is ended at once instead).
ABORTED_BY_RUNNER = (S.CHECKING, S.MIGRATING)


def can_abort(migration) -> bool:
    """A queued, checking or migrating migration whose abort was not asked yet can be aborted."""
    return (migration.status == S.QUEUED or migration.status in ABORTED_BY_RUNNER) and migration.abort_requested is None


def can_force(migration) -> bool:
    """Only a live migration that libvirt is migrating (and not being aborted) can be forced to complete."""
    return migration.status == S.MIGRATING and migration.is_live and migration.abort_requested is None


def can_reconcile(migration) -> bool:
    """A person reconciles only a migration that needs attention (a running one is its runner's business)."""
    return migration.status == S.NEEDS_ATTENTION


def status_for_outcome(outcome_status: str, *, aborted: bool) -> S:
    """The migration's status from reconcile.settle's verdict.

    A guest that stayed on its source after an abort (asked for, or by the completion
    timeout) was aborted, not failed; the hosts decide everything else.
    """
    if outcome_status == reconcile.SUCCEEDED:
        return S.SUCCEEDED
    if outcome_status == reconcile.FAILED:
        return S.ABORTED if aborted else S.FAILED
    return S.NEEDS_ATTENTION
