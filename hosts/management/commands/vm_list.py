import collections
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
    disk of the guest was sized). The disks are a second stream read in the guests' own order and
    merged as both advance: two queries in all, whatever the number of guests, and no list of
    guest ids sent back to the database.
    """
    guests = VirtualMachine.objects.all()
    visible = None
    if actor is not None and actor.user is not None:
        visible = hosts_for_actor(actor, RoleChoices.VIEWER)
        guests = guests.filter(host__in=visible)
    values = guests.order_by("host__name", "name", "pk").values_list("pk", *FIELDS).iterator(chunk_size=CHUNK)
    disk_stream = _disks_in_guest_order(visible) if disks else iter(())
    pending = next(disk_stream, None)
    for pk, *row in values:
        item = dict(zip(KEYS, row))
        item["uuid"] = str(item["uuid"])
        if disks:
            rows: list[_Disk] = []
            while pending is not None and pending[0] == pk:
                rows.append(pending[1])
                pending = next(disk_stream, None)
            totals = disk_sizes.guest_totals(rows)
            item["disks"] = [disk._asdict() for disk in rows]
            item["disk_capacity_bytes"] = totals.capacity_bytes if totals.known else None
            item["disk_allocation_bytes"] = totals.allocation_bytes if totals.known else None
        yield item


DISK_KEYS = ("target", "device", "source", "storage", "capacity_bytes", "allocation_bytes")
_Disk = collections.namedtuple("_Disk", DISK_KEYS)


def _disks_in_guest_order(visible_hosts=None):
    """(guest row id, disk) for every disk, in the order ``guest_rows`` reads the guests
    (host name, guest name, guest row id), then by target."""
    rows = VirtualDisk.objects.all()
    if visible_hosts is not None:
        rows = rows.filter(vm__host__in=visible_hosts)
    rows = rows.order_by("vm__host__name", "vm__name", "vm_id", "target", "pk")
    for vm_id, *fields in rows.values_list("vm_id", *DISK_KEYS).iterator(chunk_size=CHUNK):
        yield vm_id, _Disk(*fields)


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
        encode = json.JSONEncoder(check_circular=False).encode  # rows are plain, freshly built dicts
        out.write("[", ending="")
        lines: list[str] = []
        first = True
        for row in guest_rows(actor, disks=True):
            lines.append(("\n" if first else ",\n") + encode(row))
            first = False
            if len(lines) >= CHUNK:
                out.write("".join(lines), ending="")
                lines.clear()
        out.write("".join(lines) + ("\n]" if not first else "]"))
