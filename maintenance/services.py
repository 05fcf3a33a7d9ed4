"""What a person (or a script) asks of host maintenance: enter it (evacuate), pause, resume or
cancel the evacuation, and exit it (bring the guests home, or not).

Each write runs in one transaction with its audit row; a refusal is audited and raised as
ServiceRefused with what to do. The rolling queue (queue.py) does the moving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from django.db import IntegrityError, transaction

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices, RoleChoices
from core.jobs import job_enqueue
from hosts import services as host_services
from hosts.models import Host, VirtualMachine
from hosts.permissions import actor_refused_on, hosts_for_actor
from migrations_app import placement
from migrations_app.services.refusals import refuse

from . import events, planning, run_facts
from .choices import (
    EVACUATION_ACTIVE_STATES,
    EvacuationAuditActionChoices as A,
    EvacuationJobKindChoices,
    EvacuationKindChoices as K,
    EvacuationStatusChoices as ES,
    ItemActionChoices as IA,
    ItemStatusChoices as IS,
    StrategyChoices,
)
from .models import MAX_CONCURRENCY, Evacuation, EvacuationItem
from .queue import evacuation_advance


def active_evacuation(host: Host) -> Evacuation | None:
    return Evacuation.objects.filter(host=host, status__in=EVACUATION_ACTIVE_STATES).first()


def last_evacuation(host: Host) -> Evacuation | None:
    """The newest evacuation (enter) of ``host``: the one whose guests a return brings home."""
    return Evacuation.objects.filter(host=host, kind=K.ENTER).order_by("-created", "-pk").first()


RUN_FACTS_JOB = "maintenance.jobs.run_facts_job"
RUN_FACTS_TIMEOUT_S = 300  # a gather of every host a run touches takes seconds; a host that hangs, its timeouts


def _advance_on_commit(ev: Evacuation, *, actor: Actor | None = None) -> None:
    """The queue runs once this commits; with ``actor``, the run's moves first wait for one check of the hosts,
    but for those whose plan gathered their facts moments ago: those are kept for the run here, and start."""
    if actor is not None and ev.items.filter(status=IS.PENDING, action__in=(IA.LIVE, IA.OFFLINE)).exists():
        run_facts.run_facts_keep(ev)
        ev.facts_job = job_enqueue(kind=EvacuationJobKindChoices.FACTS, func=RUN_FACTS_JOB, args=(ev.pk,), target=ev,
                                   timeout_s=RUN_FACTS_TIMEOUT_S, actor=actor)
        ev.save(update_fields=["facts_job"])
    transaction.on_commit(lambda: evacuation_advance(ev.pk))


def check_plan_inputs(*, host: Host, concurrency: int, strategy: str, guests: Iterable[str]) -> list[str]:
    """What is wrong with the admin's choices, in words (empty when they are fine)."""
    problems = []
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        problems.append(f"Concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency}).")
    if strategy not in StrategyChoices.values:
        problems.append(f"Strategy must be one of {', '.join(StrategyChoices.values)}.")
    known = {str(u) for u in VirtualMachine.objects.filter(host=host).values_list("uuid", flat=True)}
    unknown = sorted(set(guests) - known)
    if unknown:
        problems.append(f"Not guests of {host.name}: {', '.join(unknown[:5])}.")
    return problems


