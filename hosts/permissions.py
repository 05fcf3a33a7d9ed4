"""Who may do what on which host: the one place that decides it.

A user's role on a host is the highest of their global role (the Django groups Viewer <
Operator < Admin, core.roles) and the roles granted to them on the host groups the host is in
(``HostGroupGrant``). ``role_rank_on`` is the pure decision; ``user_may`` asks it for one
host, ``hosts_for`` narrows a queryset to the hosts a user may act on with a role, and
``HostAccessMixin`` gives views one call, ``require_host(host, role)``, that answers 403
(audited for POSTs by core.middleware.AuditRefusedMiddleware).

Records of other apps (a migration, an evacuation, a share, a window…) name their hosts with a
class attribute ``host_paths`` (field paths to hosts: ``("source", "destination")``,
``("hosts",)``). A user may see or act on a record when they hold the role on every host it
names: ``records_for`` narrows a list, ``record_hosts`` gives one record's hosts for
``HostAccessMixin`` (``access_model``), and ``targets_for`` narrows jobs and audit events by
their target. ``hosts_for_actor`` / ``actor_refused_on`` are the same answers for services
(an Actor without a user — a command without --as, the system — holds every right).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, Q
from django.db.models.functions import Cast

from core.choices import ROLE_ORDER, RoleChoices
from core.ids import parse_id
from core.roles import global_role_rank, user_role_rank

from .models import Host, HostGroup, HostGroupGrant, VirtualMachine


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


def load_grants(users) -> None:
    """The grants of many users (fresh rows) in one query, kept on each as ``_grants`` keeps them
    (core.roles.load_role_facts calls this when it checks many open sockets together)."""
    users = [user for user in users if user is not None and user.is_authenticated and user.is_active]
    grants: dict[int, dict[int, int]] = {user.pk: {} for user in users}
    if not grants:
        return
    rows = HostGroupGrant.objects.filter(user_id__in=list(grants)).values_list("user_id", "group_id", "role")
    for user_id, group, role in rows:
        grants[user_id][group] = rank_of(role)
    for user in users:
        user._vmportal_host_grants = grants[user.pk]


def visible_host_ids(users, role: RoleChoices) -> dict[int, frozenset[int]]:
    """``hosts_for(user, role)`` as ids, for many users in at most two queries: every host for
    those with the role globally, the hosts of their granted groups for the others. Users with
    the same answer share one set (an inventory socket keeps it to filter its events)."""
    need = rank_of(role)
    answers: dict[int, frozenset[int]] = {}
    everywhere = [user for user in users if global_role_rank(user) >= need]
    granted = {user.pk: frozenset(group for group, rank in _grants(user).items() if rank >= need)
               for user in users if global_role_rank(user) < need}
    if everywhere:
        every_host = frozenset(Host.objects.values_list("pk", flat=True))
        answers.update((user.pk, every_host) for user in everywhere)
    groups = sorted(set().union(*granted.values())) if granted else []
    members: dict[int, set[int]] = {}
    if groups:
        through = HostGroup.hosts.through
        rows = through.objects.filter(hostgroup_id__in=groups, host__in=Host.objects.all())
        for group, host in rows.values_list("hostgroup_id", "host_id"):
            members.setdefault(group, set()).add(host)
    shared: dict[frozenset[int], frozenset[int]] = {}
    for user_id, user_groups in granted.items():
        if user_groups not in shared:
            shared[user_groups] = frozenset().union(*(members.get(group, ()) for group in user_groups))
        answers[user_id] = shared[user_groups]
    return answers


def scoped_role_rank(user) -> int:
    """The highest role granted to the user on any host group (for pages that list hosts)."""
    return max(_grants(user).values(), default=-1)


def user_rank_on(user, host: Host) -> int:
    global_rank = global_role_rank(user)
    if global_rank >= len(ROLE_ORDER) - 1:  # the highest role everywhere: no grant adds to it
        return global_rank
    return role_rank_on(global_rank=global_rank, grants=_grants(user),
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


def hosts_to_plan_on(user):
    """The hosts a plan shown to the user may use (an evacuation's destinations, a balance's
    hosts): those they may operate on; for a viewer, who cannot confirm, those they may see."""
    role = RoleChoices.OPERATOR if user_role_rank(user) >= rank_of(RoleChoices.OPERATOR) else RoleChoices.VIEWER
    return hosts_for(user, role)


def hosts_for_actor(actor, role: RoleChoices, hosts=None):
    """``hosts_for`` for an Actor: a command run without --as, and the system, hold every right."""
    if actor.user is None:
        return Host.objects.all() if hosts is None else hosts
    return hosts_for(actor.user, role, hosts)


def actor_refused_on(actor, role: RoleChoices, hosts: Iterable[Host | None]) -> list[str]:
    """The names of ``hosts`` the actor does not hold ``role`` on (services check this when
    they start work, so a job runs with the rights its requester had)."""
    if actor.user is None:
        return []
    return sorted({host.name for host in hosts if host is not None and not user_may(actor.user, role, host)})


def forbidden_hosts(user, role: RoleChoices):
    """Every host row (retired ones too) the user does not hold ``role`` on."""
    if global_role_rank(user) >= rank_of(role):
        return Host.all_objects.none()
    return Host.all_objects.exclude(pk__in=hosts_for(user, role, Host.all_objects.all()).values("pk"))


def host_paths_of(model) -> tuple[str, ...] | None:
    return getattr(model, "host_paths", None)


def records_for(user, role: RoleChoices, records):
    """``records`` (a queryset of a model with ``host_paths``) narrowed to those naming only hosts
    the user holds ``role`` on (a path that is empty, such as a plan's destination not chosen yet,
    names no host)."""
    paths = host_paths_of(records.model)
    if paths is None:
        raise TypeError(f"{records.model.__name__} does not say which hosts it names (host_paths)")
    if global_role_rank(user) >= rank_of(role):
        return records
    forbidden = forbidden_hosts(user, role)
    for path in paths:
        records = records.exclude(**{f"{path}__in": forbidden})
    return records


def record_hosts(record) -> list[Host]:
    """The hosts a record names, through its model's ``host_paths``."""
    rows = type(record)._default_manager.filter(pk=record.pk)
    ids = {host_id for path in host_paths_of(type(record)) or () for host_id in rows.values_list(path, flat=True)}
    ids.discard(None)
    return list(Host.all_objects.filter(pk__in=ids).order_by("name"))


