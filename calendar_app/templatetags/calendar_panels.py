"""What the maintenance calendar adds to the hosts app's pages (templates/hosts/…).

    {% load calendar_panels %}
    {% host_windows host %}                 the host's next windows (host page)
    {% windows_soon as soon %}              {host id: next occurrence} within 24 h (inventory)
"""

from __future__ import annotations

from datetime import timedelta

from django import template
from django.utils import timezone

from hosts.models import Host

from ..choices import OCCURRENCE_TERMINAL_STATES
from ..models import MaintenanceWindow, WindowOccurrence
from ..payloads import occurrences_between, when_label, with_occurrences

register = template.Library()

SOON = timedelta(hours=24)


@register.inclusion_tag("calendar_app/partials/host_windows.html", takes_context=True)
def host_windows(context, host: Host, days: int = 60):
    now, until = timezone.now(), timezone.now() + timedelta(days=days)
    found = []
    for w in with_occurrences(MaintenanceWindow.objects.filter(hosts=host, cancelled=False), now, until):
        found += occurrences_between(w, now, until, limit=5)
    found.sort(key=lambda o: o["start"])
    return {"host": host, "occurrences": found[:5], "can_operate": context.get("can_operate", False)}


@register.simple_tag
def windows_soon() -> dict[int, dict]:
    """The next occurrence (within 24 h, or running now) of every host that has one."""
    now = timezone.now()
    soon: dict[int, dict] = {}
    windows = MaintenanceWindow.objects.filter(cancelled=False, start__lt=now + SOON)
    for w in with_occurrences(windows, now, now + SOON):
        occs = [o for o in occurrences_between(w, now, now + SOON, limit=2)
                if o["status"] not in OCCURRENCE_TERMINAL_STATES]
        if not occs:
            continue
        for h in w.hosts.all():
            if h.pk not in soon or occs[0]["start"] < soon[h.pk]["start"]:
                soon[h.pk] = occs[0]
    return soon


@register.filter
def soon_for(soon: dict, host_id: int):
    return soon.get(host_id)


@register.inclusion_tag("calendar_app/partials/warnings_banner.html")
def calendar_warnings():
    """Warnings of occurrences that are near or running (the inventory's banner)."""
    now = timezone.now()
    rows = (WindowOccurrence.objects.select_related("window").exclude(warnings=[])
            .filter(end__gt=now - timedelta(hours=1), start__lt=now + SOON)
            .exclude(status__in=[s for s in OCCURRENCE_TERMINAL_STATES if s != "overran"]).order_by("start")[:5])
    return {"rows": [(o, o.warnings[-1]) for o in rows]}


@register.simple_tag
def window_when(window: MaintenanceWindow) -> str:
    """The window's first occurrence, in the zone of this request."""
    return when_label(window.start, window.end)
