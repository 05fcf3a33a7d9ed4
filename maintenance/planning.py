"""The evacuation plan: every guest of a host, where it goes, the checks and the estimated time.

``evacuation_plan`` builds what the plan page, ``host_maintenance … --dry-run`` and
``services.evacuation_enter`` show and execute: one gather of preflight facts for all guests
over all candidate hosts (``migrations_app.gather_fleet``: once per host and once per host pair),
the preflight's verdicts per guest × host (a failed preflight vetoes that host for that guest),
then the pure placement (``migrations_app.placement``). ``replacement_for`` re-places one guest
from the inventory alone, for the retry of a failed item.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Sum

from hosts import disk_sizes
from hosts.capacity import host_budget
from hosts.choices import VM_ACTIVE_STATES, DiskStorageChoices, VMStateChoices
from hosts.models import Host, VirtualMachine
from migrations_app import placement, preflight
from migrations_app.choices import MigrationStatusChoices
from migrations_app.gather_fleet import gather_evacuation
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions
from migrations_app.preflight import Verdict
from migrations_app.verdicts import VerdictStatus

from . import decisions
from .choices import ItemActionChoices as IA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanRow:
    """One guest of the plan, in the order the queue starts them."""

    position: int
    uuid: str
    name: str
    state: str
    memory_kib: int
    vcpus: int
    outcome: str  # placement.OUTCOME_*
    action: str  # ItemActionChoices value
    destination: str | None = None
    blocker: placement.Blocker | None = None
    verdicts: tuple[Verdict, ...] = ()  # the preflight towards the destination
    warnings: tuple[str, ...] = ()
    note: str = ""
    estimated_s: int = 0
    overridden: bool = False
    local_disks: tuple[str, ...] = ()
    disk_copy_bytes: int = 0  # local disks' data a storage-copying live move sends (in estimated_s)
    disk_copy_note: str = ""  # what that assumed of disks no refresh sized ("" when all are recorded)

    @property
    def moves(self) -> bool:
        return self.action in (IA.LIVE, IA.OFFLINE)

    def get_action_label(self) -> str:
        return IA(self.action).label


@dataclass(frozen=True)
class EvacuationPlan:
    host: str
    strategy: str
    concurrency: int
    rows: tuple[PlanRow, ...]
    candidates: tuple[str, ...]  # hosts that could take guests
    estimated_s: int
    estimate_basis: str  # where the time estimate comes from, in words
    checked: bool  # the hosts were asked (False: from the inventory only)
    gathered_s: float = 0.0
    unreachable: tuple[str, ...] = field(default=())

    @property
    def blockers(self) -> tuple[PlanRow, ...]:
        return tuple(r for r in self.rows if r.blocker is not None and r.action == IA.STAY)

    @property
    def fingerprint(self) -> str:
        """Identifies what the plan does; the confirm form carries it so nobody confirms a plan that changed."""
        text = "|".join(f"{r.uuid}:{r.action}:{r.destination or ''}" for r in self.rows)
        return hashlib.sha256(f"{self.host}|{self.concurrency}|{text}".encode()).hexdigest()[:16]


# --- Inputs of the placement ------------------------------------------------------------------


def _local_disks(vm: VirtualMachine) -> tuple[str, ...]:
    """Writable disks only this host sees, as the inventory classified them."""
    return tuple(sorted(
        d.target for d in vm.disks.all()
        if d.storage == DiskStorageChoices.LOCAL and d.source and not d.readonly and not d.shareable
    ))


def _state(vm_state: str) -> str:
    if vm_state == VMStateChoices.PAUSED:
        return "paused"
    return "running" if vm_state in VM_ACTIVE_STATES else "shutoff"


def guest_needs(vm: VirtualMachine) -> placement.GuestNeeds:
    device_bound = vm.host_devices > 0 and _state(vm.state) != "shutoff"
    return placement.GuestNeeds(
        uuid=str(vm.uuid), name=vm.name, memory_kib=vm.memory_kib, vcpus=vm.vcpus,
        arch=vm.arch or "x86_64", domain_type=vm.domain_type or "kvm", state=_state(vm.state),
        cpu_model=vm.cpu_model or None, local_disks=_local_disks(vm),
        shared_disks=any(d.storage == DiskStorageChoices.SHARED for d in vm.disks.all()),
        # A passed-through host device ties a running guest to its host like a pin does.
        pinned=vm.pinned or device_bound,
        pin_reason="" if vm.pinned or not device_bound else (
            f"it has {vm.host_devices} passed-through host device(s), which live migration cannot move."),
        pin_to=vm.pin_to or None, anti_affinity=frozenset(vm.anti_affinity or ()),
    )


def _guest_arches(host_arch: str) -> frozenset[str]:
    """The guest arches a host of ``host_arch`` runs (KVM runs a 32-bit guest on its 64-bit host)."""
    if not host_arch:
        return frozenset()
    return frozenset({g for g, hosts in preflight.KVM_HOST_ARCHES.items() if host_arch in hosts} | {host_arch})


@dataclass(frozen=True)
class Committed:
    """What the guests running on a host take of its budget now."""

    memory_kib: int = 0
    vcpus: int = 0


def committed_by_host(host_ids: Iterable[int] | None = None) -> dict[int, Committed]:
    """Memory and vCPUs of the guests running (or paused) on each host, in one query; a host with none is absent.

    A guest's copy marked replaced elsewhere (``superseded_at``) is not counted: it runs there no more.
    """
    rows = VirtualMachine.objects.filter(state__in=VM_ACTIVE_STATES, superseded_at__isnull=True)
    if host_ids is not None:
        rows = rows.filter(host_id__in=list(host_ids))
    return {r["host_id"]: Committed(int(r["memory"] or 0), int(r["vcpus"] or 0))
            for r in rows.values("host_id").annotate(memory=Sum("memory_kib"), vcpus=Sum("vcpus")).order_by()}


def budget_limits(host: Host, committed: Committed) -> dict:
    """The budget fields of ``host``'s capacity: its guest budget (``hosts.capacity``) and what is left of it.

    A host whose memory is not known yet (no facts, or a total of 0) and that has no budget set has
    no memory bound here (its free memory bounds it); one whose CPUs are not known, no vCPU bound.
    """
    budget = host_budget(host)
    facts = getattr(host, "facts", None)
    known = facts is not None and facts.memory_total_kib > 0
    memory = budget.memory_kib if known or not budget.memory_default else None
    vcpus = budget.vcpus if budget.vcpus > 0 else None
    return {
        "budget_memory_kib": memory, "committed_memory_kib": committed.memory_kib,
        "budget_vcpus": vcpus, "free_vcpus": None if vcpus is None else vcpus - committed.vcpus,
    }


def host_capacity(
    host: Host, *, free_kib: int | None = None, reachable: bool | None = None, groups: frozenset[str] = frozenset(),
    committed: Committed | None = None, budget: bool = True,
) -> placement.HostCapacity:
    """What ``host`` offers a plan: its free memory, facts and, unless ``budget`` is False, its guest budget.

    ``committed``: what its running guests take (from ``committed_by_host`` for a list of hosts;
    read here when not given). Load hosts with ``select_related("facts", "budget")``.
    """
    facts = getattr(host, "facts", None)
    limits = {}
    if budget:
        if committed is None:
            committed = committed_by_host([host.pk]).get(host.pk, Committed())
        limits = budget_limits(host, committed)
    return placement.HostCapacity(
        name=host.name,
        free_memory_kib=free_kib if free_kib is not None else (facts.memory_free_kib if facts else 0),
        cpus=facts.cpus if facts else 0,
        arches=_guest_arches(facts.arch if facts else ""),
        domain_types=frozenset(facts.domain_types) if facts and facts.domain_types else frozenset({"kvm", "qemu"}),
        in_maintenance=host.in_maintenance,
        reachable=host.is_connectable if reachable is None else reachable,
        anti_affinity=groups,
        **limits,
    )


def options_for(state: str, *, copy_storage: bool, has_local: bool) -> MigrationOptions:
    """What the queue asks of each item's migration: live (or definition only when shut off)."""
    if state == "shutoff":
        return MigrationOptions(live=False)
    return MigrationOptions(copy_storage=copy_storage and has_local)


