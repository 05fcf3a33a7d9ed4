"""Recommendations worked out from the inventory, applied (one run of ordinary migrations on the rolling
queue) or dismissed, and the portal's balancing settings — every write audited in its transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices, RoleChoices
from core.errors import ServiceRefused
from hosts.models import Host, VirtualMachine
from hosts.permissions import hosts_for_actor
from maintenance import services as maintenance_services
from maintenance.choices import EvacuationKindChoices
from maintenance.models import Evacuation

from . import facts, recommend
from .models import Dismissal, FleetSettings, MetricChoices

KINDS = (recommend.KIND_BALANCE, recommend.KIND_CONSOLIDATE)
DISMISS_HOURS_MAX = 24 * 30
REASON_MAX = 500


def _computed(*, kind, basis, hold_s, metric, now, hosts=None) -> list[recommend.Outcome]:
    hosts, guests = facts.fleet_now(basis=basis, metric=metric, now=now, hosts=hosts)
    rules = facts.rules(hold_s=hold_s)
    paused = facts.open_window()
    per_move = facts.seconds_per_move(guests)
    label, fmt = facts.label_and_format(metric, basis)
    found = []
    if kind in (None, recommend.KIND_BALANCE):
        held = None
        if basis == "used":
            history = facts.spread_history(since=now - timedelta(seconds=rules.hold_s * 2 + 600), metric=metric)
            held = recommend.held_over_s(history, rules.threshold_pts, now)
        found.append(recommend.balance(hosts, guests, now=now, rules=rules, held_s=held, paused=paused,
                                       seconds_per_move=per_move, basis_label=label, fmt=fmt))
    if kind in (None, recommend.KIND_CONSOLIDATE):
        found.append(recommend.consolidate(hosts, guests, rules=rules, paused=paused, seconds_per_move=per_move,
                                           fmt=fmt))
    return found


def active_dismissals(*, metric: str, basis: str, now=None) -> list[Dismissal]:
    now = now or timezone.now()
    return list(Dismissal.objects.filter(expires__gt=now, metric=metric, basis=basis).order_by("-created"))


def _hidden_by(rec: recommend.Recommendation, dismissals: list[Dismissal]) -> Dismissal | None:
    return next((d for d in dismissals if d.rec_id == rec.id and recommend.dismissal_holds(d.before, rec.before)), None)


def recommendations(
    *, kind: str | None = None, basis: str = "assigned", hold_s: int | None = None, metric: str | None = None,
    now=None, hosts=None,
) -> list[recommend.Outcome]:
    """The balance and/or consolidate outcomes for the fleet as it is now (database only), without dismissed ones,
    over ``hosts`` (the hosts the user may act on; default every host in service)."""
    now = now or timezone.now()
    metric = metric or facts.metric_now()
    dismissals = active_dismissals(metric=metric, basis=basis, now=now)
    shown = []
    for outcome in _computed(kind=kind, basis=basis, hold_s=hold_s, metric=metric, now=now, hosts=hosts):
        kept = tuple(r for r in outcome.recommendations if _hidden_by(r, dismissals) is None)
        hidden = len(outcome.recommendations) - len(kept)
        note = outcome.note + (f" {hidden} dismissed recommendation(s) hidden." if hidden else "")
        shown.append(replace(outcome, recommendations=kept, note=note))
    return shown


def recommendation_find(
    *, rec_id: str, basis: str = "assigned", metric: str | None = None, hosts=None,
) -> recommend.Recommendation | None:
    """The current recommendation ``rec_id`` over ``hosts`` (default: every host in service), or None."""
    return next((r for o in recommendations(basis=basis, metric=metric, hosts=hosts) for r in o.recommendations
                 if r.id == rec_id), None)


def recommendation_hosts(rec: recommend.Recommendation) -> list[Host]:
    """Every host a recommendation moves guests from or to."""
    names = {m.source for m in rec.moves} | {m.destination for m in rec.moves} | ({rec.power_off} - {None})
    return list(Host.all_objects.filter(name__in=names))


def _current(rec_id: str, *, basis: str, metric: str | None, actor: Actor) -> recommend.Recommendation:
    """The current recommendation ``rec_id`` over the hosts ``actor`` may operate on, or refused."""
    rec = recommendation_find(rec_id=rec_id, basis=basis, metric=metric,
                              hosts=hosts_for_actor(actor, RoleChoices.OPERATOR))
    if rec is None:
        raise ServiceRefused(
            f"No current recommendation has the id {rec_id!r} (the fleet changed, or it was dismissed).",
            hint="Ask for the recommendations again and choose one of those.",
        )
    return rec


def recommendation_apply(*, rec_id: str, actor: Actor, basis: str = "assigned", metric: str | None = None,
                         concurrency: int = 2) -> Evacuation:
    """Apply the recommendation ``rec_id`` as it is now: one run of ordinary live migrations, audited.

    Worked out over the hosts the actor may operate on (as the page showed it to them).
    Refused when no current recommendation has that id (the fleet changed since it was shown).
    """
    rec = _current(rec_id, basis=basis, metric=metric, actor=actor)
    if not rec.moves:
        raise ServiceRefused(f"Recommendation {rec_id} has no moves to apply.",
                             hint="A host that runs no guest can be powered off as it is.")
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


@transaction.atomic
def recommendation_dismiss(*, rec_id: str, reason: str, hours: float, actor: Actor, basis: str = "assigned",
                           metric: str | None = None, now=None) -> Dismissal:
    """Hide the current recommendation ``rec_id`` for ``hours`` or until its facts change; who and why are audited."""
    now = now or timezone.now()
    reason = " ".join((reason or "").split())
    if not reason:
        raise ServiceRefused("Say why the recommendation is dismissed.", hint="Write a short reason, e.g. 'web-3 is being rebuilt'.")
    if len(reason) > REASON_MAX:
        raise ServiceRefused(f"The reason is {len(reason)} characters long; at most {REASON_MAX}.", hint="Shorten it.")
    if not 1 <= hours <= DISMISS_HOURS_MAX:
        raise ServiceRefused(f"A dismissal lasts from 1 hour to {DISMISS_HOURS_MAX} hours (got {hours:g}).",
                             hint="Choose how long it stays hidden within that range.")
    metric = metric or facts.metric_now()
    rec = _current(rec_id, basis=basis, metric=metric, actor=actor)
    dismissal = Dismissal.objects.create(
        rec_id=rec.id, kind=rec.kind, metric=metric, basis=basis, summary=rec.summary[:2000], before=dict(rec.before),
        reason=reason, actor=actor.user, actor_label=actor.label, created=now, expires=now + timedelta(hours=hours),
    )
    audit_record(actor=actor, action="fleet.dismiss", result=AuditResultChoices.OK, target=dismissal,
                 parameters={"rec_id": rec.id, "kind": rec.kind, "metric": metric, "basis": basis, "hours": hours,
                             "moves": [m["vm"] for m in rec.as_dict()["moves"]], "reason": reason},
                 message=f"Dismissed {rec.kind} {rec.id} until {dismissal.expires:%Y-%m-%d %H:%M} UTC: {reason}")
    return dismissal


SETTING_FIELDS = ("metric", "threshold_pts", "margin_pts", "cooldown_hours", "hold_minutes")


@transaction.atomic
def fleet_settings_update(*, metric: str, threshold_pts: float, margin_pts: float, cooldown_hours: float,
                          hold_minutes: int, actor: Actor) -> FleetSettings:
    """Set what the recommendations balance on (memory or CPU) and their thresholds, audited with old and new."""
    if metric not in MetricChoices.values:
        raise ServiceRefused(f"Unknown metric {str(metric)[:20]!r}.", hint=f"Choose one of {', '.join(MetricChoices.values)}.")
    row = FleetSettings.objects.select_for_update().order_by("pk").first()
    old = {f: getattr(row or FleetSettings.defaults(), f) for f in SETTING_FIELDS}
    row = row or FleetSettings.defaults()
    row.metric, row.threshold_pts, row.margin_pts = metric, threshold_pts, margin_pts
    row.cooldown_hours, row.hold_minutes = cooldown_hours, hold_minutes
    row.updated, row.updated_by_label = timezone.now(), actor.label
    try:
        row.full_clean()
    except ValidationError as invalid:
        problems = invalid.message_dict
        raise ServiceRefused(" ".join(f"{k}: {' '.join(v)}" for k, v in problems.items()),
                             hint="Correct the values and save again.") from None
    row.save()
    new = {f: getattr(row, f) for f in SETTING_FIELDS}
    audit_record(actor=actor, action="fleet.settings", result=AuditResultChoices.OK, target=row,
                 parameters={"old": old, "new": new},
                 message=f"Fleet balancing on {row.get_metric_display().lower()}: threshold {row.threshold_pts:g} points, "
                         f"margin {row.margin_pts:g}, cool-down {row.cooldown_hours:g} h, hold {row.hold_minutes} min.")
    return row
