"""Disk sizes through the refresh: read from the one bulk stats call, written in a few statements
(unchanged rows left alone), kept when the stats fail, shown on the guest page and the inventory."""

from __future__ import annotations

import dataclasses

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.actors import Actor
from core.choices import JobStatusChoices
from hosts import inventory, services
from hosts.adapters.errors import AdapterError
from hosts.adapters.libvirt import DiskInfo
from hosts.models import VirtualDisk, VirtualMachine

pytestmark = pytest.mark.django_db

GIB = 2**30


def refresh(host, capture):
    with capture(execute=True):
        job = services.host_refresh_request(host=host, actor=Actor.system())
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED, job.error
    return job


def disk_writes(queries) -> list[str]:
    table = VirtualDisk._meta.db_table
    return [q["sql"].split()[0] for q in queries
            if table in q["sql"] and q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]


def sizes(vm_name: str, target: str = "vda") -> tuple:
    d = VirtualDisk.objects.get(vm__name=vm_name, target=target)
    return d.capacity_bytes, d.allocation_bytes, d.physical_bytes


@pytest.fixture
def sized(trusted_host, fleet, django_capture_on_commit_callbacks):
    """kvm-a's two guests with sizes libvirt gives in its bulk stats, refreshed once."""
    hv = fleet[trusted_host.address]
    by_name = {d.name: d for d in hv.domains.values()}
    hv.block_sizes[(by_name["web-1"].uuid, "vda")] = (20 * GIB, 3 * GIB, 3 * GIB + 200 * 2**20)
    hv.block_sizes[(by_name["db-1"].uuid, "vda")] = (10 * GIB, 2**20, 10 * GIB)
    refresh(trusted_host, django_capture_on_commit_callbacks)
    return hv, by_name


def test_the_refresh_records_each_disks_sizes_from_the_bulk_stats(trusted_host, sized):
    assert sizes("web-1") == (20 * GIB, 3 * GIB, 3 * GIB + 200 * 2**20)
    assert sizes("db-1") == (10 * GIB, 2**20, 10 * GIB)  # shut off: sized all the same


def test_a_refresh_that_changes_nothing_writes_no_disk_row(trusted_host, sized, django_capture_on_commit_callbacks):
    with CaptureQueriesContext(connection) as queries:
        refresh(trusted_host, django_capture_on_commit_callbacks)
    assert disk_writes(queries.captured_queries) == []


def test_a_disk_that_grew_is_one_update(trusted_host, sized, django_capture_on_commit_callbacks):
    hv, by_name = sized
    hv.block_sizes[(by_name["web-1"].uuid, "vda")] = (20 * GIB, 4 * GIB, 4 * GIB)
    with CaptureQueriesContext(connection) as queries:
        refresh(trusted_host, django_capture_on_commit_callbacks)
    assert disk_writes(queries.captured_queries) == ["UPDATE"]
    assert sizes("web-1") == (20 * GIB, 4 * GIB, 4 * GIB) and sizes("db-1") == (10 * GIB, 2**20, 10 * GIB)


def test_disk_rows_keep_their_ids_and_follow_the_definition(trusted_host, sized, django_capture_on_commit_callbacks):
    hv, by_name = sized
    before = VirtualDisk.objects.get(vm__name="web-1", target="vda").pk
    web = by_name["web-1"]
    extra = DiskInfo(target="vdb", device="disk", source_type="file", source="/srv/vm/web-1-data.qcow2",
                     protocol="", format="qcow2", readonly=False, shareable=False)
    hv.domains[web.uuid] = dataclasses.replace(web, disks=[*web.disks, extra])
    hv.block_sizes[(web.uuid, "vdb")] = (50 * GIB, GIB, GIB)
    db = by_name["db-1"]
    hv.domains[db.uuid] = dataclasses.replace(db, disks=[])
    refresh(trusted_host, django_capture_on_commit_callbacks)
    assert VirtualDisk.objects.get(vm__name="web-1", target="vda").pk == before
    assert sizes("web-1", "vdb") == (50 * GIB, GIB, GIB)
    assert not VirtualDisk.objects.filter(vm__name="db-1").exists()


def test_sizes_survive_a_refresh_whose_stats_failed(trusted_host, sized, monkeypatch,
                                                    django_capture_on_commit_callbacks):
    hv, by_name = sized

    def no_stats(conn):
        raise AdapterError("could not read load statistics")

    monkeypatch.setattr(inventory.stats_adapter, "host_stats", no_stats)
    refresh(trusted_host, django_capture_on_commit_callbacks)
    assert sizes("web-1") == (20 * GIB, 3 * GIB, 3 * GIB + 200 * 2**20)
    # A disk now pointing at another file is not that file's size any more: unknown until sized.
    web = by_name["web-1"]
    moved = dataclasses.replace(web.disks[0], source="/srv/other/web-1.img")
    hv.domains[web.uuid] = dataclasses.replace(web, disks=[moved])
    refresh(trusted_host, django_capture_on_commit_callbacks)
    assert sizes("web-1") == (None, None, None)