def targets_for(user, rows):
    """Jobs or audit events (``rows``) narrowed to those whose target record (or host) the user
    may see; a target naming no host (a person, a group) is for users with a global role."""
    if global_role_rank(user) >= rank_of(RoleChoices.VIEWER):
        return rows
    visible = Q(pk__in=[])
    for model in apps.get_models():
        if host_paths_of(model) is None:
            continue
        ids = records_for(user, RoleChoices.VIEWER, model._default_manager.all())
        visible |= Q(target_type=model._meta.model_name,
                     target_id__in=ids.annotate(_id_text=Cast("pk", CharField())).values("_id_text"))
    return rows.filter(visible)


class HostAccessMixin:
    """For views on one host (or its guests), after the page's role mixin: the host of the URL
    (``pk``, ``host_pk``, ``host_id`` or the guest's ``vm_pk``) must be one the user holds
    ``host_role`` on, else 403. A view on a record sets ``access_model``: then ``pk`` names that
    record and every host it names (``record_hosts``) must be one the user holds the role on,
    and so must the URL's ``host_pk`` if it has one. Also ``self.require_host(host, role)`` for a
    check of its own (hosts from a form), and ``can_operate`` / ``can_admin`` in the context as
    they apply to these hosts."""

    host_role: RoleChoices = RoleChoices.VIEWER
    # The role a POST needs on the host when it is more than host_role (pages that show to viewers).
    host_post_role: RoleChoices | None = None
    access_model = None

    def url_host(self, kwargs) -> Host | None:
        if "vm_pk" in kwargs:
            vm = VirtualMachine.objects.select_related("host").filter(pk=kwargs["vm_pk"]).first()
            return vm.host if vm is not None else None
        keys = ("host_pk", "host_id") if self.access_model is not None else ("host_pk", "host_id", "pk")
        host_id = next((kwargs[key] for key in keys if key in kwargs), None)
        return Host.all_objects.filter(pk=host_id).first() if host_id is not None else None

    def access_hosts(self, kwargs) -> list[Host]:
        """The hosts this request touches: the URL's host, and the record's hosts."""
        hosts = []
        if self.access_model is not None and "pk" in kwargs:
            record = self.access_model._default_manager.filter(pk=kwargs["pk"]).first()
            hosts = record_hosts(record) if record is not None else []
        host = self.url_host(kwargs)
        if host is not None and host not in hosts:
            hosts.insert(0, host)
        return hosts

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            hosts = self.access_hosts(kwargs)
            role = self.host_post_role if request.method == "POST" and self.host_post_role else self.host_role
            # Each host's rank read once: the check here and the page's can_operate / can_admin.
            ranks = [user_rank_on(request.user, host) for host in hosts]
            for host, rank in zip(hosts, ranks):
                if rank < rank_of(role):
                    raise PermissionDenied(f"You need the {RoleChoices(role).label} role on {host.name}.")
            self.access_hosts_checked = hosts
            self.access_ranks = ranks
            if hosts:
                self.access_host = hosts[0]
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        ranks = getattr(self, "access_ranks", None)
        if ranks:
            rank = min(ranks)
            context["can_operate"] = rank >= rank_of(RoleChoices.OPERATOR)
            context["can_admin"] = rank >= rank_of(RoleChoices.ADMIN)
        return context

    def require_host(self, host: Host, role: RoleChoices) -> Host:
        if not user_may(self.request.user, role, host):
            raise PermissionDenied(f"You need the {RoleChoices(role).label} role on {host.name}.")
        return host

    def require_hosts(self, hosts: Iterable[Host], role: RoleChoices) -> None:
        for host in hosts:
            self.require_host(host, role)

    def require_posted_hosts(self, role: RoleChoices, *fields: str) -> None:
        """The host ids a form posts in ``fields`` must be hosts the user holds ``role`` on: a
        forged id is a 403 (audited), not a form error. Malformed ids are left to the form."""
        ids = {parse_id(value) for name in fields for value in self.request.POST.getlist(name)[:1000]}
        ids.discard(None)
        self.require_hosts(Host.all_objects.filter(pk__in=ids), role)
