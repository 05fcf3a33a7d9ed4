import json

from django.core.management.base import BaseCommand

from hosts.models import VirtualMachine

FIELDS = ("host__name", "name", "uuid", "state", "state_reason", "vcpus", "memory_kib", "domain_type",
          "persistent", "autostart")
KEYS = ("host", "name", "uuid", "state", "reason", "vcpus", "memory_kib", "domain_type", "persistent", "autostart")
# Rows read from the database and written to the output at a time: memory stays bounded
# whatever the number of guests.
CHUNK = 2000


def printable(text: str) -> str:
    """Guest names come from hypervisors: keep control characters out of the terminal."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def guest_rows():
    """Every guest as a dict, host by host, read CHUNK rows at a time."""
    values = (VirtualMachine.objects.order_by("host__name", "name", "pk").values_list(*FIELDS)
              .iterator(chunk_size=CHUNK))
    for row in values:
        item = dict(zip(KEYS, row))
        item["uuid"] = str(item["uuid"])
        yield item


class Command(BaseCommand):
    help = "List the guests in the inventory."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print JSON (an array, one guest a line).")

    def handle(self, *args, **options):
        if options["json"]:
            self._write_json()
            return
        rows = [(r["host"], printable(r["name"]), r["state"], str(r["vcpus"]), f"{r['memory_kib'] // 1024} MiB",
                 r["uuid"]) for r in guest_rows()]
        if not rows:
            self.stdout.write("No guests in the inventory.")
            return
        header = ("HOST", "NAME", "STATE", "VCPUS", "MEMORY", "UUID")
        table = [header, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())

    def _write_json(self) -> None:
        # Streamed: one guest a line, written a chunk at a time, never the whole list in memory.
        out = self.stdout
        out.write("[", ending="")
        lines: list[str] = []
        first = True
        for row in guest_rows():
            lines.append(("\n" if first else ",\n") + json.dumps(row))
            first = False
            if len(lines) >= CHUNK:
                out.write("".join(lines), ending="")
                lines.clear()
        out.write("".join(lines) + ("\n]" if not first else "]"))
