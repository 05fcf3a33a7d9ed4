import collections
import itertools
import json

from django.core.management.base import BaseCommand

from core.choices import RoleChoices
from hosts.command_access import add_as_argument, command_actor
from hosts import disk_sizes
from hosts.models import VirtualDisk, VirtualMachine
from hosts.permissions import hosts_for_actor

FIELDS = ("host__name", "name", "uuid", "state", "state_reason", "vcpus", "memory_kib", "domain_type",
          "persistent", "autostart")
KEYS = ("host", "name", "uuid", "state", "reason", "vcpus", "memory_kib", "domain_type", "persistent", "autostart")
# Rows read from the database and written to the output at a time: memory stays bounded
# whatever the number of guests.
CHUNK = 2000


def printable(text: str) -> str:
    """Guest names come from hypervisors: keep control characters out of the terminal."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def guest_rows(actor=None, *, disks: bool = False):
    """Every guest (with ``actor``: on the hosts it may see) as a dict, host by host, read CHUNK rows at a time.

    ``disks``: each guest also has its disks (target, device, source, storage, capacity and
    allocation in bytes, None where no refresh sized them) and their totals
    (``disk_capacity_bytes``/``disk_allocation_bytes``: data disks, each file once; None when no
    disk of the guest was sized) — one query more per CHUNK guests.
    """
    guests = VirtualMachine.objects.all()
    if actor is not None and actor.user is not None:
        guests = guests.filter(host__in=hosts_for_actor(actor, RoleChoices.VIEWER))
    values = guests.order_by("host__name", "name", "pk").values_list("pk", *FIELDS).iterator(chunk_size=CHUNK)
    while batch := list(itertools.islice(values, CHUNK)):
        by_guest = _disks_of([row[0] for row in batch]) if disks else {}
        for pk, *row in batch:
            item = dict(zip(KEYS, row))
            item["uuid"] = str(item["uuid"])
            if disks:
                rows = by_guest.get(pk, [])
                totals = disk_sizes.guest_totals(rows)
                item["disks"] = [disk._asdict() for disk in rows]
                item["disk_capacity_bytes"] = totals.capacity_bytes if totals.known else None
                item["disk_allocation_bytes"] = totals.allocation_bytes if totals.known else None
            yield item


DISK_KEYS = ("target", "device", "source", "storage", "capacity_bytes", "allocation_bytes")
_Disk = collections.namedtuple("_Disk", DISK_KEYS)


def _disks_of(vm_ids: list[int]) -> dict[int, list[_Disk]]:
    found: dict[int, list[_Disk]] = {}
    rows = VirtualDisk.objects.filter(vm_id__in=vm_ids).order_by("vm_id", "target", "pk")
    for vm_id, *fields in rows.values_list("vm_id", *DISK_KEYS):
        found.setdefault(vm_id, []).append(_Disk(*fields))
    return found


class Command(BaseCommand):
    help = "List the guests in the inventory (with --as USER: those on the hosts that user may see)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true",
                            help="Print JSON (an array, one guest a line), with each guest's disks and their sizes.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        actor = command_actor(options)
        if options["json"]:
            self._write_json(actor)
            return
        rows = [(r["host"], printable(r["name"]), r["state"], str(r["vcpus"]), f"{r['memory_kib'] // 1024} MiB",
                 r["uuid"]) for r in guest_rows(actor)]
        if not rows:
            self.stdout.write("No guests in the inventory.")
            return
        header = ("HOST", "NAME", "STATE", "VCPUS", "MEMORY", "UUID")
        table = [header, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())

    def _write_json(self, actor) -> None:
        # Streamed: one guest a line, written a chunk at a time, never the whole list in memory.
        out = self.stdout
        out.write("[", ending="")
        lines: list[str] = []
        first = True
        for row in guest_rows(actor, disks=True):
            lines.append(("\n" if first else ",\n") + json.dumps(row))
            first = False
            if len(lines) >= CHUNK:
                out.write("".join(lines), ending="")
                lines.clear()
        out.write("".join(lines) + ("\n]" if not first else "]"))
