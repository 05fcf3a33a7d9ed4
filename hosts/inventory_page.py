"""What the inventory page shows, read in the same few queries whatever the fleet's size.

One page of hosts (sorted by name, status, memory in use or guests) with a summary of each one's guests (counts by state, vCPUs and memory of
the guests that run, from one aggregate query), and one page of guests below it. The filters
come from the query string (hosts/filtersets.py). Guest rows are plain dicts with their links
already made, so the row loop renders no ``{% url %}`` or ``{% include %}`` per row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.db.models import Count, QuerySet, Sum
from django.urls import reverse

from . import disk_sizes
from .choices import VM_ACTIVE_STATES, VMStateChoices
from .duplicates import HostIdentity, find_duplicate_identities
from .filtersets import (GUESTS_PER_PAGE, HOSTS_PER_PAGE, PAGE_SIZES, GuestFilterSet, HostFilterSet,
                         form_errors)
from .models import VirtualDisk, VirtualMachine

# Page parameters: not filters, so links that change the filter or the sort drop them.
PAGE_PARAMS = ("page", "hpage")
# The longest value of any parameter echoed back into links (a filter longer than this is invalid anyway).
MAX_PARAM_LENGTH = 200
STATE_LABELS = dict(VMStateChoices.choices)
# The order a host's guest counts read in: what runs first, what is stopped last.
STATE_ORDER = {state: i for i, state in enumerate(
    ["running", "blocked", "paused", "pmsuspended", "shutdown", "shutoff", "crashed", "nostate"])}
SORT_KEYS = ("name", "state", "host", "vcpus", "memory")  # the guest table's ``sort``
HOST_SORT_KEYS = ("name", "status", "memory", "guests")  # the host table's ``hsort``
# Stand-ins url_maker replaces: an id and a UUID no row has.
SENTINEL_ID = 987654321987
SENTINEL_UUID = "00000000-0000-4000-8000-00000000f00d"


def url_maker(name: str, *sentinels) -> Callable[..., str]:
    """A function building ``name``'s URL from its arguments by text substitution: one
    ``reverse`` for a whole table instead of one per row."""
    pattern = reverse(name, args=sentinels)
    for index, sentinel in enumerate(sentinels):
        pattern = pattern.replace(str(sentinel), f"{{{index}}}")
    return pattern.format


@dataclass
class HostSummary:
    guests: int = 0
    by_state: list[tuple[str, str, int]] = field(default_factory=list)  # (state, label, count)
    running_vcpus: int = 0
    running_memory_kib: int = 0


def host_summaries(host_ids: list[int]) -> dict[int, HostSummary]:
    """Each host's guests by state, and the vCPUs and memory of those that run (one query)."""
    summaries: dict[int, HostSummary] = defaultdict(HostSummary)
    rows = (VirtualMachine.objects.filter(host_id__in=host_ids).order_by().values("host_id", "state")
            .annotate(n=Count("pk"), vcpus=Sum("vcpus"), memory=Sum("memory_kib")))
    for row in sorted(rows, key=lambda r: (r["host_id"], STATE_ORDER.get(r["state"], len(STATE_ORDER)))):
        summary = summaries[row["host_id"]]
        summary.guests += row["n"]
        summary.by_state.append((row["state"], STATE_LABELS.get(row["state"], row["state"]), row["n"]))
        if row["state"] in VM_ACTIVE_STATES:
            summary.running_vcpus += row["vcpus"] or 0
            summary.running_memory_kib += row["memory"] or 0
    return summaries


def duplicate_flags(hosts: QuerySet) -> dict:
    """Hosts sharing a hostname or host UUID among ``hosts`` (four columns per host, one query)."""
    identities = [HostIdentity(host_id=pk, name=name, hostname=hostname or "", host_uuid=host_uuid or "")
                  for pk, name, hostname, host_uuid
                  in hosts.order_by().values_list("pk", "name", "facts__hostname", "facts__host_uuid")]
    return find_duplicate_identities(identities)


GUEST_FIELDS = ("pk", "uuid", "name", "state", "state_reason", "persistent", "vcpus", "memory_kib",
                "domain_type", "arch", "host_id", "host__name")


_DISK_TOTAL_FIELDS = ("vm_id", "target", "device", "source", "capacity_bytes", "allocation_bytes")


