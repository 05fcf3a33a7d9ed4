import json

from django.core.management.base import BaseCommand

from hosts.models import VirtualMachine


def printable(text: str) -> str:
    """Guest names come from hypervisors: keep control characters out of the terminal."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class Command(BaseCommand):
    help = "List the guests in the inventory."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args, **options):
        vms = VirtualMachine.objects.select_related("host").order_by("host__name", "name")
        rows = [
            {
                "host": vm.host.name,
                "name": vm.name,
                "uuid": str(vm.uuid),
                "state": vm.state,
                "reason": vm.state_reason,
                "vcpus": vm.vcpus,
                "memory_kib": vm.memory_kib,
                "domain_type": vm.domain_type,
                "persistent": vm.persistent,
                "autostart": vm.autostart,
            }
            for vm in vms
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No guests in the inventory.")
            return
        header = ("HOST", "NAME", "STATE", "VCPUS", "MEMORY", "UUID")
        table = [header] + [
            (r["host"], printable(r["name"]), r["state"], str(r["vcpus"]), f"{r['memory_kib'] // 1024} MiB", r["uuid"])
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
