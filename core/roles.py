"""Role checks for views, POSTs and websocket connects.

Roles are the Django groups Viewer < Operator < Admin; a superuser is Admin. These are global
roles. Roles granted on host groups (hosts/permissions.py, registered here from the hosts
app's ready()) count too for the page-level checks below; which host a user may act on is
decided object by object by hosts.permissions.
"""

from __future__ import annotations

from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import PermissionDenied

from .choices import ROLE_ORDER, RoleChoices


_scoped_rank_sources: list = []


def register_scoped_role_rank(func) -> None:
    """``func(user) -> rank``: the highest role a higher app granted the user on some objects."""
    if func not in _scoped_rank_sources:
        _scoped_rank_sources.append(func)


_target_scopes: list = []


def register_target_scope(func) -> None:
    """``func(user, rows) -> rows``: a higher app narrows jobs or audit events (rows with
    ``target_type`` / ``target_id``) to those whose target the user may see."""
    if func not in _target_scopes:
        _target_scopes.append(func)


_role_fact_loaders: list = []


def register_role_facts_loader(func) -> None:
    """``func(users)``: a higher app reads, in a few queries for all of ``users``, what its
    scoped rank and object checks read for each user on first use, and keeps it on each user
    the way that first use would (so checking many sockets' users does not read per user)."""
    if func not in _role_fact_loaders:
        _role_fact_loaders.append(func)


def load_role_facts(users: list) -> None:
    """Read the global roles of ``users`` (fresh user rows) in one query, and every registered
    app's facts, so ``user_role_rank`` and the object checks read nothing more for them."""
    users = [user for user in users if user is not None and user.pk is not None]
    if not users:
        return
    User = type(users[0])
    through = User.groups.through
    user_field, group_field = User.groups.field.m2m_field_name(), User.groups.field.m2m_reverse_field_name()
    names: dict[int, set[str]] = {user.pk: set() for user in users}
    rows = through.objects.filter(**{f"{user_field}_id__in": list(names)})
    for user_id, name in rows.values_list(f"{user_field}_id", f"{group_field}__name"):
        names[user_id].add(name)
    for user in users:
        # As global_role_rank keeps it on first use.
        user._vmportal_role_rank = max((i for i, role in enumerate(ROLE_ORDER) if role.value in names[user.pk]),
                                       default=-1)
    for loader in _role_fact_loaders:
        loader(users)


def targets_visible(user, rows):
    """The rows (jobs, audit events) of ``rows`` the user may see (every registered scope applies)."""
    for scope in _target_scopes:
        rows = scope(user, rows)
    return rows


def user_role_rank(user) -> int:
    """Index in ROLE_ORDER of the highest role the user holds globally or on some objects, or -1."""
    rank = global_role_rank(user)
    if rank < len(ROLE_ORDER) - 1 and user is not None and user.is_authenticated and user.is_active:
        rank = max([rank, *(source(user) for source in _scoped_rank_sources)])
    return rank


def global_role_rank(user) -> int:
    """Index in ROLE_ORDER of the highest global role the user holds, or -1 for none."""
    if user is None or not user.is_authenticated or not user.is_active:
        return -1
    if user.is_superuser:
        return len(ROLE_ORDER) - 1
    cached = getattr(user, "_vmportal_role_rank", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = max((i for i, role in enumerate(ROLE_ORDER) if role.value in names), default=-1)
        user._vmportal_role_rank = cached
    return cached


def user_has_role(user, role: RoleChoices) -> bool:
    return user_role_rank(user) >= ROLE_ORDER.index(role)


class RoleRequiredMixin(AccessMixin):
    """Anonymous users go to the login page; logged-in users without the role get 403.

    Applies to every method of the view (GET and POST alike).
    """

    required_role: RoleChoices = RoleChoices.VIEWER

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not user_has_role(request.user, self.required_role):
            raise PermissionDenied(f"This page needs the {self.required_role.label} role.")
        return super().dispatch(request, *args, **kwargs)


class ViewerRequiredMixin(RoleRequiredMixin):
    required_role = RoleChoices.VIEWER


class OperatorRequiredMixin(RoleRequiredMixin):
    required_role = RoleChoices.OPERATOR


class AdminRequiredMixin(RoleRequiredMixin):
    required_role = RoleChoices.ADMIN