def evacuation_enter(
    *,
    host: Host,
    actor: Actor,
    concurrency: int = 2,
    strategy: str = StrategyChoices.SPREAD,
    excluded: Iterable[str] = (),
    overrides: Mapping[str, str] | None = None,
    shutdown: Iterable[str] = (),
    copy_storage: bool = False,
    expected_fingerprint: str | None = None,
    plan: planning.EvacuationPlan | None = None,
) -> Evacuation:
    """Put ``host`` into maintenance and start emptying it by the plan: audited, one evacuation per host.

    The plan is made afresh (or ``plan`` is used, made just before by the caller); with
    ``expected_fingerprint`` (the plan the admin looked at) a plan that changed meanwhile is refused.
    """
    excluded, shutdown = [str(u) for u in excluded], [str(u) for u in shutdown]
    overrides = {str(k): v for k, v in (overrides or {}).items()}
    parameters = {"concurrency": concurrency, "strategy": strategy, "excluded": excluded, "shutdown": shutdown,
                  "overrides": overrides, "copy_storage": copy_storage}

    def refused(message: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.ENTER, target=host, parameters=parameters, message=message, hint=hint)

    problems = check_plan_inputs(host=host, concurrency=concurrency, strategy=strategy,
                                 guests=[*excluded, *shutdown, *overrides])
    if problems:
        refused(" ".join(problems), "Change the choices and look at the plan again.")
    if not host.is_connectable:
        refused(f"{host.name} cannot be contacted: {host.get_status_display()}.",
                "Fix the host's connection first; guests of a host that died are recovered, not evacuated.")
    running = active_evacuation(host)
    if running is not None:
        refused(f"{host.name} is already being emptied by {running} ({running.get_status_display().lower()}).",
                f"Follow it on its page: {running.get_absolute_url()}")
    if plan is None:
        plan = planning.evacuation_plan(host=host, strategy=strategy, concurrency=concurrency, excluded=excluded,
                                        overrides=overrides, shutdown=shutdown, copy_storage=copy_storage,
                                        candidates=hosts_for_actor(actor, RoleChoices.OPERATOR))
    if expected_fingerprint and expected_fingerprint != plan.fingerprint:
        refused("The plan changed since it was shown (a guest or a host changed).", "Look at the new plan and confirm it.")
    hosts = {h.name: h for h in Host.objects.all()}
    outside = actor_refused_on(actor, RoleChoices.OPERATOR, [host, *(hosts.get(r.destination) for r in plan.rows)])
    if outside:
        refused(f"{actor.label} does not hold the Operator role on {', '.join(outside)}.",
                "Plan again: a plan only sends guests to hosts of your groups.")
    try:
        with transaction.atomic():
            ev = Evacuation.objects.create(
                host=host, kind=K.ENTER, concurrency=concurrency, strategy=strategy, copy_storage=copy_storage,
                requested_by=actor.user, requested_by_label=actor.label, estimated_s=plan.estimated_s,
            )
            for row in plan.rows:
                EvacuationItem.objects.create(
                    evacuation=ev, position=row.position, vm_uuid=row.uuid, vm_name=row.name, vm_state=row.state,
                    memory_kib=row.memory_kib, action=row.action, origin=host,
                    destination=hosts.get(row.destination) if row.destination else None,
                    status=IS.PENDING if row.action != IA.STAY else IS.SKIPPED,
                    overridden=row.overridden, blocked=row.blocker is not None, estimated_s=row.estimated_s,
                    reason=row.blocker.reason if row.blocker else row.note,
                    remedy=row.blocker.remedy if row.blocker else "",
                )
            # New guests stop arriving at once; running migrations towards it finish.
            host_services.host_maintenance_set(host=host, in_maintenance=True, actor=actor)
            moving = sum(1 for r in plan.rows if r.action != IA.STAY)
            audit_record(
                actor=actor, action=A.ENTER, result=AuditResultChoices.OK, target=ev, parameters=parameters,
                message=f"{host.name} enters maintenance: {moving} of {len(plan.rows)} guest(s) to move, "
                        f"{concurrency} at a time.",
            )
            events.evacuation_changed(ev)
            _advance_on_commit(ev, actor=actor)
    except IntegrityError:
        refused(f"{host.name} is already being emptied.", "Follow the evacuation on the host's page.")
    return ev


