"""What host maintenance adds to a host's page (templates/hosts/…).

The hosts app knows nothing of evacuations; its host page loads these tags instead:

    {% load maintenance_panels %}
    {% host_maintenance host as maint %}     reads the host's active and last evacuation once
    {% host_maintenance_buttons maint %}     Enter maintenance / Exit maintenance (Operator)
    {% host_maintenance_banner maint %}      empty and safe to power off, or what is going on
"""

from __future__ import annotations

from dataclasses import dataclass

from django import template

from hosts.choices import VM_ACTIVE_STATES
from hosts.models import Host, VirtualMachine
from maintenance.choices import EVACUATION_ACTIVE_STATES, EvacuationKindChoices
from maintenance.models import Evacuation

register = template.Library()


@dataclass(frozen=True)
class HostMaintenance:
    host: Host
    active: Evacuation | None  # emptying the host, or bringing its guests home
    last: Evacuation | None  # the newest evacuation that ended
    running: list[str]  # names of the guests running or paused on the host now

    @property
    def empty(self) -> bool:
        """Safe to power off: in maintenance, nothing running on it, and nothing under way."""
        return self.host.in_maintenance and self.active is None and not self.running


@register.simple_tag
def host_maintenance(host: Host) -> HostMaintenance:
    # Read once per host object: the host page shows the buttons in its head and the banner in its body.
    cached = getattr(host, "_vmportal_maintenance", None)
    if cached is None:
        cached = host._vmportal_maintenance = _host_maintenance(host)
    return cached


def _host_maintenance(host: Host) -> HostMaintenance:
    evacuations = Evacuation.objects.filter(host=host).order_by("-created", "-pk")
    active = evacuations.filter(status__in=EVACUATION_ACTIVE_STATES).first()
    last = evacuations.exclude(status__in=EVACUATION_ACTIVE_STATES).first()
    running = list(
        VirtualMachine.objects.filter(host=host, state__in=VM_ACTIVE_STATES).order_by("name").values_list("name", flat=True)
    )
    return HostMaintenance(host=host, active=active, last=last, running=running)


def _panel(context, maint: HostMaintenance) -> dict:
    return {"maint": maint, "host": maint.host, "can_operate": context.get("can_operate", False),
            "returning": maint.active is not None and maint.active.kind == EvacuationKindChoices.RETURN}


@register.inclusion_tag("maintenance/partials/host_buttons.html", takes_context=True)
def host_maintenance_buttons(context, maint: HostMaintenance):
    return _panel(context, maint)


@register.inclusion_tag("maintenance/partials/host_banner.html", takes_context=True)
def host_maintenance_banner(context, maint: HostMaintenance):
    return _panel(context, maint)