def disk_totals(vm_ids: list[int]) -> dict[int, disk_sizes.GuestTotals]:
    """Each guest's data disks summed (``disk_sizes.guest_totals``), for a page of guests in one query."""
    by_vm: dict[int, list] = defaultdict(list)
    rows = (VirtualDisk.objects.filter(vm_id__in=vm_ids, device__in=disk_sizes.IMAGE_DEVICES).order_by()
            .values_list(*_DISK_TOTAL_FIELDS))
    for vm_id, *fields in rows:
        by_vm[vm_id].append(disk_sizes.DiskRow(**dict(zip(_DISK_TOTAL_FIELDS[1:], fields, strict=True))))
    return {vm_id: disk_sizes.guest_totals(disks) for vm_id, disks in by_vm.items()}


def guest_rows(values, totals: dict[int, disk_sizes.GuestTotals] | None = None) -> list[dict]:
    """Rows of the guest table, each with its links, state label and disk totals made here."""
    vm_url = url_maker("hosts:vm_detail", SENTINEL_ID, SENTINEL_UUID)
    host_url = url_maker("hosts:host_detail", SENTINEL_ID)
    totals = totals or {}
    return [{**row, "state_label": STATE_LABELS.get(row["state"], row["state"]),
             "url": vm_url(row["host_id"], row["uuid"]), "host_url": host_url(row["host_id"]),
             "disks": totals.get(row["pk"])}
            for row in values]


def _page_size(value: str | None) -> int:
    return int(value) if value in {str(size) for size in PAGE_SIZES} else GUESTS_PER_PAGE


def _query(params: dict[str, str], **changes) -> str:
    merged = {**params, **changes}
    return urlencode({key: value for key, value in merged.items() if value})


def sort_queries(params: dict[str, str], param: str = "sort", keys: tuple[str, ...] = SORT_KEYS,
                 page: str = "page") -> dict[str, str]:
    """Per column, the query string that sorts by it (descending when it is the sort already),
    back on the table's first page."""
    current = params.get(param, "")
    return {key: _query(params, **{param: f"-{key}" if current == key else key, page: ""}) for key in keys}


def sort_marks(current: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Per column, the arrow its heading shows: ▲ sorted ascending by it, ▼ descending, else nothing."""
    return {key: "▲" if current == key else "▼" if current == f"-{key}" else "" for key in keys}


def inventory_context(query, hosts: QuerySet) -> dict:
    """The inventory page's context for the query string ``query`` over ``hosts`` (the hosts the
    view already narrowed to those the user may see)."""
    params = {key: value[:MAX_PARAM_LENGTH] for key, value in query.items() if value}
    host_filter = HostFilterSet(query, queryset=hosts)
    guest_filter = GuestFilterSet(query, queryset=VirtualMachine.objects.all())
    errors = form_errors(host_filter, guest_filter)
    if errors:
        chosen_hosts, guests = hosts.none(), VirtualMachine.objects.none()
    else:
        chosen_hosts = host_filter.qs
        guests = guest_filter.qs.filter(host__in=chosen_hosts.values("pk"))

    host_page = Paginator(chosen_hosts.select_related("facts"), HOSTS_PER_PAGE).get_page(params.get("hpage"))
    shown_hosts = list(host_page.object_list)
    summaries = host_summaries([host.pk for host in shown_hosts])
    flags = duplicate_flags(hosts)
    host_rows = [{"host": host, "facts": getattr(host, "facts", None), "duplicates": flags.get(host.pk),
                  "summary": summaries.get(host.pk) or HostSummary()} for host in shown_hosts]

    guest_page = Paginator(guests.values(*GUEST_FIELDS), _page_size(params.get("per"))).get_page(params.get("page"))
    page_rows = list(guest_page.object_list)
    rows = guest_rows(page_rows, disk_totals([row["pk"] for row in page_rows]))
    live_hosts = sorted({host.pk for host in shown_hosts} | {row["host_id"] for row in rows})
    return {
        "host_filter": host_filter, "guest_filter": guest_filter, "filter_errors": errors,
        "host_rows": host_rows, "host_page": host_page, "duplicate_count": len(flags),
        "guest_rows": rows, "guest_page": guest_page, "page_sizes": PAGE_SIZES,
        "sort": params.get("sort", ""), "sort_queries": sort_queries(params),
        "sort_marks": sort_marks(params.get("sort", ""), SORT_KEYS),
        "hsort": params.get("hsort", ""), "host_sort_queries": sort_queries(params, "hsort", HOST_SORT_KEYS, "hpage"),
        "host_sort_marks": sort_marks(params.get("hsort", ""), HOST_SORT_KEYS),
        "query": _query(params), "filter_query": _query(params, page="", hpage=""),
        "filtered": any(key not in PAGE_PARAMS + ("per", "sort", "hsort", "show") for key in params),
        "live_hosts": ",".join(map(str, live_hosts)),
    }
