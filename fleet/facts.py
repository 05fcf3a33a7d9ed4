"""What the recommendations judge, read from the inventory and the load history (database only)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from hosts.choices import VM_ACTIVE_STATES
from hosts.models import GuestLoad, Host, HostLoad, VirtualMachine
from maintenance import planning
from maintenance.choices import EvacuationKindChoices, ItemStatusChoices
from maintenance.models import EvacuationItem

from . import recommend

BASES = ("assigned", "used")
# A measured point older than this is not "now".
FRESH = timedelta(minutes=15)


def memory_budget_kib(host: Host) -> int:
    """Memory for guests: the portal-wide budget when set, else the host's memory minus the reserve."""
    if settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB:
        return settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB * 1024
    facts = getattr(host, "facts", None)
    total = facts.memory_total_kib if facts else 0
    return max(total - settings.VMPORTAL_FLEET_HOST_RESERVE_MIB * 1024, 0)


def rules(**changes) -> recommend.Rules:
    base = recommend.Rules(
        threshold_pts=settings.VMPORTAL_FLEET_THRESHOLD_POINTS, margin_pts=settings.VMPORTAL_FLEET_MARGIN_POINTS,
        cooldown=timedelta(hours=settings.VMPORTAL_FLEET_COOLDOWN_HOURS),
    )
    return recommend.Rules(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def _balanced_at() -> dict[str, object]:
    """When the balancer last moved each guest (items of balance runs that succeeded)."""
    rows = (EvacuationItem.objects.filter(evacuation__kind=EvacuationKindChoices.BALANCE, status=ItemStatusChoices.SUCCEEDED)
            .values("vm_uuid").annotate(at=Max("ended")))
    return {str(r["vm_uuid"]): r["at"] for r in rows}


def _latest_points(now) -> tuple[dict[int, HostLoad], dict[str, int]]:
    since = now - FRESH
    hosts = {}
    for p in HostLoad.objects.filter(step_s=300, at__gte=since).order_by("at"):
        hosts[p.host_id] = p
    guests = {}
    for g in GuestLoad.objects.filter(step_s=300, at__gte=since).order_by("at"):
        guests[str(g.vm_uuid)] = g.memory_kib
    return hosts, guests


def fleet_now(
    *, basis: str = "assigned", now=None, hosts=None,
) -> tuple[list[recommend.HostLoadNow], list[recommend.GuestLoadNow]]:
    """Each host's memory load against its budget, and each guest's share, on ``basis``, of
    ``hosts`` (a queryset: those the user may act on; default every host in service).

    ``assigned``: the running guests' configured memory. ``used``: the last measured points
    (hosts with no fresh point count as not reachable: nothing is judged on old figures).
    """
    if basis not in BASES:
        raise ValueError(f"Unknown basis {basis!r}; expected one of {', '.join(BASES)}.")
    now = now or timezone.now()
    hosts = list((Host.objects.all() if hosts is None else hosts).select_related("facts").order_by("name"))
    vms = list(VirtualMachine.objects.filter(host__in=[h.pk for h in hosts]).select_related("host")
               .prefetch_related("disks").order_by("name"))
    balanced = _balanced_at()
    host_points, guest_points = _latest_points(now) if basis == "used" else ({}, {})
    groups: dict[int, set[str]] = {}
    for vm in vms:
        groups.setdefault(vm.host_id, set()).update(vm.anti_affinity or ())
    guests, loads = [], {h.pk: 0 for h in hosts}
    for vm in vms:
        running = vm.state in VM_ACTIVE_STATES
        share = (guest_points.get(str(vm.uuid), vm.memory_kib) if basis == "used" else vm.memory_kib) if running else 0
        loads[vm.host_id] = loads.get(vm.host_id, 0) + share
        guests.append(recommend.GuestLoadNow(
            needs=planning.guest_needs(vm), host=vm.host.name, load=share,
            balanced_at=balanced.get(str(vm.uuid)),
        ))
    result = []
    for h in hosts:
        limit = memory_budget_kib(h)
        point = host_points.get(h.pk)
        load = point.memory_used_kib if basis == "used" and point else loads[h.pk]
        reachable = h.is_connectable and (basis == "assigned" or point is not None)
        result.append(recommend.HostLoadNow(
            capacity=planning.host_capacity(h, free_kib=max(limit - load, 0), reachable=reachable,
                                            groups=frozenset(groups.get(h.pk, ()))),
            load=load, limit=limit,
        ))
    return result, guests


def spread_history(*, since, now=None) -> list[tuple[object, float]]:
    """The measured memory spread (points of use between busiest and least busy host) at each 5-minute point."""
    budgets = {h.pk: memory_budget_kib(h) for h in Host.objects.select_related("facts") if h.is_connectable}
    by_at: dict[object, list[float]] = {}
    for p in HostLoad.objects.filter(step_s=300, at__gte=since, host_id__in=budgets).order_by("at"):
        if budgets[p.host_id]:
            by_at.setdefault(p.at, []).append(100.0 * p.memory_used_kib / budgets[p.host_id])
    return [(at, max(v) - min(v)) for at, v in sorted(by_at.items()) if len(v) >= 2]


def seconds_per_move(guests: list[recommend.GuestLoadNow]) -> float:
    """A guest's expected migration time from past migrations: overhead + its memory over the measured link."""
    bw, overhead, _ = planning.link_estimate()
    running = [g.needs.memory_kib for g in guests if g.needs.state != "shutoff"] or [0]
    return overhead + (sum(running) / len(running)) * 1024 / bw


def open_window() -> str:
    """The reason recommendations are paused now: a host in maintenance (its window or evacuation runs)."""
    busy = list(Host.objects.filter(in_maintenance=True).order_by("name").values_list("name", flat=True))
    return f"{', '.join(busy)} in maintenance; recommendations wait for it to end." if busy else ""