def _candidates(host: Host, hosts=None) -> list[Host]:
    """The hosts in service other than ``host`` (or of ``hosts``: those the requester may act on)."""
    hosts = Host.objects.all() if hosts is None else hosts
    return list(hosts.exclude(pk=host.pk).select_related("facts", "budget").order_by("name"))


def _groups_by_host() -> dict[int, frozenset[str]]:
    """Anti-affinity groups of the guests running on each host (shut-off ones count: they start later)."""
    found: dict[int, set[str]] = {}
    for host_id, groups in VirtualMachine.objects.exclude(anti_affinity=[]).values_list("host_id", "anti_affinity"):
        found.setdefault(host_id, set()).update(groups or ())
    return {k: frozenset(v) for k, v in found.items()}


def _guests(host: Host) -> list[VirtualMachine]:
    return list(VirtualMachine.objects.filter(host=host).prefetch_related("disks").order_by("name"))


# --- Time estimate ----------------------------------------------------------------------------


def link_estimate() -> tuple[float, float, str]:
    """(bandwidth B/s, overhead s per guest, basis in words) from this portal's past live migrations."""
    recent = (
        Migration.objects.filter(status=MigrationStatusChoices.SUCCEEDED, data_transferred_bytes__gt=0,
                                 total_time_ms__gt=0, ended__isnull=False)
        .order_by("-ended")[:20]
    )
    samples = []
    for m in recent:
        wall_ms = int((m.ended - m.created).total_seconds() * 1000)
        samples.append((m.data_transferred_bytes, m.total_time_ms, wall_ms))
    found = decisions.measured_link(samples)
    if found is None:
        bw = settings.VMPORTAL_EVACUATION_DEFAULT_BANDWIDTH_BPS
        overhead = settings.VMPORTAL_EVACUATION_DEFAULT_OVERHEAD_S
        return bw, overhead, (
            f"No live migration measured yet: assumes {bw * 8 / 1e9:g} Gbit/s and {overhead:g} s per guest."
        )
    bw, overhead, n = found
    return bw, overhead, (
        f"From the last {n} live migration(s): {bw * 8 / 1e6:.0f} Mbit/s and {overhead:.1f} s per guest."
    )


