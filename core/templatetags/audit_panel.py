"""{% audit_panel object children %}: an object's latest audit events, linking to the full list.

Any page drops it in (host, guest, migration, share, evacuation, maintenance window); the
optional ``children`` are records whose events belong with the object's (a host's guests,
an evacuation's migrations).
"""

from django import template
from django.urls import reverse
from django.utils.http import urlencode

from core.filtersets import MAX_TARGETS, targets_q
from core.models import AuditEvent

register = template.Library()

PANEL_EVENTS = 10


@register.inclusion_tag("core/partials/audit_panel.html")
def audit_panel(obj, children=None):
    pairs = [(obj._meta.model_name, str(obj.pk))]
    for child in list(children or [])[: MAX_TARGETS - 1]:
        pairs.append((child._meta.model_name, str(child.pk)))
    events = list(AuditEvent.objects.filter(targets_q(pairs)).order_by("-time", "-pk")[:PANEL_EVENTS])
    link = reverse("core:audit") + "?" + urlencode({"targets": ",".join(f"{t}:{i}" for t, i in pairs)})
    return {"events": events, "audit_url": link, "object": obj}
