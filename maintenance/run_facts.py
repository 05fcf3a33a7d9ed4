"""The one check of the hosts for a whole run of moves (an evacuation, its return, a balance).

Right after a run is confirmed, job ``maintenance.jobs.run_facts_job`` gathers the preflight
facts of every move waiting in it once — per host once and per host pair once, the sources
side by side (``migrations_app.gather_fleet.gather_moves``) — and keeps them for the run
(``PreflightFacts.fresh_until``, ``recheck.run_fresh_for_s``). Facts its plan gathered a
moment before are kept for the run instead of gathered again, in the confirm's own
transaction (``run_facts_keep``). Each item's migration then re-checks only what can change
(guest state, a domain of that name or UUID, the destination's free memory; slots are the
database's) on both hosts at once, and checks in full only what this could not gather or
what a failed migration made stale. The queue holds back a move while this runs unless its
own facts are kept for the run already (``decisions.waits_for_facts``, ``kept_for_run``):
a move the plan checked starts at once, and a source's moves start as soon as that source's
gather has ended, while the other sources are still asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from core.jobs import JobContext
from hosts.models import VirtualMachine
from migrations_app import recheck
from migrations_app.gather_fleet import Move, gather_moves
from migrations_app.services.facts import preflight_facts_extend, preflight_facts_kept_for_run

from . import decisions, planning
from .choices import ItemActionChoices as IA, ItemStatusChoices as IS
from .models import Evacuation

log = logging.getLogger(__name__)


def run_moves(ev: Evacuation, *, running: bool = False) -> list[Move]:
    """The moves of ``ev`` still waiting (with ``running``, and those started), from where each guest is now,
    as its migration asks for them."""
    moves = []
    statuses = (IS.PENDING, IS.RUNNING) if running else (IS.PENDING,)
    for item in ev.items.filter(status__in=statuses, action__in=decisions.MOVES,
                                destination__isnull=False).select_related("destination").order_by("position"):
        vm = VirtualMachine.objects.filter(uuid=item.vm_uuid).select_related("host").prefetch_related("disks").first()
        if vm is None or vm.host_id == item.destination_id:
            continue  # gone, or there already: the queue skips it
        options = planning.options_for("shutoff" if item.action == IA.OFFLINE else "running",
                                       copy_storage=ev.copy_storage,
                                       has_local=bool(planning.guest_needs(vm).local_disks))
        moves.append(Move(guest_uuid=str(item.vm_uuid), source=vm.host, destination=item.destination,
                          copying=bool(options.copy_storage and options.live)))
    return moves


def _since(ev: Evacuation):
    """Facts gathered at or after this serve the run: its plan's, gathered moments before the confirm, or its own."""
    return min(ev.created, timezone.now()) - timedelta(seconds=recheck.FRESH_FOR_S)


def run_facts_keep(ev: Evacuation, moves: list[Move] | None = None):
    """Keep for the run the facts its plan gathered moments ago; (moves, the moves kept, kept until)."""
    moves = run_moves(ev) if moves is None else moves
    until = timezone.now() + timedelta(seconds=recheck.run_fresh_for_s(ev.estimated_s))
    kept = preflight_facts_extend(
        moves=[(m.guest_uuid, m.source, m.destination, m.copying) for m in moves],
        gathered_since=_since(ev), fresh_until=until,
    ) if moves else set()
    return moves, kept, until


def kept_for_run(ev: Evacuation) -> set[tuple[str, int, int]]:
    """(guest UUID lowercased, source id, destination id) of the moves whose facts are kept for ``ev``.

    Empty for a copy-storage run (its facts depend on each guest's disks: those moves wait for the check).
    """
    if ev.copy_storage:
        return set()
    uuids = [str(u) for u in ev.items.filter(status=IS.PENDING, action__in=decisions.MOVES)
             .values_list("vm_uuid", flat=True)]
    return preflight_facts_kept_for_run(guest_uuids=uuids, gathered_since=_since(ev)) if uuids else set()


def run_facts_gather(*, evacuation_id: int, ctx: JobContext, advance: Callable[[int], object] | None = None) -> dict:
    """Gather (or keep) the facts of every waiting move of the run, for the run; returns the counts.

    ``advance(evacuation_id)`` (the queue's) is called as each source's facts are kept, so its moves start.
    """
    ev = Evacuation.objects.select_related("host").get(pk=evacuation_id)
    # Moves that started already did so on facts kept for the run (the queue held back the others).
    moves, kept, until = run_facts_keep(ev, run_moves(ev, running=True))
    waiting = {m.guest_uuid.lower() for m in run_moves(ev)}
    needed_keys = decisions.facts_needed(
        [(m.guest_uuid, str(m.source.pk), str(m.destination.pk)) for m in moves if m.guest_uuid.lower() in waiting],
        [(u, str(s), str(d)) for u, s, d in kept],
    )
    wanted = {(u.lower(), s, d) for u, s, d in needed_keys}
    needed = [m for m in moves if (m.guest_uuid.lower(), str(m.source.pk), str(m.destination.pk)) in wanted]
    if kept:
        ctx.log(f"{len(kept)} move(s) keep the facts their plan gathered moments ago, until {until:%H:%M:%S}")

    def source_done(group) -> None:
        if advance is None:
            return
        ctx.log(f"Checked the moves from {group.source.name}; they may start")
        try:
            advance(ev.pk)
        except Exception:  # the other sources' facts still count; this job's end advances the queue again
            log.exception("evacuation %s could not advance after the check of %s", ev.pk, group.source.name)

    problems = gather_moves(moves=needed, fresh_until=until, on_kept=source_done) if needed else {}
    sources = len({m.source.pk for m in needed})
    if needed:
        ctx.log(f"Checked {len(needed)} move(s) from {sources} host(s) at once; kept for the run until {until:%H:%M:%S}")
    for name, why in sorted(problems.items()):
        ctx.log(f"Could not check the moves from {name} ({why}); each of them checks both hosts in full")
    return {"moves": len(moves), "kept": len(kept), "gathered": len(needed), "failed_sources": sorted(problems)}
