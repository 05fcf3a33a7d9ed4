from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from core.choices import RoleChoices
from core.errors import ServiceRefused
from hosts.group_services import host_group_grant, host_group_set

from .host_update import find_host


class Command(BaseCommand):
    help = ("Create or change a host group: its hosts (--hosts a,b replaces them) and the roles of "
            "users on it (--grant USER:ROLE, ROLE one of Viewer, Operator, Admin, or none to revoke).")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--hosts", help="Comma-separated host names: the group's hosts from now on.")
        parser.add_argument("--grant", action="append", default=[], metavar="USER:ROLE")

    def handle(self, *args, **options):
        actor = Actor.cli()
        hosts = None
        if options["hosts"] is not None:
            hosts = [find_host(name) for name in options["hosts"].split(",") if name.strip()]
        try:
            group = host_group_set(name=options["name"], hosts=hosts, actor=actor)
            for grant in options["grant"]:
                username, _, role = grant.partition(":")
                user = get_user_model().objects.filter(username=username).first()
                if user is None:
                    raise CommandError(f"No user named {username!r}.")
                if role not in RoleChoices.values and role != "none":
                    raise CommandError(f"{role!r} is not a role: use Viewer, Operator, Admin or none.")
                host_group_grant(group=group, user=user, role=None if role == "none" else RoleChoices(role), actor=actor)
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}") from None
        names = ", ".join(group.hosts.values_list("name", flat=True)) or "no hosts"
        self.stdout.write(self.style.SUCCESS(f"Host group {group.name}: {names}."))
