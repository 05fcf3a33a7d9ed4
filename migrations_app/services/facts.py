"""The facts of the last full preflight gather of a guest between two hosts, kept for the runner.

Every full gather from the inventory records what it found (``preflight_facts_remember``);
the runner reads the latest (``preflight_facts_latest``) and, when recheck.facts_freshness
calls it fresh, re-checks only what can change instead of gathering again. A run of moves
(an evacuation, its return) gathers once for all its items and keeps the facts for the run
(``fresh_until``; ``preflight_facts_extend`` for facts its plan gathered just before). A
migration that failed forgets its pair's facts (``preflight_facts_forget``). A cache of the
hosts' answers, not a decision: nothing here is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from hosts.models import Host

from ..facts import GuestSide, PairFacts, facts_from_dict, facts_to_dict
from ..models import PreflightFacts

logger = logging.getLogger(__name__)

# Facts older than this are of no use to anyone (unless kept for a run): removed whenever new ones are written.
KEEP_FOR = timedelta(hours=1)


class KeptFacts(NamedTuple):
    gathered: datetime
    fresh_until: datetime | None  # kept for a run until then
    pair: PairFacts
    guest: GuestSide


def preflight_facts_remember(
    *, source: Host, destination: Host, copy_storage: bool,
    found: Iterable[tuple[PairFacts, GuestSide]], gathered: datetime | None = None,
    fresh_until: datetime | None = None,
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
                        defaults={"gathered": gathered, "facts": facts_to_dict(pair, guest),
                                  "fresh_until": fresh_until},
                    )
            except IntegrityError:  # a simultaneous gather wrote the same row first: theirs is as fresh
                continue
            kept += 1
        PreflightFacts.objects.filter(gathered__lt=gathered - KEEP_FOR).filter(
            Q(fresh_until__isnull=True) | Q(fresh_until__lt=gathered)).delete()
    return kept


def preflight_facts_extend(
    *, moves: Iterable[tuple[str, Host, Host, bool]], gathered_since: datetime, fresh_until: datetime,
) -> set[tuple[str, int, int]]:
    """Keep for a run, until ``fresh_until``, the facts of these (guest UUID, source, destination, copying)
    moves gathered at or after ``gathered_since``; returns the moves so kept, as (uuid lowercased, source id,
    destination id).
    """
    extended: set[tuple[str, int, int]] = set()
    for guest_uuid, source, destination, copying in moves:
        if PreflightFacts.objects.filter(
            vm_uuid=guest_uuid, source=source, destination=destination, copy_storage=copying,
            gathered__gte=gathered_since,
        ).update(fresh_until=fresh_until):
            extended.add((str(guest_uuid).lower(), source.pk, destination.pk))
    return extended


def preflight_facts_kept_for_run(
    *, guest_uuids: Iterable[str], gathered_since: datetime, now: datetime | None = None,
) -> set[tuple[str, int, int]]:
    """The (guest UUID lowercased, source id, destination id) of facts kept for a run: gathered at or
    after ``gathered_since`` and fresh until ``now`` or later (``fresh_until``). Without copy-storage."""
    now = now or timezone.now()
    rows = PreflightFacts.objects.filter(
        vm_uuid__in=list(guest_uuids), copy_storage=False, gathered__gte=gathered_since, fresh_until__gte=now,
    ).values_list("vm_uuid", "source_id", "destination_id")
    return {(str(u).lower(), s, d) for u, s, d in rows}


def preflight_facts_forget(*, source: Host, destination: Host) -> int:
    """Forget every guest's facts between these two hosts (a migration between them failed): the next gathers in full."""
    deleted, _ = PreflightFacts.objects.filter(source=source, destination=destination).delete()
    return deleted


def preflight_facts_latest(
    *, guest_uuid: str, source: Host, destination: Host, copy_storage: bool
) -> KeptFacts | None:
    """The facts of the last full gather of that guest and pair (when, kept until, pair, guest), or None."""
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
    return KeptFacts(row.gathered, row.fresh_until, pair, guest)
