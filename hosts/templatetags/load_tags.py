"""Small load pieces any list can drop in: ``{% load load_tags %}{% host_sparkline host %}`` and the host page's
``{% host_capacity_card host %}``. The sparklines of a page are fetched in one request by load_sparkline.js
(include ``hosts/partials/sparkline_assets.html`` in the page's scripts block)."""

from django import template

from hosts import capacity

register = template.Library()


@register.inclusion_tag("hosts/partials/host_sparkline.html")
def host_sparkline(host):
    return {"spark_host": host}


@register.inclusion_tag("hosts/partials/host_capacity_card.html", takes_context=True)
def host_capacity_card(context, host):
    return {"host": host, "budget": capacity.host_budget(host), "can_admin": context.get("can_admin", False)}
