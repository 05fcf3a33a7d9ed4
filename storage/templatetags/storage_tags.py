"""What shared storage adds to the host and guest pages of the hosts app.

    {% host_shares host %}                          the NFS shares a host takes part in (host page)
    {% host_has_share host as host_has_share %}     does the host export or mount any share?
"""

from django import template
from django.db.models import Q

from storage.models import Share

register = template.Library()


def _shares_of(host):
    return Share.objects.filter(Q(server=host) | Q(clients=host))


@register.inclusion_tag("storage/partials/host_shares.html", takes_context=True)
def host_shares(context, host):
    shares = _shares_of(host).select_related("server").distinct()
    return {"host": host, "shares": list(shares), "can_admin": context.get("can_admin", False)}


@register.simple_tag
def host_has_share(host) -> bool:
    # The guest page offers "Move disks to shared storage" only where the host sees a share.
    return _shares_of(host).exists()
