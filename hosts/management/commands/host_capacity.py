"""`manage.py host_capacity HOST [--memory-mib N|default] [--vcpu-ratio R|default]`: show or set a host's guest capacity."""

from django.core.management.base import BaseCommand, CommandError

from core.choices import RoleChoices
from core.errors import ServiceRefused
from hosts import capacity
from hosts.capacity_services import host_capacity_set
from hosts.management.commands.vm_list import printable

from .host_update import add_as_argument, command_actor, find_host


def _value(text: str | None, kind, flag: str):
    """(given, value): ``default`` puts the field back to the portal's default (None)."""
    if text is None:
        return False, None
    if text.strip().lower() == "default":
        return True, None
    try:
        return True, kind(text)
    except ValueError:
        raise CommandError(f"{flag} wants a number or 'default', not {printable(text)[:40]!r}.") from None


class Command(BaseCommand):
    help = "Show a host's guest capacity (memory for guests, vCPU overcommit ratio), or set it (Admin)."

    def add_arguments(self, parser):
        parser.add_argument("host")
        parser.add_argument("--memory-mib", help="Memory for guests in MiB, or 'default' (memory minus the reserve).")
        parser.add_argument("--vcpu-ratio", help="vCPUs per host CPU, or 'default'.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        host = find_host(options["host"])
        memory_given, memory = _value(options["memory_mib"], int, "--memory-mib")
        ratio_given, ratio = _value(options["vcpu_ratio"], float, "--vcpu-ratio")
        if memory_given or ratio_given:
            row = getattr(host, "budget", None)
            if not memory_given:
                memory = row.guest_memory_mib if row else None
            if not ratio_given:
                ratio = row.vcpu_ratio if row else None
            try:
                host_capacity_set(host=host, memory_mib=memory, vcpu_ratio=ratio,
                                  actor=command_actor(options, host, RoleChoices.ADMIN))
            except ServiceRefused as exc:
                raise CommandError(f"{exc.message} {exc.hint}") from None
            host = find_host(options["host"])
        b = capacity.host_budget(host)
        self.stdout.write(
            f"{host.name}: {b.memory_kib // 1024} MiB for guests{' (default)' if b.memory_default else ''}; "
            f"{b.vcpus} vCPUs ({b.vcpu_ratio:g} per CPU{', default' if b.ratio_default else ''}).")
