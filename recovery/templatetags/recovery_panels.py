"""The host page's recovery card (hosts' page loads this library; hosts never imports us)."""

from django import template

from hosts.choices import HostStatusChoices

from ..models import HostRecovery, RecoveryItem

register = template.Library()


@register.inclusion_tag("recovery/partials/host_recovery.html", takes_context=True)
def host_recovery(context, host):
    stale = (RecoveryItem.objects.filter(recovery__host=host, stale_seen_at__isnull=False, stale_removed_at=None)
             .select_related("destination", "recovery"))
    return {
        "host": host, "can_admin": context.get("can_admin"),
        "dead": host.status == HostStatusChoices.UNREACHABLE and host.in_service,
        "recoveries": HostRecovery.objects.filter(host=host)[:5], "stale": stale,
    }
