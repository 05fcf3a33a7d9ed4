from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from core.errors import ServiceRefused
from hosts.command_access import add_as_argument, command_actor
from hosts.lifecycle_services import host_decommission

from .host_update import find_host


class Command(BaseCommand):
    help = "Take a host out of service (refused while guests run there): it takes no guests and is not watched."

    def add_arguments(self, parser):
        parser.add_argument("host")
        add_as_argument(parser)

    def handle(self, *args, **options):
        try:
            host = find_host(options["host"])
            host = host_decommission(host=host, actor=command_actor(options, [host], RoleChoices.ADMIN))
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}") from None
        self.stdout.write(self.style.SUCCESS(f"Decommissioned {host.name}."))
