"""The NFS shares a host takes part in, for the host page ({% host_shares host %})."""

from django import template
from django.db.models import Q

from storage.models import Share

register = template.Library()


@register.inclusion_tag("storage/partials/host_shares.html", takes_context=True)
def host_shares(context, host):
    shares = Share.objects.filter(Q(server=host) | Q(clients=host)).select_related("server").distinct()
    return {"host": host, "shares": list(shares), "can_admin": context.get("can_admin", False)}