# --- The plan ---------------------------------------------------------------------------------


def _veto(verdicts: Iterable[Verdict]) -> tuple[str, str, str] | None:
    failed = [v for v in verdicts if v.status == VerdictStatus.FAIL]
    if not failed:
        return None
    return failed[0].check, " ".join(v.reason for v in failed), " ".join(v.fix for v in failed if v.fix)


def evacuation_plan(
    *,
    host: Host,
    strategy: str = "spread",
    concurrency: int = 2,
    excluded: Iterable[str] = (),
    overrides: Mapping[str, str] | None = None,
    shutdown: Iterable[str] = (),
    copy_storage: bool = False,
    check_hosts: bool = True,
    keep: Mapping[str, str] | None = None,
    candidates=None,
) -> EvacuationPlan:
    """Where every guest of ``host`` goes, with the preflight towards it, in the queue's order.

    ``excluded``/``shutdown`` are guest UUIDs; ``overrides`` maps a guest UUID to a host name
    the admin chose. ``keep`` maps guest UUIDs to the destinations of a plan already shown: they
    are placed there again if they still fit (free memory moves a little between two looks, and
    a spread between near-equal hosts would flip), so a confirm executes the plan that was shown.
    ``check_hosts=False`` plans from the inventory alone (no host is contacted; no verdicts).
    ``candidates``: the hosts guests may go to (a queryset; default every host in service).
    """
    started = time.monotonic()
    chosen = dict(overrides or {})
    overrides = {**dict(keep or {}), **chosen}
    shutdown = frozenset(shutdown)
    excluded = frozenset(excluded) | shutdown  # a guest shut down here is not placed
    vms = _guests(host)
    others = _candidates(host, candidates)
    usable = [h for h in others if h.is_connectable and not h.in_maintenance]
    needs = {str(vm.uuid): guest_needs(vm) for vm in vms}
    # What a storage-copying live move of each guest sends of its local disks (disks prefetched).
    disk_copies = {str(vm.uuid): disk_sizes.storage_copy_estimate(vm.disks.all()) for vm in vms} if copy_storage else {}
    free = {h.name: None for h in others}
    reachable = {h.name: None for h in others}
    verdicts: dict[tuple[str, str], tuple[Verdict, ...]] = {}
    vetoes: dict[tuple[str, str], tuple[str, str, str]] = {}
    cpu_ok: dict[tuple[str | None, str], bool] = {}
    checked = False
    if check_hosts and vms and usable:
        fleet = gather_evacuation(
            source=host, destinations=usable, guest_uuids=[str(vm.uuid) for vm in vms],
            options=MigrationOptions(copy_storage=copy_storage),
        )
        checked = True
        for side in fleet.destinations:
            free[side.name] = side.memory_free_kib if side.reachable else None
            reachable[side.name] = side.reachable
        for uuid, need in needs.items():
            options = options_for(need.state, copy_storage=copy_storage, has_local=bool(need.local_disks))
            for dest in usable:
                if not reachable.get(dest.name):
                    continue
                pair = fleet.pair(uuid, dest.name)
                guest = fleet.guest_for(uuid, dest.name)
                found = tuple(preflight.run_preflight(pair, guest, options))
                verdicts[(uuid, dest.name)] = found
                cpu = next((v for v in found if v.check == "cpu"), None)
                if cpu is not None:  # the placement's own CPU rule then knows it was checked
                    key = (need.cpu_model, dest.name)
                    cpu_ok[key] = cpu_ok.get(key, True) and cpu.status != VerdictStatus.FAIL
                veto = _veto(found)
                if veto is not None:
                    vetoes[(uuid, dest.name)] = veto
    groups = _groups_by_host()
    committed = committed_by_host([h.pk for h in others])
    capacities = [
        host_capacity(h, free_kib=free.get(h.name), reachable=reachable.get(h.name), groups=groups.get(h.pk, frozenset()),
                      committed=committed.get(h.pk, Committed()))
        for h in others
    ] + [host_capacity(host, budget=False)]
    plan = placement.place(
        needs.values(), capacities, source=host.name, strategy=strategy, cpu_ok=cpu_ok, overrides=overrides,
        excluded=excluded, copy_storage=copy_storage, vetoes=vetoes,
    )
    bw, overhead, basis = link_estimate()
    rows = []
    moving, staying = [], []
    for p in plan.placements:
        need = needs[p.uuid]
        if p.uuid in shutdown:
            action = IA.SHUTDOWN if need.state != "shutoff" else IA.STAY
            note = ("Shut down for the maintenance and started again when it ends." if action == IA.SHUTDOWN
                    else "Already shut off; stays here.")
            row = dict(outcome=placement.OUTCOME_EXCLUDED, action=action, note=note)
        elif p.outcome == placement.OUTCOME_MOVE:
            row = dict(outcome=p.outcome, action=IA.OFFLINE if need.state == "shutoff" else IA.LIVE,
                       destination=p.destination, warnings=p.warnings,
                       verdicts=verdicts.get((p.uuid, p.destination), ()), overridden=p.uuid in chosen)
        else:
            row = dict(outcome=p.outcome, action=IA.STAY, blocker=p.blocker, note=p.note, warnings=p.warnings)
        (moving if row["action"] != IA.STAY else staying).append((need, row))
    assumed_disks = 0
    for position, (need, row) in enumerate(moving + staying, start=1):
        copy = disk_copies.get(need.uuid) if row["action"] == IA.LIVE and need.local_disks else None
        assumed_disks += len(copy.unknown) if copy else 0
        rows.append(PlanRow(
            position=position, uuid=need.uuid, name=need.name, state=need.state, memory_kib=need.memory_kib,
            vcpus=need.vcpus, local_disks=need.local_disks,
            estimated_s=decisions.estimate_s(memory_kib=need.memory_kib, action=row["action"],
                                             bandwidth_bps=bw, overhead_s=overhead,
                                             disk_bytes=copy.bytes if copy else 0),
            disk_copy_bytes=copy.bytes if copy else 0, disk_copy_note=copy.note if copy else "",
            **row,
        ))
    if any(r.disk_copy_bytes for r in rows):
        basis += " Local disks copied at the same rate, by their recorded allocation"
        basis += (f"; {assumed_disks} of unknown size (no refresh recorded it) assumed "
                  f"{disk_sizes.ASSUMED_DISK_BYTES // 2**30} GiB each." if assumed_disks else ".")
    durations = [r.estimated_s for r in rows if r.action != IA.STAY]
    # Migration slots cap what leaves one host at once, whatever the evacuation asks for.
    lanes = min(concurrency, settings.VMPORTAL_MAX_OUTGOING)
    if lanes < concurrency:
        basis += (f" The portal sends at most {lanes} migration(s) from a host at once (VMPORTAL_MAX_OUTGOING):"
                  f" {concurrency} at a time runs as {lanes}.")
    return EvacuationPlan(
        host=host.name, strategy=strategy, concurrency=concurrency, rows=tuple(rows),
        candidates=tuple(h.name for h in usable if reachable.get(h.name) is not False),
        estimated_s=decisions.makespan_s(durations, lanes), estimate_basis=basis, checked=checked,
        gathered_s=time.monotonic() - started,
        unreachable=tuple(sorted(n for n, ok in reachable.items() if ok is False)),
    )


