"""A host's guest capacity: the memory budget for guests and the vCPUs it may run (pure, plus one reader).

The admin sets either per host (``HostBudget``, ``capacity_services.host_capacity_set``); unset
fields fall back to the portal's defaults: memory minus ``VMPORTAL_FLEET_HOST_RESERVE_MIB`` (or
``VMPORTAL_FLEET_MEMORY_BUDGET_MIB`` for every host when set) and ``VMPORTAL_FLEET_VCPU_RATIO``
vCPUs per host CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Bounds of what an admin may set: a budget of at least 64 MiB and at most 64 TiB; a ratio in (0, 64].
MEMORY_MIB_MIN, MEMORY_MIB_MAX = 64, 64 * 1024 * 1024
RATIO_MIN, RATIO_MAX = 0.1, 64.0


@dataclass(frozen=True)
class Budget:
    memory_kib: int  # memory for guests
    vcpus: int  # vCPUs the host may run (its CPUs times the overcommit ratio)
    vcpu_ratio: float
    memory_default: bool  # True: from the portal's default, not set for this host
    ratio_default: bool


def budget_of(*, memory_total_kib: int, cpus: int, guest_memory_mib: int | None, vcpu_ratio: float | None,
              reserve_mib: int, portal_memory_mib: int, portal_ratio: float) -> Budget:
    """The budget from the host's figures, what the admin set (None: unset) and the portal's defaults."""
    if guest_memory_mib is not None:
        memory = guest_memory_mib * 1024
    elif portal_memory_mib:
        memory = portal_memory_mib * 1024
    else:
        memory = max(memory_total_kib - reserve_mib * 1024, 0)
    ratio = vcpu_ratio if vcpu_ratio is not None else portal_ratio
    return Budget(memory_kib=memory, vcpus=int(cpus * ratio), vcpu_ratio=ratio,
                  memory_default=guest_memory_mib is None, ratio_default=vcpu_ratio is None)


def host_budget(host) -> Budget:
    """The budget of ``host`` (load it with ``select_related("facts", "budget")`` for lists)."""
    facts = getattr(host, "facts", None)
    row = getattr(host, "budget", None)  # a missing one-to-one row raises an AttributeError subclass
    return budget_of(
        memory_total_kib=facts.memory_total_kib if facts else 0, cpus=facts.cpus if facts else 0,
        guest_memory_mib=row.guest_memory_mib if row else None, vcpu_ratio=row.vcpu_ratio if row else None,
        reserve_mib=settings.VMPORTAL_FLEET_HOST_RESERVE_MIB, portal_memory_mib=settings.VMPORTAL_FLEET_MEMORY_BUDGET_MIB,
        portal_ratio=settings.VMPORTAL_FLEET_VCPU_RATIO,
    )


def budget_problems(*, memory_mib: int | None, vcpu_ratio: float | None) -> list[str]:
    """What is wrong with values an admin gave (None: back to the default), each with how to fix it."""
    problems = []
    if memory_mib is not None and not MEMORY_MIB_MIN <= memory_mib <= MEMORY_MIB_MAX:
        problems.append(f"The memory budget must be from {MEMORY_MIB_MIN} to {MEMORY_MIB_MAX} MiB (got {memory_mib}); "
                        "leave it empty for the default.")
    if vcpu_ratio is not None and not (RATIO_MIN <= vcpu_ratio <= RATIO_MAX):
        problems.append(f"The vCPU ratio must be from {RATIO_MIN:g} to {RATIO_MAX:g} vCPUs per host CPU "
                        f"(got {vcpu_ratio:g}); leave it empty for the default.")
    return problems