def _control(*, evacuation: Evacuation, actor: Actor, action: str, allowed: tuple, new: str, verb: str) -> Evacuation:
    with transaction.atomic():
        ev = Evacuation.objects.select_for_update().get(pk=evacuation.pk)
        if ev.status in allowed:
            ev.status = new
            ev.save(update_fields=["status"])
            audit_record(actor=actor, action=action, result=AuditResultChoices.OK, target=ev,
                         parameters={"status": new}, message=f"{ev} {verb}.")
            events.evacuation_changed(ev)
            _advance_on_commit(ev)
            return ev
    refuse(actor=actor, action=action, target=evacuation, parameters={"status": evacuation.status},
            message=f"{evacuation} is {ev.get_status_display().lower()}; it cannot be {verb} now.")


def evacuation_pause(*, evacuation: Evacuation, actor: Actor) -> Evacuation:
    """Running items finish; no new one starts until Resume."""
    return _control(evacuation=evacuation, actor=actor, action=A.PAUSE, allowed=(ES.RUNNING,), new=ES.PAUSED,
                    verb="paused")


def evacuation_resume(*, evacuation: Evacuation, actor: Actor) -> Evacuation:
    return _control(evacuation=evacuation, actor=actor, action=A.RESUME, allowed=(ES.PAUSED,), new=ES.RUNNING,
                    verb="resumed")


def evacuation_cancel(*, evacuation: Evacuation, actor: Actor) -> Evacuation:
    """Abort the running items and start no more; every guest stays where it is, recorded as it is."""
    return _control(evacuation=evacuation, actor=actor, action=A.CANCEL, allowed=(ES.RUNNING, ES.PAUSED),
                    new=ES.CANCELLING, verb="cancelled")


# --- The way home -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnRow:
    uuid: str
    name: str
    action: str  # live / offline / start / stay
    origin: str  # where it is now
    destination: str | None  # home
    memory_kib: int
    state: str
    note: str = ""
    remedy: str = ""


@dataclass(frozen=True)
class ReturnPlan:
    host: str
    evacuation: Evacuation | None
    rows: tuple[ReturnRow, ...]  # in the order they run; rows that stay come last

    @property
    def moves(self) -> tuple[ReturnRow, ...]:
        return tuple(r for r in self.rows if r.action != IA.STAY)


