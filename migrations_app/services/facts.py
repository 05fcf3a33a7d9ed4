"""The facts of the last full preflight gather of a guest between two hosts, kept for the runner.

Every full gather from the inventory records what it found (``preflight_facts_remember``);
the runner reads the latest (``preflight_facts_latest``) and, when recheck.facts_freshness
calls it fresh, re-checks only what can change instead of gathering again. A cache of the
hosts' answers, not a decision: nothing here is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.models import Host

from ..facts import GuestSide, PairFacts, facts_from_dict, facts_to_dict
from ..models import PreflightFacts

logger = logging.getLogger(__name__)

# Facts older than this are of no use to anyone: removed whenever new ones are written.
KEEP_FOR = timedelta(hours=1)


def preflight_facts_remember(
    *, source: Host, destination: Host, copy_storage: bool,
    found: Iterable[tuple[PairFacts, GuestSide]], gathered: datetime | None = None,
) -> int:
    """Keep the facts of each guest gathered between ``source`` and ``destination``; returns how many."""
    gathered = gathered or timezone.now()
    kept = 0
    with transaction.atomic():
        for pair, guest in found:
            if not guest.uuid or not guest.name:
                continue  # the source did not answer: nothing worth keeping
            try:
                with transaction.atomic():
                    PreflightFacts.objects.update_or_create(
                        vm_uuid=guest.uuid, source=source, destination=destination, copy_storage=copy_storage,
                        defaults={"gathered": gathered, "facts": facts_to_dict(pair, guest)},
                    )
            except IntegrityError:  # a simultaneous gather wrote the same row first: theirs is as fresh
                continue
            kept += 1
        PreflightFacts.objects.filter(gathered__lt=gathered - KEEP_FOR).delete()
    return kept


def preflight_facts_latest(
    *, guest_uuid: str, source: Host, destination: Host, copy_storage: bool
) -> tuple[datetime, PairFacts, GuestSide] | None:
    """(when gathered, pair, guest) of the last full gather of that guest and pair, or None."""
    row = PreflightFacts.objects.filter(
        vm_uuid=guest_uuid, source=source, destination=destination, copy_storage=copy_storage
    ).first()
    if row is None:
        return None
    try:
        pair, guest = facts_from_dict(row.facts)
    except (KeyError, TypeError, ValueError):  # written by another version of the portal: gather again
        logger.warning("stored preflight facts %s cannot be read; ignoring them", row.pk)
        return None
    return row.gathered, pair, guest
