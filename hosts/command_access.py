"""Who a management command acts as: the operating-system user with full rights (audited as
``cli:<os user>``), or with ``--as USER`` a portal user, checked on every host the command
touches by hosts.permissions, as the pages are. One option and one check for every command
that changes something."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from core.actors import Actor
from core.audit import audit_record_now
from core.choices import AuditResultChoices, RoleChoices

from .models import Host
from .permissions import user_may


def add_as_argument(parser) -> None:
    parser.add_argument("--as", dest="as_user", metavar="USER",
                        help="Act within this portal user's rights (default: the OS user, with full rights).")


def command_actor(options, hosts: Iterable[Host | None] = (), role: RoleChoices = RoleChoices.OPERATOR) -> Actor:
    """The OS user (full rights), or with --as a portal user who must hold ``role`` on each of
    ``hosts``, else a CommandError and a ``command.refused`` audit entry. Services check the
    hosts they are given too, so work a command starts with --as stays within those rights."""
    cli = Actor.cli()
    username = options.get("as_user")
    if not username:
        return cli
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"No active user named {username!r}.")
    for host in hosts:
        if host is not None and not user_may(user, role, host):
            audit_record_now(actor=Actor(user=user, name=cli.name), action="command.refused",
                             result=AuditResultChoices.REFUSED, target=host,
                             parameters={"os_user": cli.name, "role_needed": str(role)},
                             message=f"{username} may not do this on {host.name} (needs {role.label}).")
            raise CommandError(f"{username} does not hold the {role.label} role on {host.name}.")
    return Actor(user=user, request_id=cli.name)  # who ran the command, kept with each event
