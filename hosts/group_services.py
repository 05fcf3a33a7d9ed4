"""Host groups and the roles granted on them (audited, one transaction each)."""

from __future__ import annotations

from django.db import transaction

from core import broadcast
from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices, RoleChoices
from core.errors import ServiceRefused

from .models import Host, HostGroup, HostGroupGrant
from .validators import HOST_NAME_RE


@transaction.atomic
def host_group_set(*, name: str, hosts: list[Host] | None, actor: Actor) -> HostGroup:
    """Create the group if missing; with ``hosts``, make them its hosts."""
    if not HOST_NAME_RE.match(name or ""):
        raise ServiceRefused(f"{name[:40]!r} is not a group name.", hint="Use letters, digits, '.', '_' or '-'.")
    group, created = HostGroup.objects.get_or_create(name=name)
    before = sorted(group.hosts.values_list("name", flat=True))
    if hosts is not None:
        group.hosts.set(hosts)
    after = sorted(group.hosts.values_list("name", flat=True))
    if before != after:
        # Its members' open pages check again what they may see.
        for user_id in group.grants.values_list("user_id", flat=True):
            broadcast.user_access_changed(user_id)
    if created or before != after:
        audit_record(actor=actor, action="host_group.create" if created else "host_group.hosts",
                     result=AuditResultChoices.OK, target=group, parameters={"old": before, "new": after},
                     message=f"Host group {name}: {', '.join(after) or 'no hosts'}.")
    return group


@transaction.atomic
def host_group_grant(*, group: HostGroup, user, role: RoleChoices | None, actor: Actor) -> None:
    """Give ``user`` ``role`` on the group's hosts (None: take it away)."""
    old = HostGroupGrant.objects.filter(group=group, user=user).values_list("role", flat=True).first()
    if role is None:
        HostGroupGrant.objects.filter(group=group, user=user).delete()
    else:
        HostGroupGrant.objects.update_or_create(group=group, user=user, defaults={"role": RoleChoices(role).value})
    broadcast.user_access_changed(user.pk)  # their open pages check again what they may see
    audit_record(actor=actor, action="host_group.grant", result=AuditResultChoices.OK, target=group,
                 parameters={"user": user.get_username(), "old": old or "", "new": str(role or "")},
                 message=f"{user.get_username()} is {role or 'no longer granted'} on {group.name}.")
