"""Setting a host's guest capacity (audited, one transaction)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.errors import ServiceRefused

from . import capacity
from .models import Host, HostBudget


@transaction.atomic
def host_capacity_set(*, host: Host, memory_mib: int | None, vcpu_ratio: float | None, actor: Actor) -> HostBudget:
    """Set the host's memory budget for guests (MiB) and vCPU overcommit ratio; None puts one back to the default."""
    problems = capacity.budget_problems(memory_mib=memory_mib, vcpu_ratio=vcpu_ratio)
    if problems:
        raise ServiceRefused(" ".join(problems), hint="Correct the values and save again.")
    row, _ = HostBudget.objects.select_for_update().get_or_create(host=host)
    old = {"memory_mib": row.guest_memory_mib, "vcpu_ratio": row.vcpu_ratio}
    row.guest_memory_mib, row.vcpu_ratio, row.updated = memory_mib, vcpu_ratio, timezone.now()
    row.save()
    new = {"memory_mib": memory_mib, "vcpu_ratio": vcpu_ratio}
    host.budget = row
    now = capacity.host_budget(host)
    audit_record(actor=actor, action="host.capacity", result=AuditResultChoices.OK, target=host,
                 parameters={"old": old, "new": new},
                 message=f"{host.name}: {now.memory_kib // 1024} MiB for guests"
                         f"{' (default)' if now.memory_default else ''}, {now.vcpu_ratio:g} vCPU per CPU"
                         f"{' (default)' if now.ratio_default else ''} = {now.vcpus} vCPUs.")
    return row