def test_sizes_of_a_file_other_than_the_defined_one_are_not_taken(trusted_host, sized, fleet, monkeypatch,
                                                                  django_capture_on_commit_callbacks):
    """The definition and the stats are two reads: a disk swapped between them keeps no wrong size."""
    hv, by_name = sized
    web = by_name["web-1"]
    real = inventory.stats_adapter.host_stats

    def stats_of_another_file(conn):
        read = real(conn)
        doms = tuple(dataclasses.replace(d, disks=tuple(dataclasses.replace(x, path="/elsewhere.img") for x in d.disks))
                     if d.uuid == web.uuid else d for d in read.domains)
        return dataclasses.replace(read, domains=doms)

    hv.block_sizes[(web.uuid, "vda")] = (99 * GIB, 99 * GIB, 99 * GIB)
    monkeypatch.setattr(inventory.stats_adapter, "host_stats", stats_of_another_file)
    refresh(trusted_host, django_capture_on_commit_callbacks)
    assert sizes("web-1") == (20 * GIB, 3 * GIB, 3 * GIB + 200 * 2**20)  # the recorded sizes of the same source stay


def test_a_disk_libvirt_cannot_size_is_unknown_not_zero(trusted_host, django_capture_on_commit_callbacks):
    refresh(trusted_host, django_capture_on_commit_callbacks)  # nothing scripted: libvirt gives no sizes
    assert sizes("web-1") == (None, None, None) and sizes("db-1") == (None, None, None)


def test_the_guest_page_shows_allocation_of_capacity(trusted_host, sized, viewer_client):
    vm = VirtualMachine.objects.get(name="web-1")
    VirtualDisk.objects.create(vm=vm, target="vdb", device="disk", source_type="file", source="/srv/new.qcow2")
    VirtualDisk.objects.create(vm=vm, target="sda", device="cdrom", source_type="file", source="")
    page = viewer_client.get(reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])).content.decode()
    row = page[page.index('data-disk="vda"'):page.index('data-disk="vdb"')]
    assert "<strong>3 GiB</strong> of 20 GiB" in row and "file 3.2 GiB" in row
    assert 'max="21474836480" value="3221225472"' in row  # the meter: allocation of capacity, in bytes
    unsized = page[page.index('data-disk="vdb"'):]
    assert "size unknown" in unsized[:unsized.index("</tr>")]
    cdrom = page[page.index('data-disk="sda"'):]
    assert "size unknown" not in cdrom[:cdrom.index("</tr>")]
    assert "Size of vdb unknown (no refresh has recorded it)" in page and "assume 64 GiB for each" in page
    assert "3 GiB used of 20 GiB on 1 of 2 disks (1 of unknown size)" in page
    db = VirtualMachine.objects.get(name="db-1")  # a sparse raw file as large as the disk: no "file" line
    page = viewer_client.get(reverse("hosts:vm_detail", args=[db.host_id, db.uuid])).content.decode()
    assert "<strong>1 MiB</strong> of 10 GiB" in page and "file 10 GiB" not in page


def test_the_inventory_shows_each_guests_disks_in_one_query(trusted_host, sized, viewer_client):
    with CaptureQueriesContext(connection) as queries:
        page = viewer_client.get(reverse("hosts:inventory")).content.decode()
    web = page[page.index(">web-1</a>"):]
    assert "3 GiB of 20 GiB" in web[:web.index("</tr>")]
    db = page[page.index(">db-1</a>"):]
    assert "1 MiB of 10 GiB" in db[:db.index("</tr>")]
    table = VirtualDisk._meta.db_table
    assert sum(1 for q in queries.captured_queries if f'FROM "{table}"' in q["sql"]) == 1
    VirtualDisk.objects.filter(vm__name="db-1").update(capacity_bytes=None, allocation_bytes=None,
                                                         physical_bytes=None)
    page = viewer_client.get(reverse("hosts:inventory")).content.decode()
    db = page[page.index(">db-1</a>"):]
    assert "size unknown" in db[:db.index("</tr>")]


def test_sizes_follow_a_guest_that_migrated(trusted_host, sized):
    """The inventory row moves with the guest (vm_relocate), and its disks with it."""
    from tests.fakes.fleet import make_host
    other = make_host("kvm-b")
    vm = VirtualMachine.objects.get(name="web-1")
    services.vm_relocate(vm_uuid=vm.uuid, source=trusted_host, destination=other)
    assert VirtualDisk.objects.get(vm__host=other, target="vda").capacity_bytes == 20 * GIB
