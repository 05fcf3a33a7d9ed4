"""Load history against the real lab: one bulk stats call per host, and what a refresh records."""

from __future__ import annotations

import pytest

from core.actors import Actor
from hosts import access, services
from hosts.adapters import stats as stats_adapter
from hosts.management.commands.lab_onboard import onboard_lab_host
from hosts.models import GuestLoad, HostLoad, LoadCounters, VirtualMachine

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


@pytest.fixture
def onboarded(lab):
    hosts = {}
    for entry in lab["hosts"]:
        host, _ = onboard_lab_host(entry, actor=Actor.system())
        host.refresh_from_db()
        hosts[entry["name"]] = host
    return hosts


def test_bulk_stats_of_a_lab_host(onboarded):
    host = next(iter(onboarded.values()))
    with access.open_session(host) as session:
        stats = stats_adapter.host_stats(session.libvirt)
    node = stats.node
    assert node.memory_total_kib > node.memory_free_kib > 0 and node.cpu_total_ns > node.cpu_busy_ns > 0
    running = {str(u) for u in VirtualMachine.objects.filter(host=host, state="running").values_list("uuid", flat=True)}
    seen = {d.uuid: d for d in stats.domains}
    assert running <= set(seen)
    for uuid in running:
        d = seen[uuid]
        assert d.balloon_current_kib > 0 and d.vcpus >= 1 and d.vcpu_time_ns > 0
        assert d.disks and all(disk.capacity_bytes > 0 for disk in d.disks)


def test_refresh_records_points_for_lab_hosts_and_guests(onboarded, django_capture_on_commit_callbacks):
    # Onboarding refreshed once (counters kept); a second refresh has deltas to take.
    for host in onboarded.values():
        assert LoadCounters.objects.filter(host=host).exists()
        with django_capture_on_commit_callbacks(execute=True):
            services.host_refresh_request(host=host, actor=Actor.system())
        point = HostLoad.objects.filter(host=host).latest("at")
        assert point.memory_used_kib > 0 and point.cpu_pct is not None and 0 <= point.cpu_pct <= 100
        running = VirtualMachine.objects.filter(host=host, state="running").count()
        assert GuestLoad.objects.filter(host=host, at=point.at).count() == running
        assert all(g.vcpu_pct is not None for g in GuestLoad.objects.filter(host=host, at=point.at))
