"""The migrations list's history charts: ``{% load history_tags %}{% migration_history_charts %}``.

Its scripts: include ``migrations_app/partials/history_assets.html`` in the page's scripts block.
"""

from django import template

from core.choices import RoleChoices
from hosts.models import Host
from hosts.permissions import hosts_for

register = template.Library()


@register.inclusion_tag("migrations_app/partials/history_charts.html", takes_context=True)
def migration_history_charts(context):
    user = context["request"].user
    return {"history_hosts": list(hosts_for(user, RoleChoices.VIEWER, Host.all_objects.not_removed())
                                  .order_by("name").values_list("pk", "name"))}
