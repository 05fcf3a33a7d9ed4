"""Who may do what on which host: the one place that decides it.

A user's role on a host is the highest of their global role (the Django groups Viewer <
Operator < Admin, core.roles) and the roles granted to them on the host groups the host is in
(``HostGroupGrant``). ``role_rank_on`` is the pure decision; ``user_may`` asks it for one
host, ``hosts_for`` narrows a queryset to the hosts a user may act on with a role, and
``HostAccessMixin`` gives views one call, ``require_host(host, role)``, that answers 403
(audited for POSTs by core.middleware.AuditRefusedMiddleware).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied

from core.choices import ROLE_ORDER, RoleChoices
from core.roles import global_role_rank

from .models import Host, HostGroupGrant, VirtualMachine


def rank_of(role: RoleChoices | str) -> int:
    return ROLE_ORDER.index(RoleChoices(role))


def role_rank_on(*, global_rank: int, grants: dict[int, int], host_groups: Iterable[int]) -> int:
    """Pure: the user's rank on a host in ``host_groups`` given their global rank and their
    grants {group id: rank}. -1 means no access at all."""
    return max([global_rank, *(grants.get(group, -1) for group in host_groups)])


def _grants(user) -> dict[int, int]:
    if user is None or not user.is_authenticated or not user.is_active:
        return {}
    cached = getattr(user, "_vmportal_host_grants", None)
    if cached is None:
        cached = {group: rank_of(role)
                  for group, role in HostGroupGrant.objects.filter(user=user).values_list("group_id", "role")}
        user._vmportal_host_grants = cached
    return cached


def scoped_role_rank(user) -> int:
    """The highest role granted to the user on any host group (for pages that list hosts)."""
    return max(_grants(user).values(), default=-1)


def user_rank_on(user, host: Host) -> int:
    return role_rank_on(global_rank=global_role_rank(user), grants=_grants(user),
                        host_groups=host.host_groups.values_list("pk", flat=True))


def user_may(user, role: RoleChoices, host: Host) -> bool:
    return user_rank_on(user, host) >= rank_of(role)


def hosts_for(user, role: RoleChoices, hosts=None):
    """``hosts`` (default: in service) narrowed to those the user holds ``role`` on."""
    hosts = Host.objects.all() if hosts is None else hosts
    if global_role_rank(user) >= rank_of(role):
        return hosts
    groups = [group for group, rank in _grants(user).items() if rank >= rank_of(role)]
    return hosts.filter(host_groups__in=groups).distinct()


class HostAccessMixin:
    """For views on one host (or its guests), after the page's role mixin: the host of the URL
    (``pk`` or ``host_pk``) must be one the user holds ``host_role`` on, else 403. Also
    ``self.require_host(host, role)`` for a check of its own, and ``can_operate`` /
    ``can_admin`` in the context as they apply to this host."""

    host_role: RoleChoices = RoleChoices.VIEWER
    # The role a POST needs on the host when it is more than host_role (pages that show to viewers).
    host_post_role: RoleChoices | None = None

    def url_host(self, kwargs) -> Host | None:
        if "vm_pk" in kwargs:
            vm = VirtualMachine.objects.select_related("host").filter(pk=kwargs["vm_pk"]).first()
            return vm.host if vm is not None else None
        host_id = kwargs.get("host_pk", kwargs.get("host_id", kwargs.get("pk")))
        return Host.all_objects.filter(pk=host_id).first() if host_id is not None else None

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            host = self.url_host(kwargs)
            if host is not None:
                role = self.host_post_role if request.method == "POST" and self.host_post_role else self.host_role
                self.require_host(host, role)
                self.access_host = host
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        host = getattr(self, "access_host", None)
        if host is not None:
            rank = user_rank_on(self.request.user, host)
            context["can_operate"] = rank >= rank_of(RoleChoices.OPERATOR)
            context["can_admin"] = rank >= rank_of(RoleChoices.ADMIN)
        return context

    def require_host(self, host: Host, role: RoleChoices) -> Host:
        if not user_may(self.request.user, role, host):
            raise PermissionDenied(f"You need the {RoleChoices(role).label} role on {host.name}.")
        return host
