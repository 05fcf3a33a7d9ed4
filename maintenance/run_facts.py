"""The one check of the hosts for a whole run of moves (an evacuation, its return, a balance).

Right after a run is confirmed, job ``maintenance.jobs.run_facts_job`` gathers the preflight
facts of every move waiting in it once — per host once and per host pair once, the sources
side by side (``migrations_app.gather_fleet.gather_moves``) — and keeps them for the run
(``PreflightFacts.fresh_until``, ``recheck.run_fresh_for_s``). Facts its plan gathered a
moment before are kept for the run instead of gathered again. Each item's migration then
re-checks only what can change (guest state, a domain of that name or UUID, the
destination's free memory; slots are the database's) on both hosts at once, and checks in
full only what this could not gather or what a failed migration made stale. The queue holds
the moves back while this runs (``decisions.waits_for_facts``).
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from core.jobs import JobContext
from hosts.models import VirtualMachine
from migrations_app import recheck
from migrations_app.gather_fleet import Move, gather_moves
from migrations_app.services.facts import preflight_facts_extend

from . import decisions, planning
from .choices import ItemActionChoices as IA, ItemStatusChoices as IS
from .models import Evacuation


def run_moves(ev: Evacuation) -> list[Move]:
    """The moves of ``ev`` still waiting, from where each guest is now, as its migration will ask for them."""
    moves = []
    for item in ev.items.filter(status=IS.PENDING, action__in=decisions.MOVES, destination__isnull=False) \
            .select_related("destination").order_by("position"):
        vm = VirtualMachine.objects.filter(uuid=item.vm_uuid).select_related("host").prefetch_related("disks").first()
        if vm is None or vm.host_id == item.destination_id:
            continue  # gone, or there already: the queue skips it
        options = planning.options_for("shutoff" if item.action == IA.OFFLINE else "running",
                                       copy_storage=ev.copy_storage,
                                       has_local=bool(planning.guest_needs(vm).local_disks))
        moves.append(Move(guest_uuid=str(item.vm_uuid), source=vm.host, destination=item.destination,
                          copying=bool(options.copy_storage and options.live)))
    return moves


def run_facts_gather(*, evacuation_id: int, ctx: JobContext) -> dict:
    """Gather (or keep) the facts of every waiting move of the run, for the run; returns the counts."""
    ev = Evacuation.objects.select_related("host").get(pk=evacuation_id)
    moves = run_moves(ev)
    now = timezone.now()
    until = now + timedelta(seconds=recheck.run_fresh_for_s(ev.estimated_s))
    kept = preflight_facts_extend(
        moves=[(m.guest_uuid, m.source, m.destination, m.copying) for m in moves],
        gathered_since=now - timedelta(seconds=recheck.FRESH_FOR_S), fresh_until=until,
    )
    needed_keys = decisions.facts_needed(
        [(m.guest_uuid, str(m.source.pk), str(m.destination.pk)) for m in moves],
        [(u, str(s), str(d)) for u, s, d in kept],
    )
    wanted = {(u.lower(), s, d) for u, s, d in needed_keys}
    needed = [m for m in moves if (m.guest_uuid.lower(), str(m.source.pk), str(m.destination.pk)) in wanted]
    if kept:
        ctx.log(f"{len(kept)} move(s) keep the facts their plan gathered moments ago, until {until:%H:%M:%S}")
    problems = gather_moves(moves=needed, fresh_until=until) if needed else {}
    sources = len({m.source.pk for m in needed})
    if needed:
        ctx.log(f"Checked {len(needed)} move(s) from {sources} host(s) at once; kept for the run until {until:%H:%M:%S}")
    for name, why in sorted(problems.items()):
        ctx.log(f"Could not check the moves from {name} ({why}); each of them checks both hosts in full")
    return {"moves": len(moves), "kept": len(kept), "gathered": len(needed), "failed_sources": sorted(problems)}
