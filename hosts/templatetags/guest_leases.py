"""{% guest_lease vm %}: the badge saying which operation holds a guest, with a link to it."""

from django import template

from hosts.leases import lease_holder

register = template.Library()


@register.inclusion_tag("hosts/partials/guest_lease.html")
def guest_lease(vm) -> dict:
    """The guest's lease holder (one query: for a guest's page, not for table rows)."""
    return {"lease": lease_holder(vm.uuid)}
