"""The evacuation plan's time estimate counts the local disks a storage-copying live move sends,
by their recorded allocation (shared disks never), and says what it assumed of disks never sized."""

from __future__ import annotations

from django.test import override_settings

from hosts.models import VirtualDisk
from maintenance import decisions, planning
from maintenance.choices import ItemActionChoices as IA

GIB = 2**30
BW = 100 * 2**20  # the default link the estimate assumes with no measured migration, in B/s


def _rows(evac, **kw):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False, **kw)
    return plan, {r.name: r for r in plan.rows}


def test_the_estimate_adds_the_local_disks_allocation(evac):
    VirtualDisk.objects.filter(vm=evac["local-1"]).update(capacity_bytes=40 * GIB, allocation_bytes=5 * GIB,
                                                          physical_bytes=40 * GIB)
    # A big shared disk: not copied, so it never counts.
    VirtualDisk.objects.filter(vm=evac["web-1"]).update(capacity_bytes=500 * GIB, allocation_bytes=400 * GIB)
    with override_settings(VMPORTAL_EVACUATION_DEFAULT_BANDWIDTH_BPS=BW, VMPORTAL_EVACUATION_DEFAULT_OVERHEAD_S=2):
        plan, rows = _rows(evac, copy_storage=True)
        _plain, without = _rows(evac, copy_storage=False)
    local = rows["local-1"]
    assert local.action == IA.LIVE and local.disk_copy_bytes == 5 * GIB and local.disk_copy_note == ""
    assert local.estimated_s == decisions.estimate_s(memory_kib=evac["local-1"].memory_kib, action=IA.LIVE,
                                                     bandwidth_bps=BW, overhead_s=2, disk_bytes=5 * GIB)
    assert local.estimated_s >= 5 * GIB / BW
    assert rows["web-1"].disk_copy_bytes == 0
    assert rows["web-1"].estimated_s == without["web-1"].estimated_s
    assert "by their recorded allocation." in plan.estimate_basis
    assert without["local-1"].action == IA.STAY and without["local-1"].disk_copy_bytes == 0


def test_a_local_disk_never_sized_is_assumed_and_the_plan_says_so(evac):
    _plan, rows = _rows(evac, copy_storage=True)
    local = rows["local-1"]
    assert local.disk_copy_bytes == 64 * GIB
    assert local.disk_copy_note == "size of vda unknown (no refresh recorded it), assuming 64 GiB"
    assert "1 of unknown size (no refresh recorded it) assumed 64 GiB each." in _plan.estimate_basis


def test_the_plan_page_shows_the_disks_copied(evac, operator_client, monkeypatch):
    from django.urls import reverse

    from maintenance import views
    monkeypatch.setattr(views, "make_plan", lambda *, host, **choices: planning.evacuation_plan(
        host=host, check_hosts=False, **choices))  # from the inventory (the gather is tested on its own)
    VirtualDisk.objects.filter(vm=evac["local-1"]).update(allocation_bytes=5 * GIB, capacity_bytes=40 * GIB)
    page = operator_client.get(reverse("maintenance:plan", args=[evac["a"].pk]),
                               {"copy_storage": "on", "concurrency": 2, "strategy": "spread"}).content.decode()
    row = page[page.index('data-guest="local-1"'):]
    assert "+ disks 5 GiB" in row[:row.index("</tr>")]


def test_estimate_with_disk_bytes():
    assert decisions.estimate_s(memory_kib=2**20, action=IA.LIVE, bandwidth_bps=GIB, overhead_s=3,
                                disk_bytes=4 * GIB) == 8
    assert decisions.estimate_s(memory_kib=2**20, action=IA.OFFLINE, bandwidth_bps=GIB, overhead_s=3,
                                disk_bytes=4 * GIB) == 3  # an offline move copies nothing
