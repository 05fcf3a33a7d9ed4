"""What the recommendations judge, read from the inventory and the load history (database only)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from hosts.capacity import host_budget
from hosts.choices import VM_ACTIVE_STATES
from hosts.models import GuestLoad, Host, HostLoad, VirtualMachine
from maintenance import planning
from maintenance.choices import EvacuationKindChoices, ItemStatusChoices
from maintenance.models import EvacuationItem

from . import recommend
from .models import FleetSettings, MetricChoices

BASES = ("assigned", "used")
METRICS = tuple(MetricChoices.values)
# A measured point older than this is not "now".
FRESH = timedelta(minutes=15)


def memory_budget_kib(host: Host) -> int:
    """Memory for guests: the host's own budget, else the portal-wide one, else its memory minus the reserve."""
    return host_budget(host).memory_kib


def rules(**changes) -> recommend.Rules:
    """The rules of the portal's settings (``FleetSettings``), with ``changes`` that are not None on top."""
    saved = FleetSettings.current()
    base = recommend.Rules(
        threshold_pts=saved.threshold_pts, margin_pts=saved.margin_pts,
        cooldown=timedelta(hours=saved.cooldown_hours), hold_s=saved.hold_minutes * 60,
    )
    return recommend.Rules(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def metric_now() -> str:
    return FleetSettings.current().metric


def label_and_format(metric: str, basis: str):
    """How a recommendation names its basis and writes a guest's share of it."""
    if metric == MetricChoices.CPU:
        if basis == "used":
            return "CPU", lambda cores: f"{cores:.2f} cores busy"
        return "vCPU", lambda n: f"{n:g} vCPU"
    return "memory", recommend.memory_text


def _balanced_at() -> dict[str, object]:
    """When the balancer last moved each guest (items of balance runs that succeeded)."""
    rows = (EvacuationItem.objects.filter(evacuation__kind=EvacuationKindChoices.BALANCE, status=ItemStatusChoices.SUCCEEDED)
            .values("vm_uuid").annotate(at=Max("ended")))
    return {str(r["vm_uuid"]): r["at"] for r in rows}


def _latest_points(now) -> tuple[dict[int, HostLoad], dict[str, GuestLoad]]:
    since = now - FRESH
    hosts = {}
    for p in HostLoad.objects.filter(step_s=300, at__gte=since).order_by("at"):
        hosts[p.host_id] = p
    guests = {}
    for g in GuestLoad.objects.filter(step_s=300, at__gte=since).order_by("at"):
        guests[str(g.vm_uuid)] = g
    return hosts, guests


def _guest_share(vm: VirtualMachine, point: GuestLoad | None, *, metric: str, basis: str) -> tuple[float, float]:
    """(share on the metric, memory KiB) a running guest takes on its host."""
    memory = point.memory_kib if basis == "used" and point else vm.memory_kib
    if metric != MetricChoices.CPU:
        return memory, memory
    if basis == "used":
        busy = point.vcpu_pct if point and point.vcpu_pct is not None else 0.0
        return busy / 100.0 * vm.vcpus, memory
    return float(vm.vcpus), memory


def fleet_now(
    *, basis: str = "assigned", metric: str | None = None, now=None, hosts=None,
) -> tuple[list[recommend.HostLoadNow], list[recommend.GuestLoadNow]]:
    """Each host's load against its budget on ``metric`` (memory or CPU), and each guest's share, on ``basis``,
    of ``hosts`` (a queryset: those the user may act on; default every host in service).

    ``assigned``: the running guests' configured memory against the host's memory budget, or
    their vCPUs against its CPUs × overcommit ratio. ``used``: the last measured points (memory
    used, or CPU cores busy against the host's CPUs; hosts with no fresh point count as not
    reachable: nothing is judged on old figures). Placement always keeps memory within the budget
    and vCPUs within the ratio, whatever the metric.
    """
    if basis not in BASES:
        raise ValueError(f"Unknown basis {basis!r}; expected one of {', '.join(BASES)}.")
    metric = metric or metric_now()
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {', '.join(METRICS)}.")
    now = now or timezone.now()
    hosts = list((Host.objects.all() if hosts is None else hosts).select_related("facts", "budget").order_by("name"))
    vms = list(VirtualMachine.objects.filter(host__in=[h.pk for h in hosts]).select_related("host")
               .prefetch_related("disks").order_by("name"))
    balanced = _balanced_at()
    host_points, guest_points = _latest_points(now) if basis == "used" else ({}, {})
    groups: dict[int, set[str]] = {}
    for vm in vms:
        groups.setdefault(vm.host_id, set()).update(vm.anti_affinity or ())
    guests = []
    loads = {h.pk: 0.0 for h in hosts}
    memory = {h.pk: 0 for h in hosts}
    vcpus = {h.pk: 0 for h in hosts}
    for vm in vms:
        running = vm.state in VM_ACTIVE_STATES
        share, mem = _guest_share(vm, guest_points.get(str(vm.uuid)), metric=metric, basis=basis) if running else (0, 0)
        loads[vm.host_id] = loads.get(vm.host_id, 0) + share
        memory[vm.host_id] = memory.get(vm.host_id, 0) + mem
        vcpus[vm.host_id] = vcpus.get(vm.host_id, 0) + (vm.vcpus if running else 0)
        guests.append(recommend.GuestLoadNow(
            needs=planning.guest_needs(vm), host=vm.host.name, load=share,
            balanced_at=balanced.get(str(vm.uuid)),
        ))
    result = []
    for h in hosts:
        budget = host_budget(h)
        point = host_points.get(h.pk)
        used = basis == "used"
        mem_load = point.memory_used_kib if used and point else memory[h.pk]
        if metric == MetricChoices.CPU:
            cpus = h.facts.cpus if getattr(h, "facts", None) else 0
            if used:
                limit = float(cpus)
                load = (point.cpu_pct or 0.0) / 100.0 * cpus if point else 0.0
            else:
                limit, load = float(budget.vcpus), loads[h.pk]
        else:
            limit, load = float(budget.memory_kib), float(mem_load)
        reachable = h.is_connectable and (not used or (point is not None and (metric != MetricChoices.CPU
                                                                                or point.cpu_pct is not None)))
        # The budget is applied here on the basis asked for (assigned or used), not by host_capacity's own.
        capacity = planning.host_capacity(h, free_kib=max(budget.memory_kib - mem_load, 0), reachable=reachable,
                                          groups=frozenset(groups.get(h.pk, ())), budget=False)
        result.append(recommend.HostLoadNow(
            # No vCPU limit for a host whose CPUs are not known yet (no facts): memory still holds.
            capacity=replace(capacity, free_vcpus=budget.vcpus - vcpus[h.pk] if budget.vcpus else None),
            load=load, limit=limit,
        ))
    return result, guests


def spread_history(*, since, metric: str = MetricChoices.MEMORY, now=None) -> list[tuple[object, float]]:
    """The measured spread (points of use between busiest and least busy host) at each 5-minute point.

    Memory: used against the host's budget; CPU: the host's measured CPU use.
    """
    budgets = {h.pk: memory_budget_kib(h) for h in Host.objects.select_related("facts", "budget") if h.is_connectable}
    by_at: dict[object, list[float]] = {}
    for p in HostLoad.objects.filter(step_s=300, at__gte=since, host_id__in=budgets).order_by("at"):
        if metric == MetricChoices.CPU:
            if p.cpu_pct is not None:
                by_at.setdefault(p.at, []).append(p.cpu_pct)
        elif budgets[p.host_id]:
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
