"""Share set-ups whose worker died: settle them so the share is not left "being set up".

A set-up is active while its plan job reads the hosts (detecting) or its apply job runs the
steps (applying). When that job ended without the set-up recording its end — its work horse
died, the worker vanished — ``setups_job_lost`` settles it at once (core.signals.job_lost) and
``setups_reconcile`` (periodic, cheap: one query when nothing is active) catches the rest.
What is recorded is what is known: the steps' outcomes so far; the interrupted step is named,
and applying again re-checks every step (each one skips what is already done).
"""

from __future__ import annotations

import logging

from django.db.models import Q

from core.actors import Actor
from core.choices import JOB_TERMINAL_STATES

from . import services
from .choices import SETUP_ACTIVE_STATES, SetupStatusChoices
from .models import ShareSetup
from .steps import plan_from_json

logger = logging.getLogger(__name__)

INTERRUPTED_HINT = ("Run Apply again: every step checks the host first and skips what is already done; "
                    "or Verify to see what the hosts have now.")


def interrupted_step(setup: ShareSetup) -> str:
    """The key of the first planned step with no recorded outcome (where the worker stopped)."""
    for step in plan_from_json(setup.plan).steps if setup.plan else []:
        if step.key not in setup.outcomes:
            return step.key
    return "proof"


def setup_settle_lost(setup: ShareSetup, *, reason: str) -> bool:
    """Settle one active set-up whose job ended or vanished. Returns whether it was settled."""
    if setup.status == SetupStatusChoices.DETECTING:
        services.setup_detect_failed(
            setup=setup, error=f"Reading the hosts stopped: {reason}.", hint="Plan again.")
    elif setup.status == SetupStatusChoices.APPLYING:
        step = interrupted_step(setup)
        services.setup_finished(
            setup=setup, ok=False, actor=Actor.system(), failed_step=step,
            error=f"Applying stopped at step {step}: {reason}. The steps before it are recorded.",
            hint=INTERRUPTED_HINT,
        )
    else:
        return False
    logger.warning("share setup %s (%s) settled: %s", setup.pk, setup.status, reason)
    return True


def _job_of(setup: ShareSetup):
    return setup.plan_job if setup.status == SetupStatusChoices.DETECTING else setup.apply_job


def setups_job_lost(*, job_id: int, reason: str) -> int:
    """The worker lost job ``job_id``: settle the set-up it was running. Returns how many."""
    settled = 0
    active = ShareSetup.objects.filter(status__in=SETUP_ACTIVE_STATES)
    for setup in active.filter(Q(plan_job_id=job_id) | Q(apply_job_id=job_id)).select_related("plan_job", "apply_job"):
        job = _job_of(setup)
        if job is not None and job.pk == job_id:
            settled += setup_settle_lost(setup, reason=f"the worker lost its job #{job_id} ({reason})")
    return settled


def setups_reconcile() -> int:
    """Periodic: settle every active set-up whose job has ended (or is gone). Returns how many."""
    settled = 0
    for setup in ShareSetup.objects.filter(status__in=SETUP_ACTIVE_STATES).select_related("plan_job", "apply_job"):
        job = _job_of(setup)
        if job is None:
            settled += setup_settle_lost(setup, reason="its job no longer exists")
        elif job.status in JOB_TERMINAL_STATES:
            detail = f": {job.error}" if job.error else ""
            settled += setup_settle_lost(setup, reason=f"its job #{job.pk} ended as {job.status}{detail}")
    return settled