def replacement_for(*, vm: VirtualMachine, evacuated: Host, tried: Iterable[str], pending: Mapping[str, int]) -> placement.Placement:
    """A fresh destination for a guest whose move failed, from the inventory: not a host it failed on.

    ``pending`` is memory (KiB) this evacuation is still sending to each host; the migration's own
    preflight re-check decides for real.
    """
    tried = frozenset(tried)
    groups = _groups_by_host()
    capacities = []
    candidates = _candidates(evacuated)
    committed = committed_by_host([h.pk for h in candidates])
    for h in candidates:
        facts = getattr(h, "facts", None)
        free = (facts.memory_free_kib if facts else 0) - pending.get(h.name, 0)
        # What this evacuation is still sending there counts against the budget as if it ran there.
        here = committed.get(h.pk, Committed())
        capacities.append(host_capacity(h, free_kib=max(free, 0), reachable=h.is_connectable and h.name not in tried,
                                        groups=groups.get(h.pk, frozenset()),
                                        committed=Committed(here.memory_kib + pending.get(h.name, 0), here.vcpus)))
    capacities.append(host_capacity(evacuated, budget=False))
    need = guest_needs(VirtualMachine.objects.prefetch_related("disks").get(pk=vm.pk))
    return placement.place([need], capacities, source=evacuated.name).by_uuid(str(vm.uuid))