def return_plan(*, host: Host, bring_back: bool = True, sources=None) -> ReturnPlan:
    """Every guest the last evacuation of ``host`` moved, back home in an order memory allows.

    A guest moved or deleted since is shown, not touched; a guest shut down for maintenance is
    started again (also when not bringing guests back: it never left). ``sources``: the hosts
    guests may be brought back from (those the requester may act on; default all); a guest on
    another host is shown, left there.
    """
    movable = None if sources is None else set(sources.values_list("pk", flat=True))
    ev = last_evacuation(host)
    if ev is None:
        return ReturnPlan(host=host.name, evacuation=None, rows=())
    rows_stay: list[ReturnRow] = []
    starts: list[ReturnRow] = []
    moves: list[placement.ReturnMove] = []
    info: dict[str, tuple[VirtualMachine, EvacuationItem]] = {}
    for item in ev.items.filter(status=IS.SUCCEEDED).select_related("destination").order_by("position"):
        vm = VirtualMachine.objects.filter(uuid=item.vm_uuid).select_related("host").first()
        uuid = str(item.vm_uuid)
        if item.action == IA.SHUTDOWN:
            if vm is not None and vm.host_id == host.pk:
                starts.append(ReturnRow(uuid, item.vm_name, IA.START, host.name, host.name, item.memory_kib,
                                        vm.state, note="Shut down for the maintenance: started again."))
            continue
        if not bring_back or item.action not in (IA.LIVE, IA.OFFLINE):
            continue
        if vm is None:
            rows_stay.append(ReturnRow(uuid, item.vm_name, IA.STAY, "", host.name, item.memory_kib, "",
                                       note="Deleted since the evacuation; nothing to bring back."))
        elif vm.host_id != item.destination_id:
            rows_stay.append(ReturnRow(uuid, item.vm_name, IA.STAY, vm.host.name, host.name, vm.memory_kib, vm.state,
                                       note=f"Moved to {vm.host.name} since the evacuation; left there."))
        elif movable is not None and vm.host_id not in movable:
            rows_stay.append(ReturnRow(uuid, item.vm_name, IA.STAY, vm.host.name, host.name, vm.memory_kib, vm.state,
                                       note=f"On {vm.host.name}, outside your host groups; left there."))
        else:
            info[uuid] = (vm, item)
            live = vm.state in ("running", "paused", "blocked")
            moves.append(placement.ReturnMove(uuid=uuid, name=vm.name, memory_kib=vm.memory_kib if live else 0,
                                              from_host=vm.host.name, to_host=host.name, vcpus=vm.vcpus if live else 0))
    hosts = list(Host.objects.select_related("facts", "budget"))
    free = {h.name: (h.facts.memory_free_kib if hasattr(h, "facts") else 0) for h in hosts}
    # Each host's guest budget bounds the way home too (hosts.capacity; unset = the portal's defaults).
    committed = planning.committed_by_host([h.pk for h in hosts])
    limits = {h.name: planning.budget_limits(h, committed.get(h.pk, planning.Committed())) for h in hosts}
    budget_left = {n: lim["budget_memory_kib"] - lim["committed_memory_kib"] for n, lim in limits.items()
                   if lim["budget_memory_kib"] is not None}
    vcpus_left = {n: lim["free_vcpus"] for n, lim in limits.items() if lim["free_vcpus"] is not None}
    order = placement.return_order(moves, free, budget_left_kib=budget_left, vcpus_left=vcpus_left)
    rows: list[ReturnRow] = []
    for m in order.steps:
        vm, _item = info[m.uuid]
        live = vm.state in ("running", "paused", "blocked")
        rows.append(ReturnRow(m.uuid, m.name, IA.LIVE if live else IA.OFFLINE, m.from_host, m.to_host,
                              vm.memory_kib, vm.state))
    for s in order.stuck:
        vm, _item = info[s.move.uuid]
        rows_stay.append(ReturnRow(s.move.uuid, s.move.name, IA.STAY, s.move.from_host, host.name, vm.memory_kib,
                                   vm.state, note=s.reason, remedy=s.remedy))
    return ReturnPlan(host=host.name, evacuation=ev, rows=tuple(rows + starts + rows_stay))


def maintenance_exit(
    *, host: Host, actor: Actor, bring_back: bool = True, concurrency: int = 2, plan: ReturnPlan | None = None,
) -> Evacuation | None:
    """Take ``host`` out of maintenance and, unless ``bring_back`` is False, bring its guests home.

    Returns the return run, or None when there is nothing to move or start.
    """
    parameters = {"bring_back": bring_back, "concurrency": concurrency}
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        refuse(actor=actor, action=A.EXIT, target=host, parameters=parameters,
                message=f"Concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency}).")
    running = active_evacuation(host)
    if running is not None:
        refuse(actor=actor, action=A.EXIT, target=host, parameters=parameters,
                message=f"{running} is still {running.get_status_display().lower()}.",
                hint="Let it finish, or cancel it, then exit maintenance.")
    if not host.in_maintenance:
        refuse(actor=actor, action=A.EXIT, target=host, parameters=parameters,
                message=f"{host.name} is not in maintenance.")
    plan = plan or return_plan(host=host, bring_back=bring_back,
                               sources=hosts_for_actor(actor, RoleChoices.OPERATOR, Host.objects.all()))
    try:
        with transaction.atomic():
            host_services.host_maintenance_set(host=host, in_maintenance=False, actor=actor)
            work = [r for r in plan.rows if r.action != IA.STAY or r.origin]
            ev = None
            if any(r.action != IA.STAY for r in work):
                hosts = {h.name: h for h in Host.objects.all()}
                ev = Evacuation.objects.create(
                    host=host, kind=K.RETURN, returns=plan.evacuation, concurrency=concurrency,
                    requested_by=actor.user, requested_by_label=actor.label,
                )
                for position, r in enumerate(work, start=1):
                    EvacuationItem.objects.create(
                        evacuation=ev, position=position, vm_uuid=r.uuid, vm_name=r.name, vm_state=r.state,
                        memory_kib=r.memory_kib, action=r.action, origin=hosts[r.origin],
                        destination=hosts.get(r.destination) if r.destination else None,
                        status=IS.PENDING if r.action != IA.STAY else IS.SKIPPED,
                        reason=r.note, remedy=r.remedy, blocked=bool(r.remedy),
                        estimated_s=None,
                    )
                events.evacuation_changed(ev)
                _advance_on_commit(ev, actor=actor)
            moving = sum(1 for r in plan.rows if r.action in (IA.LIVE, IA.OFFLINE))
            audit_record(
                actor=actor, action=A.EXIT, result=AuditResultChoices.OK, target=ev or host, parameters=parameters,
                message=(f"{host.name} exits maintenance; {moving} guest(s) come home." if bring_back
                         else f"{host.name} exits maintenance without bringing guests back."),
            )
    except IntegrityError:
        refuse(actor=actor, action=A.EXIT, target=host, parameters=parameters,
                message=f"{host.name} is being evacuated right now.", hint="Try again once it has finished.")
    return ev


