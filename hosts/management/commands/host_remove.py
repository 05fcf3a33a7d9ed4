from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from core.errors import ServiceRefused
from hosts.command_access import add_as_argument, command_actor
from hosts.lifecycle_services import host_remove

from .host_update import find_host


class Command(BaseCommand):
    help = ("Remove a decommissioned host with no guests; its records keep pointing at its tombstone "
            "(name, id, when and by whom).")

    def add_arguments(self, parser):
        parser.add_argument("host")
        add_as_argument(parser)

    def handle(self, *args, **options):
        try:
            host = find_host(options["host"])
            host = host_remove(host=host, actor=command_actor(options, [host], RoleChoices.ADMIN))
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}") from None
        self.stdout.write(self.style.SUCCESS(f"Removed {host.name} (host #{host.pk})."))
