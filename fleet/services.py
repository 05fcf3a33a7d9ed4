"""Recommendations worked out from the inventory, and applied: one run of ordinary migrations on the rolling queue."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from core.actors import Actor
from core.errors import ServiceRefused
from core.choices import RoleChoices
from hosts.models import Host, VirtualMachine
from hosts.permissions import hosts_for_actor
from maintenance import services as maintenance_services
from maintenance.choices import EvacuationKindChoices
from maintenance.models import Evacuation

from . import facts, recommend

KINDS = (recommend.KIND_BALANCE, recommend.KIND_CONSOLIDATE)


def recommendations(
    *, kind: str | None = None, basis: str = "assigned", hold_s: int | None = None, now=None, hosts=None,
) -> list[recommend.Outcome]:
    """The balance and/or consolidate outcomes for the fleet as it is now (database only), over
    ``hosts`` (the hosts the user may act on; default every host in service)."""
    now = now or timezone.now()
    hosts, guests = facts.fleet_now(basis=basis, now=now, hosts=hosts)
    rules = facts.rules(hold_s=hold_s)
    paused = facts.open_window()
    per_move = facts.seconds_per_move(guests)
    found = []
    if kind in (None, recommend.KIND_BALANCE):
        held = None
        if basis == "used":
            held = recommend.held_over_s(facts.spread_history(since=now - timedelta(seconds=rules.hold_s * 2 + 600)),
                                         rules.threshold_pts, now)
        found.append(recommend.balance(hosts, guests, now=now, rules=rules, held_s=held, paused=paused,
                                       seconds_per_move=per_move))
    if kind in (None, recommend.KIND_CONSOLIDATE):
        found.append(recommend.consolidate(hosts, guests, rules=rules, paused=paused, seconds_per_move=per_move))
    return found


def recommendation_find(*, rec_id: str, basis: str = "assigned", hosts=None) -> recommend.Recommendation | None:
    """The current recommendation ``rec_id`` over ``hosts`` (default: every host in service)."""
    return next((r for o in recommendations(basis=basis, hosts=hosts) for r in o.recommendations
                 if r.id == rec_id), None)


def recommendation_hosts(rec: recommend.Recommendation) -> list[Host]:
    """Every host a recommendation moves guests from or to."""
    names = {m.source for m in rec.moves} | {m.destination for m in rec.moves} | ({rec.power_off} - {None})
    return list(Host.all_objects.filter(name__in=names))


def recommendation_apply(*, rec_id: str, actor: Actor, basis: str = "assigned", concurrency: int = 2) -> Evacuation:
    """Apply the recommendation ``rec_id`` as it is now: one run of ordinary live migrations, audited.

    Worked out over the hosts the actor may operate on (as the page showed it to them).
    Refused when no current recommendation has that id (the fleet changed since it was shown).
    """
    rec = recommendation_find(rec_id=rec_id, basis=basis, hosts=hosts_for_actor(actor, RoleChoices.OPERATOR))
    if rec is None or not rec.moves:
        raise ServiceRefused(
            f"No current recommendation has the id {rec_id!r} (the fleet changed, or it has no moves).",
            hint="Ask for the recommendations again and apply one of those.",
        )
    host = Host.objects.get(name=rec.power_off or rec.moves[0].source)
    by_uuid = {str(v.uuid): v for v in VirtualMachine.objects.filter(uuid__in=[m.uuid for m in rec.moves])
               .select_related("host")}
    dests = {h.name: h for h in Host.objects.filter(name__in=[m.destination for m in rec.moves])}
    kind = EvacuationKindChoices.BALANCE if rec.kind == recommend.KIND_BALANCE else EvacuationKindChoices.CONSOLIDATE
    return maintenance_services.moves_start(
        kind=kind, host=host, actor=actor, concurrency=concurrency,
        moves=[(by_uuid[m.uuid], dests[m.destination]) for m in rec.moves],
        message=rec.summary, parameters=rec.as_dict(),
    )