def moves_start(
    *, kind: str, host: Host, moves: Sequence[tuple[VirtualMachine, Host]], actor: Actor, concurrency: int = 2,
    message: str, parameters: Mapping,
) -> Evacuation:
    """Start a run of live migrations chosen elsewhere (a balance or consolidation) on the rolling queue.

    ``host`` is the host the run is shown under (the busiest, or the one being emptied); each
    move is one ordinary migration from where the guest is now, started by the queue like an
    evacuation's. Audited in the same transaction; one active run per host, as evacuations.
    """
    def refused(text: str, hint: str = "") -> NoReturn:
        refuse(actor=actor, action=A.RUN, target=host, parameters=dict(parameters), message=text, hint=hint)

    if kind not in (K.BALANCE, K.CONSOLIDATE):
        refused(f"Unknown kind of run {kind!r}.")
    if not moves:
        refused("There is nothing to move.")
    outside = actor_refused_on(actor, RoleChoices.OPERATOR, [host, *(h for vm, dest in moves for h in (vm.host, dest))])
    if outside:
        refused(f"{actor.label} does not hold the Operator role on {', '.join(outside)}.",
                "Ask an admin for a grant on the hosts' groups.")
    running = active_evacuation(host)
    if running is not None:
        refused(f"{host.name} already has {running} ({running.get_status_display().lower()}).",
                f"Wait for it to end: {running.get_absolute_url()}")
    bw, overhead, _ = planning.link_estimate()
    try:
        with transaction.atomic():
            ev = Evacuation.objects.create(
                host=host, kind=kind, concurrency=max(1, min(concurrency, MAX_CONCURRENCY)),
                requested_by=actor.user, requested_by_label=actor.label,
            )
            total = 0
            for position, (vm, destination) in enumerate(moves, start=1):
                estimated = round(overhead + vm.memory_kib * 1024 / bw)
                total += estimated
                EvacuationItem.objects.create(
                    evacuation=ev, position=position, vm_uuid=vm.uuid, vm_name=vm.name, vm_state=vm.state,
                    memory_kib=vm.memory_kib, action=IA.LIVE, origin=vm.host, destination=destination,
                    status=IS.PENDING, estimated_s=estimated,
                )
            ev.estimated_s = total
            ev.save(update_fields=["estimated_s"])
            audit_record(actor=actor, action=A.RUN, result=AuditResultChoices.OK, target=ev,
                         parameters=dict(parameters), message=message)
            events.evacuation_changed(ev)
            _advance_on_commit(ev, actor=actor)
    except IntegrityError:
        refused(f"{host.name} already has a run of the queue.", "Wait for it to end.")
    return ev
